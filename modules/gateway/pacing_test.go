package gateway_test

import (
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
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

// For every catalog CA that documents a duplicate-certificate limit (Let's
// Encrypt: 5 per 168h; its staging: 30,000 per 168h), a token on that CA is
// paced at exactly that limit: with the limit less one already used in the
// window, one more new certificate is issued and the next is answered 429
// rateLimited with an integer Retry-After (until the oldest slot leaves the
// window), reaching no CA.
func TestPacingAtCatalogLimit(t *testing.T) {
	paced := map[string]bool{}
	for _, ce := range issuers.Catalog() {
		count, window := ce.DuplicateLimit.Limit()
		if count == 0 {
			continue
		}
		paced[ce.ID] = true
		t.Run(ce.ID, func(t *testing.T) {
			e := newGWEnv(t, gateway.Options{})
			iss, err := e.app.Store().Issuers().Get(t.Context(), e.issuer)
			if err != nil {
				t.Fatal(err)
			}
			iss.CatalogID = ce.ID // the Pebble directory stands in for it
			if err := e.app.Store().Issuers().Update(t.Context(), iss); err != nil {
				t.Fatal(err)
			}
			const name = "limit.example.test"
			tok, creds := e.token(name)
			// count-1 slots taken half a window ago
			oldest := time.Now().Add(-window / 2).UTC()
			slots := make([]time.Time, count-1)
			for i := range slots {
				slots[i] = oldest
			}
			raw, _ := json.Marshal(slots)
			if err := e.app.Store().ACME().Set(t.Context(), gateway.PaceBucket, gateway.PaceKey(tok.ID, []string{name}), raw); err != nil {
				t.Fatal(err)
			}
			h := startHAProxy33(t, e, creds.DirectoryPath)
			finalize := func() (*http.Response, []byte) {
				resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": name}}})
				if resp.StatusCode != 201 {
					t.Fatalf("newOrder: %d %s", resp.StatusCode, b)
				}
				csr := csrFor(t, newKey(t, elliptic.P256()), name)
				return h.post(decode(t, b)["finalize"].(string), map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csr)})
			}
			if resp, b := finalize(); resp.StatusCode != 200 {
				t.Fatalf("new certificate %d of %d: %d %s", count, count, resp.StatusCode, b)
			}
			before := e.pebble.NewOrders()
			resp, b := finalize()
			p := decode(t, b)
			if resp.StatusCode != 429 || p["type"] != "urn:ietf:params:acme:error:rateLimited" {
				t.Fatalf("new certificate %d of %d: %d %s, want rateLimited", count+1, count, resp.StatusCode, b)
			}
			ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			want := time.Until(oldest.Add(window))
			if err != nil || time.Duration(ra)*time.Second < want-time.Minute || time.Duration(ra)*time.Second > want+time.Minute {
				t.Fatalf("Retry-After %q, want about %v", resp.Header.Get("Retry-After"), want.Round(time.Second))
			}
			if e.pebble.NewOrders() != before {
				t.Fatal("a paced pull reached the upstream CA")
			}
		})
	}
	if !paced["letsencrypt"] || !paced["letsencrypt-staging"] {
		t.Fatalf("catalog CAs with a duplicate-certificate limit: %v, want letsencrypt and letsencrypt-staging", paced)
	}
}
