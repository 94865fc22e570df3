package gateway_test

import (
	"crypto/elliptic"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

// Prune keeps a pull record (a retried finalize finds its workflow by it)
// for PullRetention and removes it after.
func TestPrunePullRecords(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	e := newGWEnv(t, gateway.Options{Clock: clock, PullRetention: 48 * time.Hour})
	_, creds := e.token("prune.example.test")
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pull(cl, acct, csrFor(t, newKey(t, elliptic.P256()), "prune.example.test"), "prune.example.test"); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		kvs, err := e.app.Store().ACME().List(t.Context(), "gateway_pulls")
		if err != nil {
			t.Fatal(err)
		}
		return len(kvs)
	}
	if count() != 1 {
		t.Fatalf("%d pull records after one pull, want 1", count())
	}
	offset.Store(int64(47 * time.Hour))
	if _, err := e.gw.Prune(t.Context()); err != nil || count() != 1 {
		t.Fatalf("Prune within the retention: %v, %d records left, want 1", err, count())
	}
	offset.Store(int64(49 * time.Hour))
	if _, err := e.gw.Prune(t.Context()); err != nil || count() != 0 {
		t.Fatalf("Prune past the retention: %v, %d records left, want 0", err, count())
	}
}

// An order's profile record goes once the order has expired.
func TestPruneProfileRecords(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	e := newGWEnvPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true, Profiles: pebbleProfiles}, gateway.Options{Clock: clock})
	_, creds := e.token("prune.example.test")
	cl := e.client(creds.DirectoryPath)
	acct, err := e.account(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.NewOrder(t.Context(), acct, acme.Order{Profile: "shortlived",
		Identifiers: []acme.Identifier{{Type: "dns", Value: "prune.example.test"}}}); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		kvs, err := e.app.Store().ACME().List(t.Context(), "gateway_profiles")
		if err != nil {
			t.Fatal(err)
		}
		return len(kvs)
	}
	if _, err := e.gw.Prune(t.Context()); err != nil || count() != 1 {
		t.Fatalf("Prune of a live order: %v, %d profile records, want 1", err, count())
	}
	offset.Store(int64(48 * time.Hour))
	if _, err := e.gw.Prune(t.Context()); err != nil || count() != 0 {
		t.Fatalf("Prune past the order's expiry: %v, %d profile records, want 0", err, count())
	}
}
