package storage

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSealRoundTripAndBinding(t *testing.T) {
	k1, _ := NewKey()
	k2, _ := NewKey()
	s1, err := NewSealer(k1)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s1.Seal([]byte("top secret"), "issuers.account_key/iss_1")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("top secret")) {
		t.Fatal("plaintext visible in the sealed value")
	}
	if id, _ := SealedKeyID(sealed); id != s1.CurrentKeyID() || id != KeyID(k1) {
		t.Fatalf("sealed key id = %s", id)
	}
	again, _ := s1.Seal([]byte("top secret"), "issuers.account_key/iss_1")
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of one value are identical: nonce reuse")
	}
	pt, err := s1.Open(sealed, "issuers.account_key/iss_1")
	if err != nil || string(pt) != "top secret" {
		t.Fatalf("open = %q, %v", pt, err)
	}

	rotated, _ := NewSealer(k2, k1)
	cases := map[string]struct {
		s       *Sealer
		sealed  []byte
		ad      string
		wantErr error
		anyErr  bool
	}{
		"previous key opens":      {s: rotated, sealed: sealed, ad: "issuers.account_key/iss_1"},
		"moved to another row":    {s: s1, sealed: sealed, ad: "issuers.account_key/iss_2", anyErr: true},
		"moved to another column": {s: s1, sealed: sealed, ad: "issuers.eab_mac_key/iss_1", anyErr: true},
		"unknown key":             {s: mustSealer(t, k2), sealed: sealed, ad: "issuers.account_key/iss_1", wantErr: ErrUnknownKey},
		"tampered":                {s: s1, sealed: flip(sealed), ad: "issuers.account_key/iss_1", anyErr: true},
		"truncated":               {s: s1, sealed: sealed[:len(sealed)-20], ad: "issuers.account_key/iss_1", anyErr: true},
		"not sealed":              {s: s1, sealed: []byte("plain"), ad: "x", anyErr: true},
		"empty opens to empty":    {s: s1, sealed: nil, ad: "x"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := c.s.Open(c.sealed, c.ad)
			switch {
			case c.wantErr != nil && !errors.Is(err, c.wantErr):
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			case c.anyErr && err == nil:
				t.Fatal("opened")
			case !c.anyErr && c.wantErr == nil && err != nil:
				t.Fatal(err)
			}
			if err != nil && strings.Contains(err.Error(), "top secret") {
				t.Fatal("error reveals the plaintext")
			}
		})
	}
	// new values go under the new key
	n, _ := rotated.Seal([]byte("x"), "a")
	if id, _ := SealedKeyID(n); id != KeyID(k2) {
		t.Fatalf("rotated sealer used key %s", id)
	}
}

func mustSealer(t *testing.T, k []byte) *Sealer {
	s, err := NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func flip(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 1
	return c
}

func TestParseKey(t *testing.T) {
	k, _ := NewKey()
	good := map[string]string{
		"hex":        hex.EncodeToString(k),
		"std base64": base64.StdEncoding.EncodeToString(k),
		"raw url":    base64.RawURLEncoding.EncodeToString(k),
		"spaces":     "  " + base64.StdEncoding.EncodeToString(k) + "\n",
	}
	for name, in := range good {
		t.Run(name, func(t *testing.T) {
			got, err := ParseKey(in)
			if err != nil || !bytes.Equal(got, k) {
				t.Fatalf("ParseKey = %x, %v", got, err)
			}
		})
	}
	bad := map[string]string{
		"empty":    "",
		"short":    base64.StdEncoding.EncodeToString(k[:16]),
		"garbage":  "correct horse battery staple!!",
		"long hex": hex.EncodeToString(append(k, 1)),
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseKey(in)
			if err == nil {
				t.Fatal("accepted")
			}
			if in != "" && strings.Contains(err.Error(), in) {
				t.Fatalf("error echoes the key: %v", err)
			}
		})
	}
	if _, err := NewSealer(k[:10]); err == nil {
		t.Fatal("a 10-byte key was accepted")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret([]byte("hunter2"))
	type holder struct {
		Key Secret `json:"key"`
	}
	outs := []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), fmt.Sprintf("%+v", holder{s})}
	b, _ := json.Marshal(holder{s})
	outs = append(outs, string(b))
	for _, o := range outs {
		if strings.Contains(o, "hunter2") {
			t.Fatalf("secret printed: %s", o)
		}
	}
	if string(s.Reveal()) != "hunter2" {
		t.Fatal("Reveal lost the value")
	}
}
