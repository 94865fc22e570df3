package workflow_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// BenchmarkDNSOrder10 issues one order of ten dns-01 names at a time,
// with every TXT record served by the DNS stand-in one second after the
// Cloudflare API stand-in accepted it, through the engine and through
// acmez's high-level client with certmagic's DNS01Solver (same Pebble,
// same Cloudflare API and DNS server), alternately, in one run. It reports
// each one's mean order-to-issued time and their ratio (engine / acmez).
// certmagic checks propagation every 2 s and acmez waits for each solver
// in turn, so a third client, acmez with certmagic's solver but the
// engine's own propagation check (same polling), isolates the ordering of
// the steps from the polling pace (ratio_same_check).
//
//	go test -run '^$' -bench BenchmarkDNSOrder10 -benchtime 1x ./modules/workflow/
//
// CERTLOCKER_BENCH_DNS_ORDERS sets the orders per client (default 3).
func BenchmarkDNSOrder10(b *testing.B) {
	const names = 10
	const delay = time.Second
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("CERTLOCKER_BENCH_DNS_ORDERS")); err == nil && v > 0 {
		rounds = v
	}
	e := newEnv(b, acmetest.PebbleOptions{})
	e.dns.SetPublishDelay(acmetest.PublishAfter(delay))
	ids := func(prefix string) []storage.Identifier {
		var out []storage.Identifier
		for i := range names {
			out = append(out, storage.Identifier{Value: fmt.Sprintf("%s-%d.%s", prefix, i, zone), Challenge: "dns-01", DNSProviderID: "dns_test"})
		}
		return out
	}

	// acmez + certmagic's DNS-01 solver on the same Cloudflare API
	solver := &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{DNSProvider: e.cf.Provider(cfToken, ""),
		Resolvers: []string{e.dns.Addr()}}}
	cl := acmez.Client{Client: &acme.Client{Directory: e.pebble.DirectoryURL(), HTTPClient: e.pebble.HTTPClient()},
		ChallengeSolvers: map[string]acmez.Solver{acme.ChallengeTypeDNS01: solver}}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	acct, err := cl.NewAccount(b.Context(), acme.Account{PrivateKey: key, TermsOfServiceAgreed: true})
	if err != nil {
		b.Fatal(err)
	}
	same := cl
	same.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeDNS01: sameCheckSolver{solver, e.pres}}
	obtain := func(cl acmez.Client, prefix string) time.Duration {
		var sans []string
		for _, id := range ids(prefix) {
			sans = append(sans, id.Value)
		}
		ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		start := time.Now()
		if _, err := cl.ObtainCertificateForSANs(b.Context(), acct, ck, sans); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	for b.Loop() {
		var engine, bare, sameCheck time.Duration
		for r := range rounds {
			tag := fmt.Sprintf("%d-%d", time.Now().UnixNano(), r)

			eng, _ := e.engine("bench-dns", nil)
			start := time.Now()
			w, err := eng.Create(b.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: ids("eng" + tag)})
			if err != nil {
				b.Fatal(err)
			}
			if err := eng.RunDue(b.Context()); err != nil {
				b.Fatal(err)
			}
			engine += time.Since(start)
			if w, err = e.store.Workflows().Get(b.Context(), w.ID); err != nil || w.State != storage.StateIssued {
				b.Fatalf("engine order %s: %s (%v)", w.State, w.Status, err)
			}

			bare += obtain(cl, "acmez"+tag)
			sameCheck += obtain(same, "same"+tag)
		}
		em := float64(engine.Milliseconds()) / float64(rounds)
		am := float64(bare.Milliseconds()) / float64(rounds)
		b.ReportMetric(em, "engine_ms/order")
		b.ReportMetric(am, "acmez_certmagic_ms/order")
		sm := float64(sameCheck.Milliseconds()) / float64(rounds)
		b.ReportMetric(em/am, "ratio")
		b.ReportMetric(sm, "acmez_same_check_ms/order")
		b.ReportMetric(em/sm, "ratio_same_check")
	}
}

// sameCheckSolver is certmagic's DNS-01 solver waiting with the engine's
// propagation check (the DNS provider service's, same polling) instead of
// certmagic's.
type sameCheckSolver struct {
	*certmagic.DNS01Solver
	pres *dnsPresenter
}

func (s sameCheckSolver) Wait(ctx context.Context, c acme.Challenge) error {
	name := strings.TrimSuffix(strings.TrimSuffix(c.DNS01TXTRecordName(), "."), "."+zone)
	_, err := s.pres.WaitPropagation(ctx, &storage.ChallengeRecord{ProviderID: "dns_test", Zone: zone, Name: name,
		Type: "TXT", Value: c.DNS01KeyAuthorization()})
	return err
}
