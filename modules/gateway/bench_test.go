package gateway_test

import (
	"crypto/elliptic"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// BenchmarkEdgePull: one edge pull (new order, authorizations, finalize
// with the edge's CSR, download) through the gateway (EAB; the gateway
// places the upstream order as a workflow) vs the same acmez client
// straight against the same kind of in-process Pebble (VA always valid,
// so neither side solves challenges). Reports p50/p99 latency and
// certificates per second, sequentially and with 8 clients at once.
// gateway-warm is the gateway with the token's names pre-authorized
// upstream (Gateway.Warm; Pebble reusing valid authorizations): the
// upstream order comes back ready and a finalize waits only for issuance;
// gateway-warm-pg is the same on PostgreSQL (the multi-node backend).
//
//	go test -run '^$' -bench BenchmarkEdgePull -benchtime 40x ./modules/gateway/
func BenchmarkEdgePull(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("gateway/c%d", conc), func(b *testing.B) {
			benchPulls(b, conc, func(tb *testing.B) func(i int) error {
				e := newGWEnv(tb, gateway.Options{})
				_, pull := benchToken(tb, e, conc)
				return pull
			})
		})
		for _, backend := range []string{"", "-pg"} {
			b.Run(fmt.Sprintf("gateway-warm%s/c%d", backend, conc), func(b *testing.B) {
				benchPulls(b, conc, warmPulls(conc, backend))
			})
		}
		b.Run(fmt.Sprintf("pebble/c%d", conc), func(b *testing.B) {
			benchPulls(b, conc, func(tb *testing.B) func(i int) error {
				p := acmetest.NewPebble(tb, acmetest.PebbleOptions{VAAlwaysValid: true})
				cl := &acme.Client{Directory: p.DirectoryURL(), HTTPClient: p.HTTPClient(), PollInterval: 20 * time.Millisecond, PollTimeout: time.Minute}
				accts := make([]acme.Account, conc)
				for i := range accts {
					a, err := cl.NewAccount(tb.Context(), acme.Account{TermsOfServiceAgreed: true, PrivateKey: newKey(tb, elliptic.P256())})
					if err != nil {
						tb.Fatal(err)
					}
					accts[i] = a
				}
				return func(i int) error {
					name := fmt.Sprintf("n%d.bench.example.test", i%conc)
					return directPull(tb, cl, accts[i%conc], csrFor(tb, newKey(tb, elliptic.P256()), name), name)
				}
			})
		})
	}
}

// warmPulls sets up the gateway-warm case: the token's names
// pre-authorized upstream, on SQLite ("") or PostgreSQL ("-pg", a fresh
// schema on the local server; skipped when it is not there, failed on CI).
func warmPulls(conc int, backend string) func(*testing.B) func(i int) error {
	return func(tb *testing.B) func(i int) error {
		var stor map[string]any
		if backend == "-pg" {
			stor = map[string]any{"backend": "postgres", "dsn": pgtest.DSN(tb)}
		}
		e := newGWEnvStorage(tb, acmetest.PebbleOptions{VAAlwaysValid: true, AuthzReusePercent: 100}, gateway.Options{}, stor)
		tok, pull := benchToken(tb, e, conc)
		if err := e.gw.Warm(tb.Context()); err != nil {
			tb.Fatal(err)
		}
		if w := e.waitTerminal(e.gw.WarmWorkflow(tb.Context(), tok.ID)); w.State != storage.StateAuthorized {
			tb.Fatalf("pre-authorization %s: %s", w.State, w.Status)
		}
		return pull
	}
}

// benchToken makes the gateway cases' token (conc names, conc accounts
// bound over EAB) and returns it with pull i: account i%conc pulls name
// i%conc with a new key.
func benchToken(tb *testing.B, e *gwEnv, conc int) (*storage.Token, func(i int) error) {
	var names []string
	for i := range conc {
		names = append(names, fmt.Sprintf("n%d.bench.example.test", i))
	}
	tok, creds, err := e.app.Tokens().Create(tb.Context(), "bench", gateway.CreateRequest{Names: names,
		IssuerID: e.issuer, MaxAccounts: conc})
	if err != nil || tok == nil {
		tb.Fatal(err)
	}
	cl := e.client(gateway.DirectoryPath)
	accts := make([]acme.Account, conc)
	for i := range accts {
		a, err := e.account(cl, creds)
		if err != nil {
			tb.Fatal(err)
		}
		accts[i] = a
	}
	return tok, func(i int) error {
		name := names[i%conc]
		key := newKey(tb, elliptic.P256())
		_, err := pullWith(tb, cl, accts[i%conc], csrFor(tb, key, name), name)
		return err
	}
}

// directPull is the same client's pull straight from Pebble: it asks the CA
// to validate http-01 (always valid here) before finalizing.
func directPull(tb testing.TB, cl *acme.Client, acct acme.Account, csr []byte, name string) error {
	ctx := tb.Context()
	order, err := cl.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: name}}})
	if err != nil {
		return err
	}
	for _, u := range order.Authorizations {
		az, err := cl.GetAuthorization(ctx, acct, u)
		if err != nil {
			return err
		}
		if az.Status == "pending" {
			for _, ch := range az.Challenges {
				if ch.Type == "http-01" {
					if _, err := cl.InitiateChallenge(ctx, acct, ch); err != nil {
						return err
					}
				}
			}
			if _, err := cl.PollAuthorization(ctx, acct, az); err != nil {
				return err
			}
		}
	}
	order, err = cl.FinalizeOrder(ctx, acct, order, csr)
	if err != nil {
		return err
	}
	_, err = cl.GetCertificateChain(ctx, acct, order.Certificate)
	return err
}

func benchPulls(b *testing.B, conc int, setup func(*testing.B) func(i int) error) {
	pull := setup(b)
	lat := make([]time.Duration, b.N)
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := pull(i); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50_ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Milliseconds()), "p99_ms")
	b.ReportMetric(float64(b.N)/total.Seconds(), "certs/s")
}
