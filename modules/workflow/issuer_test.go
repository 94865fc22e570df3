package workflow_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// setIssuer changes the env's ACME client record.
func (e *env) setIssuer(t *testing.T, change func(*storage.Issuer)) {
	t.Helper()
	iss, err := e.store.Issuers().Get(t.Context(), e.issuer.ID)
	if err != nil {
		t.Fatal(err)
	}
	change(iss)
	if err := e.store.Issuers().Update(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	e.issuer = iss
}

func issueOne(t *testing.T, e *env, req workflow.Request) *storage.Certificate {
	t.Helper()
	eng, _ := e.engine("node-a", nil)
	w, err := eng.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	if w = get(t, e.store, w.ID); w.State != storage.StateIssued {
		t.Fatalf("workflow %s: %s", w.State, w.Status)
	}
	c, err := e.store.Certificates().Get(t.Context(), w.CertificateID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A workflow without a profile of its own orders with its ACME client's;
// one with its own keeps it. (Pebble picks a random profile for orders
// that name none, so several orders are placed.)
func TestIssuerProfile(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{Profiles: map[string]acmetest.Profile{
		"default":    {Description: "90 days"},
		"shortlived": {Description: "6 days", Validity: 6 * 24 * time.Hour},
		"tlsserver":  {Description: "45 days", Validity: 45 * 24 * time.Hour},
	}})
	e.setIssuer(t, func(iss *storage.Issuer) { iss.Profile = "shortlived" })
	for i := range 4 {
		c := issueOne(t, e, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name(fmt.Sprintf("p%d", i))}}})
		if c.Profile != "shortlived" || c.NotAfter.Sub(c.NotBefore) > 7*24*time.Hour {
			t.Fatalf("certificate %d: profile %q, valid for %s; want the ACME client's shortlived (6 days)", i, c.Profile, c.NotAfter.Sub(c.NotBefore))
		}
	}
	c := issueOne(t, e, workflow.Request{IssuerID: e.issuer.ID, Profile: "tlsserver", Identifiers: []storage.Identifier{{Value: e.name("own")}}})
	if c.Profile != "tlsserver" || c.NotAfter.Sub(c.NotBefore) < 44*24*time.Hour || c.NotAfter.Sub(c.NotBefore) > 46*24*time.Hour {
		t.Fatalf("own profile: %q, valid for %s; want tlsserver (45 days)", c.Profile, c.NotAfter.Sub(c.NotBefore))
	}
}

// An ACME client's preferred chain picks among the CA's alternate chains,
// by the root's common name or by an intermediate's; without one, or when
// no chain matches, the CA's default chain is kept.
func TestPreferredChainFromIssuer(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{AlternateRoots: 2, ChainLength: 2})
	roots := e.pebble.Roots()
	if len(roots) != 3 {
		t.Fatalf("pebble serves %d chains, want 3", len(roots))
	}
	// every chain's leaf-signing intermediate has the same name (one key,
	// cross-signed); the one above it is named after its chain's root
	upper := "Pebble Intermediate CA " + strings.TrimPrefix(roots[1].Subject.CommonName, "Pebble Root CA ") + " #1"
	cases := []struct {
		name, preferred string
		wantRoot        *x509.Certificate
	}{
		{"none: the CA's default", "", roots[0]},
		{"by root", roots[2].Subject.CommonName, roots[2]},
		{"by intermediate", upper, roots[1]},
		{"no match: the CA's default", "No Such Root", roots[0]},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.setIssuer(t, func(iss *storage.Issuer) { iss.PreferredChain = c.preferred })
			cert := issueOne(t, e, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name(fmt.Sprintf("ch%d", i))}}})
			chain := parsePEMChain(t, cert.ChainPEM)
			top := chain[len(chain)-1]
			if c.preferred == upper && chain[len(chain)-1].Subject.CommonName != upper {
				t.Fatalf("chain's top intermediate is %q, want %q", chain[len(chain)-1].Subject.CommonName, upper)
			}
			if top.Issuer.CommonName != c.wantRoot.Subject.CommonName {
				t.Fatalf("chain ends at %q, want %q", top.Issuer.CommonName, c.wantRoot.Subject.CommonName)
			}
			pool := x509.NewCertPool()
			pool.AddCert(c.wantRoot)
			inter := x509.NewCertPool()
			for _, x := range chain[1:] {
				inter.AddCert(x)
			}
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter}); err != nil {
				t.Fatalf("stored chain does not verify to %q: %v", c.wantRoot.Subject.CommonName, err)
			}
		})
	}
}

func parsePEMChain(t *testing.T, chainPEM string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(chainPEM)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	if len(out) < 2 {
		t.Fatalf("chain of %d certificates", len(out))
	}
	return out
}
