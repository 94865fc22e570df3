package gateway_test

import (
	"crypto/elliptic"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

// TestLoad200: 200 edge clients (4 tokens × 50 accounts) pulling through
// the gateway at once for a while; no error but rate limits is allowed.
// It is a load run, not part of the suite:
//
//	CERTLOCKER_GATEWAY_LOAD=60s go test -run TestLoad200 -v ./modules/gateway/
func TestLoad200(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("CERTLOCKER_GATEWAY_LOAD"))
	if err != nil {
		t.Skip("a load run: set CERTLOCKER_GATEWAY_LOAD=60s to run it")
	}
	e := newGWEnv(t, gateway.Options{})
	const tokens, perToken = 4, 50
	type client struct {
		cl   *acme.Client
		acct acme.Account
		name string
	}
	var clients []client
	for k := range tokens {
		name := fmt.Sprintf("t%d.load.example.test", k)
		_, creds, err := e.app.Tokens().Create(t.Context(), "load", gateway.CreateRequest{Names: []string{name}, IssuerID: e.issuer, MaxAccounts: perToken})
		if err != nil {
			t.Fatal(err)
		}
		for range perToken {
			cl := e.client(gateway.DirectoryPath)
			acct, err := e.account(cl, creds)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, client{cl, acct, name})
		}
	}
	var (
		mu       sync.Mutex
		lat      []time.Duration
		limited  int
		failures []string
	)
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				t0 := time.Now()
				csr := csrFor(t, newKey(t, elliptic.P256()), c.name)
				order, err := c.cl.NewOrder(t.Context(), c.acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: c.name}}})
				if err == nil {
					// a finalize that outlasts the gateway's wait answers
					// processing, which acmez polls through
					var o acme.Order
					if o, err = c.cl.FinalizeOrder(t.Context(), c.acct, order, csr); err == nil {
						_, err = c.cl.GetCertificateChain(t.Context(), c.acct, o.Certificate)
					}
				}
				mu.Lock()
				var p acme.Problem
				switch {
				case err == nil:
					lat = append(lat, time.Since(t0))
				case errors.As(err, &p) && strings.HasSuffix(p.Type, ":rateLimited"):
					limited++
				default:
					failures = append(failures, err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	slices.Sort(lat)
	if len(lat) == 0 {
		t.Fatalf("no certificate in %s; failures: %v", total, failures)
	}
	t.Logf("%d clients, %s: %d certificates (%.1f/s), p50 %s, p99 %s, %d rate-limited, %d errors",
		len(clients), total.Round(time.Second), len(lat), float64(len(lat))/total.Seconds(), lat[len(lat)/2].Round(time.Millisecond),
		lat[len(lat)*99/100].Round(time.Millisecond), limited, len(failures))
	if len(failures) > 0 {
		t.Fatalf("%d errors, first: %s", len(failures), failures[0])
	}
}
