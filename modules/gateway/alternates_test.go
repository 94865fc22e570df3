package gateway_test

import (
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

func parsePEMChain(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return out
		}
		x, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
}

// With an upstream CA offering alternate chains, the edge's certificate
// download carries Link rel="alternate" and each alternate downloads (the
// acmez client follows them): the same leaf, chaining to another of the
// CA's roots. An account that does not own the certificate gets none.
func TestAlternateChains(t *testing.T) {
	e := newGWEnvPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true, AlternateRoots: 1}, gateway.Options{})
	_, creds := e.token("alt.example.test")
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	order, err := cl.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "alt.example.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	if order, err = cl.FinalizeOrder(t.Context(), acct, order, csrFor(t, key, "alt.example.test")); err != nil {
		t.Fatal(err)
	}
	chains, err := cl.GetCertificateChain(t.Context(), acct, order.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != 2 {
		t.Fatalf("got %d chains, want the default and 1 alternate", len(chains))
	}
	roots := x509.NewCertPool()
	for _, r := range e.pebble.Roots() {
		roots.AddCert(r)
	}
	seenRoot := map[string]bool{}
	var leaf []byte
	for i, c := range chains {
		chain := parsePEMChain(t, c.ChainPEM)
		if len(chain) < 2 {
			t.Fatalf("chain %d has %d certificates", i, len(chain))
		}
		if leaf == nil {
			leaf = chain[0].Raw
		} else if string(leaf) != string(chain[0].Raw) {
			t.Fatalf("chain %d has another leaf", i)
		}
		inter := x509.NewCertPool()
		for _, x := range chain[1:] {
			inter.AddCert(x)
		}
		vs, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "alt.example.test"})
		if err != nil {
			t.Fatalf("chain %d does not verify to Pebble's roots: %v", i, err)
		}
		seenRoot[string(vs[0][len(vs[0])-1].Raw)] = true
		e.checkEdgeCert(chain, key, "alt.example.test")
	}
	if len(seenRoot) != 2 {
		t.Fatalf("the chains lead to %d distinct roots, want 2", len(seenRoot))
	}

	// another account of the same token may not fetch the alternate
	other, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.GetCertificateChain(t.Context(), other, order.Certificate+"/alt/1"); err == nil {
		t.Fatal("another account fetched the alternate chain")
	}
	if _, err := cl.GetCertificateChain(t.Context(), acct, order.Certificate+"/alt/2"); err == nil {
		t.Fatal("a second alternate that does not exist was served")
	}
}
