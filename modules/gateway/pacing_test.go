package gateway_test

import (
	"crypto/elliptic"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

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

// Pacing is atomic: concurrent pulls of new keys for the same names, past
// a limit of 2, give exactly 2 certificates; the others are rateLimited.
func TestPacingConcurrent(t *testing.T) {
	e := newGWEnv(t, gateway.Options{DuplicateLimit: 2, DuplicateWindow: time.Hour})
	_, creds := e.token("conc.example.test")
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	csrs := make([][]byte, n)
	for i := range csrs {
		csrs[i] = csrFor(t, newKey(t, elliptic.P256()), "conc.example.test")
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.pull(cl, acct, csrs[i], "conc.example.test")
		}()
	}
	wg.Wait()
	ok, limited := 0, 0
	for i, err := range errs {
		var p acme.Problem
		switch {
		case err == nil:
			ok++
		case errors.As(err, &p) && p.Status == 429:
			limited++
		default:
			t.Errorf("pull %d: %v", i, err)
		}
	}
	if ok != 2 || limited != n-2 {
		t.Fatalf("%d certificates and %d rateLimited, want 2 and %d", ok, limited, n-2)
	}
}
