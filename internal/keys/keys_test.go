package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestGenerateParseRoundTrip(t *testing.T) {
	for _, typ := range []string{P256, P384, RSA2048} {
		t.Run(typ, func(t *testing.T) {
			k, p, err := Generate(typ)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			if TypeOf(back) != typ || !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(back.Public()) {
				t.Fatalf("round trip gave a %s key", TypeOf(back))
			}
		})
	}
	if _, _, err := Generate("dsa"); err == nil || !Valid(P256) || Valid("") || Valid("dsa") {
		t.Fatal("unknown types accepted")
	}
}

func TestParseEncodings(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	cases := map[string]struct {
		pem  []byte
		want string
	}{
		"sec1":    {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), P256},
		"pkcs1":   {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), RSA2048},
		"not pem": {[]byte("hunter2 secret"), ""},
		"garbage": {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("hunter2 secret")}), ""},
		"empty":   {nil, ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			k, err := Parse(c.pem)
			if c.want == "" {
				if err == nil || strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || TypeOf(k) != c.want {
				t.Fatalf("%v %v", err, k)
			}
		})
	}
}

// ParseBlock reads each format by its block type and says what is wrong in
// terms of that format, without key material.
func TestParseBlockErrors(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	junk := []byte("hunter2 secret")
	cases := map[string]struct {
		block *pem.Block
		want  string
	}{
		"pkcs8 garbage":    {&pem.Block{Type: "PRIVATE KEY", Bytes: junk}, "cannot be parsed as PKCS #8"},
		"pkcs1 garbage":    {&pem.Block{Type: "RSA PRIVATE KEY", Bytes: junk}, "cannot be parsed as PKCS #1"},
		"sec1 garbage":     {&pem.Block{Type: "EC PRIVATE KEY", Bytes: junk}, "cannot be parsed as SEC 1"},
		"sec1 as pkcs1":    {&pem.Block{Type: "RSA PRIVATE KEY", Bytes: ecDER}, "cannot be parsed as PKCS #1"},
		"legacy encrypted": {&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: junk}, "encrypted"},
		"pkcs8 encrypted":  {&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: junk}, "encrypted"},
		"not a key":        {&pem.Block{Type: "CERTIFICATE", Bytes: junk}, "not a private key"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseBlock(c.block)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("err = %v, want one saying %q", err, c.want)
			}
		})
	}
	if k, err := ParseBlock(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}); err != nil || TypeOf(k) != P256 {
		t.Fatalf("sec1: %v %v", k, err)
	}
	if !IsKeyBlock("ENCRYPTED PRIVATE KEY") || IsKeyBlock("CERTIFICATE") {
		t.Fatal("IsKeyBlock")
	}
}
