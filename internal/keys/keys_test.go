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
