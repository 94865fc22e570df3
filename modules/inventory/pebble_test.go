package inventory

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// acceptSolver presents nothing: the Pebble below validates every
// challenge without looking.
type acceptSolver struct{}

func (acceptSolver) Present(context.Context, acme.Challenge) error { return nil }
func (acceptSolver) CleanUp(context.Context, acme.Challenge) error { return nil }

// TestPebbleIssuedChain adds a certificate issued by the in-process Pebble
// CA, as the workflow engine will: a real CA chain (RSA hierarchy, Pebble's
// AIA and CRL extensions), verified to the ACME client's custom root.
func TestPebbleIssuedChain(t *testing.T) {
	t.Parallel()
	ca := acmetest.NewPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true,
		Profiles: map[string]acmetest.Profile{"shortlived": {Validity: 6 * 24 * time.Hour}}})
	client := &acmez.Client{
		Client: &acme.Client{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), PollInterval: 20 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)},
		ChallengeSolvers: map[string]acmez.Solver{acme.ChallengeTypeHTTP01: acceptSolver{}},
	}
	acctKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	acct, err := client.NewAccount(t.Context(), acme.Account{TermsOfServiceAgreed: true, PrivateKey: acctKey})
	if err != nil {
		t.Fatal(err)
	}
	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := acmez.NewCSR(certKey, []string{"pebble.example.com", "www.pebble.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	params, err := acmez.OrderParametersFromCSR(acct, csr)
	if err != nil {
		t.Fatal(err)
	}
	params.Profile = "shortlived"
	certs, err := client.ObtainCertificate(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}

	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "inv.db"), storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := t.Context()
	iss := &storage.Issuer{Name: "pebble", DirectoryURL: ca.DirectoryURL(), CustomRootsPEM: string(ca.RootsPEM())}
	if err := st.Issuers().Create(ctx, iss); err != nil {
		t.Fatal(err)
	}
	wf := &storage.Workflow{IssuerID: iss.ID, State: storage.StateDownloading, Group: "lab", Profile: "shortlived",
		Identifiers: []storage.Identifier{{Type: "dns", Value: "pebble.example.com", Challenge: "http-01"}}}
	if err := st.Workflows().Create(ctx, wf); err != nil {
		t.Fatal(err)
	}
	svc, err := New(st, Options{MatchCA: func(n pkix.Name) (string, bool) {
		return "pebble", strings.HasPrefix(n.CommonName, "Pebble Intermediate")
	}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := svc.AddIssued(ctx, certs[0].ChainPEM, certKey, iss.ID, wf.ID, "shortlived")
	if err != nil {
		t.Fatal(err)
	}
	m := svc.View(c, true).Metadata
	leaf, err := Parse(certs[0].ChainPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	ari, _ := acme.ARIUniqueIdentifier(leaf.Leaf)
	if !m.Trust.Verified || m.Trust.TrustedBy != "acme_client" || len(m.Chain) == 0 || !m.Chain[0].OnPath {
		t.Fatalf("trust %+v chain %+v", m.Trust, m.Chain)
	}
	if c.CatalogID != "pebble" || c.Group != "lab" || c.Profile != "shortlived" || m.ARICertID != ari || m.ARICertID == "" ||
		m.LifetimeDays > 7 || len(c.Names) != 2 || c.PrivateKey.IsZero() {
		t.Fatalf("certificate %+v metadata %+v", c, m)
	}
	// a 6-day certificate needs no revocation information; CT does not
	// apply to a private root
	for _, f := range m.Rating.Factors {
		if f.Name == FactorRevocation && f.Grade != "A+" || f.Name == FactorCT && f.Grade != "" {
			t.Fatalf("factor %+v", f)
		}
	}
}
