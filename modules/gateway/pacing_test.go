package gateway_test

import (
	"crypto/elliptic"
	"errors"
	"strings"
	"testing"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
)

// Without a pacing setting, a token whose ACME client's CA is in the
// catalog with a duplicate-certificate limit (Let's Encrypt: 5 per 168h) is
// paced by it: the sixth new certificate for the same names is
// rateLimited and reaches no CA. A setting overrides the catalog (-1: no
// pacing).
func TestPacingFromCatalog(t *testing.T) {
	le, ok := issuers.LookupCatalog("letsencrypt")
	if !ok || le.DuplicateLimit == nil || le.DuplicateLimit.Count != 5 || le.DuplicateLimit.Window != "168h" {
		t.Fatalf("catalog letsencrypt duplicate limit = %+v, want 5 per 168h", le.DuplicateLimit)
	}
	for _, tc := range []struct {
		name    string
		opts    gateway.Options
		limited bool
	}{
		{"catalog default", gateway.Options{}, true},
		{"setting overrides", gateway.Options{DuplicateLimit: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newGWEnv(t, tc.opts)
			iss, err := e.app.Store().Issuers().Get(t.Context(), e.issuer)
			if err != nil {
				t.Fatal(err)
			}
			iss.CatalogID = "letsencrypt" // the Pebble directory stands in for it
			if err := e.app.Store().Issuers().Update(t.Context(), iss); err != nil {
				t.Fatal(err)
			}
			_, creds := e.token("cat.example.test")
			cl := e.client(gateway.DirectoryPath)
			acct, err := e.account(cl, creds)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if _, err := e.pull(cl, acct, csrFor(t, newKey(t, elliptic.P256()), "cat.example.test"), "cat.example.test"); err != nil {
					t.Fatalf("pull %d: %v", i+1, err)
				}
			}
			before := e.pebble.NewOrders()
			_, err = e.pull(cl, acct, csrFor(t, newKey(t, elliptic.P256()), "cat.example.test"), "cat.example.test")
			var p acme.Problem
			limited := errors.As(err, &p) && p.Status == 429 && strings.HasSuffix(p.Type, ":rateLimited")
			switch {
			case tc.limited && !limited:
				t.Fatalf("sixth new certificate: %v, want rateLimited", err)
			case tc.limited && !strings.Contains(p.Detail, "5 new certificates for these names per 168h"):
				t.Fatalf("problem detail %q does not name the catalog limit", p.Detail)
			case tc.limited && e.pebble.NewOrders() != before:
				t.Fatal("a paced pull reached the upstream CA")
			case !tc.limited && err != nil:
				t.Fatalf("sixth new certificate with pacing off: %v", err)
			}
		})
	}
}
