package dnsproviders

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
)

// storedRecord stores a challenge record without publishing it, so a test
// controls when the DNS server starts serving it.
func storedRecord(t *testing.T, e *env, p *storage.DNSProvider, name, value string) *storage.ChallengeRecord {
	t.Helper()
	rec := &storage.ChallengeRecord{ProviderID: p.ID, WorkflowID: "wf", Zone: testZone, Name: name, Type: "TXT", Value: value}
	if err := e.st.DNSProviders().PutRecord(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// setSettings writes a provider client's settings directly (bypassing
// validation, e.g. for a timeout shorter than the API allows).
func setSettings(t *testing.T, e *env, p *storage.DNSProvider, st settings) {
	t.Helper()
	cur, err := e.st.DNSProviders().Get(t.Context(), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur.Settings, _ = json.Marshal(st)
	if err := e.st.DNSProviders().Update(t.Context(), cur); err != nil {
		t.Fatal(err)
	}
}

func TestNameserversFromNSRecords(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.cloudflare("cf", nil)
	ns, err := e.svc.Nameservers(t.Context(), p, testZone)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 1 || ns[0].Host != "ns1.example.test." || len(ns[0].Addrs) != 1 || ns[0].Addrs[0] != e.dns.Addr() {
		t.Fatalf("nameservers = %+v, want ns1.example.test. at %s", ns, e.dns.Addr())
	}
	// a zone no resolver knows
	if _, err := e.svc.Nameservers(t.Context(), p, "unknown.invalid"); !errors.Is(err, ErrUnavailable) ||
		!strings.Contains(err.Error(), "finding the nameservers of zone unknown.invalid") {
		t.Fatalf("unknown zone: %v", err)
	}
}

func TestWaitPropagation(t *testing.T) {
	t.Parallel()
	const name = "_acme-challenge.www"
	const fqdn = name + "." + testZone

	t.Run("already served", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		rec, err := e.svc.Present(t.Context(), p.ID, "wf", fqdn, "v")
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.svc.WaitPropagation(t.Context(), rec)
		if err != nil || d <= 0 {
			t.Fatalf("got %v, %v", d, err)
		}
		if n := e.dns.Queries(fqdn); n != 1 {
			t.Fatalf("%d TXT queries, want 1", n)
		}
	})

	t.Run("served later", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		rec := storedRecord(t, e, p, name, "late")
		done := make(chan error, 1)
		go func() {
			_, err := e.svc.WaitPropagation(t.Context(), rec)
			done <- err
		}()
		if err := e.dns.WaitQueries(t.Context(), fqdn, 3); err != nil { // three rounds without it
			t.Fatal(err)
		}
		e.dns.AddTXT(fqdn, "other-value") // a different value is not enough
		if err := e.dns.WaitQueries(t.Context(), fqdn, 5); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("returned before the value was served: %v", err)
		default:
		}
		e.dns.AddTXT(fqdn, "late")
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("every nameserver, each until it answers", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		lagging := acmetest.NewDNSServer(t, testZone)
		p := e.cloudflare("cf", nil)
		setSettings(t, e, p, settings{Nameservers: []string{e.dns.Addr(), lagging.Addr()}, PropagationTimeout: time.Minute})
		rec := storedRecord(t, e, p, name, "v")
		e.dns.AddTXT(fqdn, "v")
		done := make(chan error, 1)
		go func() {
			_, err := e.svc.WaitPropagation(t.Context(), rec)
			done <- err
		}()
		if err := lagging.WaitQueries(t.Context(), fqdn, 3); err != nil {
			t.Fatal(err)
		}
		lagging.AddTXT(fqdn, "v")
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := e.dns.Queries(fqdn); n != 1 {
			t.Fatalf("the nameserver that answered was asked %d times, want once", n)
		}
	})

	t.Run("timeout names the laggard", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		setSettings(t, e, p, settings{PropagationTimeout: time.Second})
		rec := storedRecord(t, e, p, name, "never")
		_, err := e.svc.WaitPropagation(t.Context(), rec)
		// the reason is the nameserver's last answer: NXDOMAIN, or a query
		// timeout when the machine is busy; either way the laggard is named
		if !errors.Is(err, ErrPropagationTimeout) || !strings.Contains(err.Error(), "not served by 1 of 1 authoritative nameservers") ||
			!strings.Contains(err.Error(), "ns1.example.test. (") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("caller cancels", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		rec := storedRecord(t, e, p, name, "never")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			_, err := e.svc.WaitPropagation(ctx, rec)
			done <- err
		}()
		if err := e.dns.WaitQueries(t.Context(), fqdn, 1); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
}
