package inventory

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/renewal"
	"github.com/certlocker/caddy-certlocker/storage"
)

func TestRenewalStatus(t *testing.T) {
	twoThirds := t0.Add(60 * day)
	window := &renewal.Window{Start: t0.Add(50 * day), End: t0.Add(52 * day)}
	cert := func(edit func(c *storage.Certificate)) *storage.Certificate {
		c := &storage.Certificate{NotBefore: t0, NotAfter: t0.Add(90 * day), IssuerID: "iss_1", Status: storage.CertStatusActive,
			Meta: json.RawMessage(`{"subject":"CN=a"}`)}
		edit(c)
		return c
	}
	withWindow := func(c *storage.Certificate) {
		m, err := renewal.WithWindow(c.Meta, window)
		if err != nil {
			t.Fatal(err)
		}
		c.Meta = m
	}
	cases := map[string]struct {
		c       *storage.Certificate
		now     time.Time
		status  string
		managed bool
		renewAt time.Time
	}{
		"fresh":           {cert(func(c *storage.Certificate) {}), t0.Add(day), RenewalOK, true, twoThirds},
		"due":             {cert(func(c *storage.Certificate) {}), t0.Add(60 * day), RenewalDue, true, twoThirds},
		"due imported":    {cert(func(c *storage.Certificate) { c.IssuerID = "" }), t0.Add(61 * day), RenewalDue, false, twoThirds},
		"expired":         {cert(func(c *storage.Certificate) {}), t0.Add(90 * day), RenewalExpired, true, twoThirds},
		"not yet valid":   {cert(func(c *storage.Certificate) {}), t0.Add(-time.Second), RenewalNotYetValid, true, twoThirds},
		"renewed":         {cert(func(c *storage.Certificate) { c.Status, c.ReplacedBy = storage.CertStatusRenewed, "crt_2" }), t0.Add(89 * day), RenewalRenewed, true, twoThirds},
		"renewed expired": {cert(func(c *storage.Certificate) { c.ReplacedBy = "crt_2" }), t0.Add(100 * day), RenewalRenewed, true, twoThirds},
		"revoked":         {cert(func(c *storage.Certificate) { c.Status = storage.CertStatusRevoked }), t0.Add(day), RenewalRevoked, true, twoThirds},
		// the engine renews inside the CA's window, before two thirds:
		// the inventory says so too
		"inside the CA's window, before two thirds": {cert(withWindow), t0.Add(51 * day), RenewalDue, true, window.Start},
		"before the CA's window":                    {cert(withWindow), t0.Add(40 * day), RenewalOK, true, window.Start},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := RenewalStatus(c.c, c.now)
			if r.Status != c.status || r.Managed != c.managed || r.Message == "" {
				t.Fatalf("got %+v, want status %s managed %v", r, c.status, c.managed)
			}
			if !r.RenewAt.Equal(c.renewAt) {
				t.Fatalf("renew at %v, want %v", r.RenewAt, c.renewAt)
			}
			// one rule: the engine's decision agrees wherever the
			// certificate is still active and valid
			if c.status == RenewalOK || c.status == RenewalDue {
				if d := renewal.Decide(c.c.NotBefore, c.c.NotAfter, renewal.WindowOf(c.c.Meta), c.now); d.Renew != (c.status == RenewalDue) {
					t.Fatalf("the inventory says %s, the engine's rule renew=%v", r.Status, d.Renew)
				}
			}
		})
	}
}

func TestExpiryBucket(t *testing.T) {
	cases := map[string]struct {
		left time.Duration
		want string
	}{
		"expired now":  {0, BucketExpired},
		"expired":      {-day, BucketExpired},
		"an hour":      {time.Hour, BucketWithin7d},
		"seven days":   {7 * day, BucketWithin7d},
		"eight days":   {8 * day, BucketWithin30d},
		"thirty days":  {30 * day, BucketWithin30d},
		"thirty-one":   {31 * day, BucketOK},
		"a year ahead": {365 * day, BucketOK},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ExpiryBucket(t0.Add(c.left), t0); got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
}

// The renewal window the engine recorded survives a re-rating, which
// rewrites the rest of the metadata.
func TestRefreshKeepsRenewalWindow(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := t.Context()
	leaf, _ := issue(t, e.pki.inter, leafOpts{dns: []string{"ari.example.com"}, notBefore: t0, scts: 2, crl: true})
	c, _, err := e.svc.Import(ctx, ImportRequest{PEM: string(pemOf(leaf, e.pki.inter.cert))}, "t")
	if err != nil {
		t.Fatal(err)
	}
	window := &renewal.Window{Start: c.NotBefore.Add(40 * day), End: c.NotBefore.Add(42 * day)}
	if c.Meta, err = renewal.WithWindow(c.Meta, window); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Certificates().Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(c.NotBefore.Add(89 * day))
	if n, err := e.svc.Refresh(ctx); err != nil || n != 1 {
		t.Fatalf("refresh re-rated %d (%v), want 1", n, err)
	}
	got, err := e.svc.Get(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if w := renewal.WindowOf(got.Meta); w == nil || !w.Start.Equal(window.Start) {
		t.Fatalf("window after refresh %+v, want %+v", w, window)
	}
	var m Metadata
	if err := json.Unmarshal(got.Meta, &m); err != nil || m.Rating.Grade == "" {
		t.Fatalf("metadata after refresh: %s (%v)", got.Meta, err)
	}
}
