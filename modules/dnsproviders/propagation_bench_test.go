package dnsproviders

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
)

// BenchmarkPropagationDetection measures how long after the authoritative
// server first serves a challenge record the propagation check notices,
// for CertLocker's WaitPropagation and, on the same setup (the harness DNS
// server as the only nameserver), certmagic's DNS01Solver with its default
// wait. Two schedules:
//
//   - published: the record is served before the wait starts (a provider
//     whose API publishes synchronously, as the Cloudflare stand-in does);
//   - late: the record starts being served 1 to 1.25 s after the wait
//     starts (a provider that takes a moment to reach its nameservers).
//
// Reported: detect-ms (mean delay from first served to noticed), p50-ms and
// max-ms. Run with a small -benchtime such as 10x: certmagic's default wait
// takes seconds per operation.
func BenchmarkPropagationDetection(b *testing.B) {
	for _, sched := range []string{"published", "late"} {
		b.Run("certlocker/"+sched, func(b *testing.B) { benchCertLocker(b, sched) })
		b.Run("certmagic/"+sched, func(b *testing.B) { benchCertmagic(b, sched) })
	}
}

// lateOffset is when the late schedule starts serving the record.
func lateOffset() time.Duration {
	return time.Second + time.Duration(mrand.Int64N(int64(250*time.Millisecond)))
}

// publishAt serves value at name on d after offset, and reports the moment
// it did on the returned channel.
func publishAt(d *acmetest.DNSServer, name, value string, offset time.Duration) <-chan time.Time {
	at := make(chan time.Time, 1)
	time.AfterFunc(offset, func() {
		d.AddTXT(name, value)
		at <- time.Now()
	})
	return at
}

func randomValue() string {
	var v [16]byte
	_, _ = rand.Read(v[:])
	return hex.EncodeToString(v[:])
}

type delays []time.Duration

func (ds delays) report(b *testing.B) {
	if len(ds) == 0 {
		return
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*100) / 100 }
	b.ReportMetric(ms(sum/time.Duration(len(ds))), "detect-ms")
	b.ReportMetric(ms(ds[len(ds)/2]), "p50-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

func benchCertLocker(b *testing.B, sched string) {
	dns := acmetest.NewDNSServer(b, testZone)
	st := benchStore(b)
	svc := New(st, Options{Resolvers: []string{dns.Addr()}, NameserverPort: port(b, dns.Addr())})
	p := &storage.DNSProvider{Name: "bench", Type: TypeCloudflare, Credentials: storage.NewSecret([]byte(`{"api_token":"t"}`)),
		Zones: []string{testZone}}
	if err := st.DNSProviders().Create(context.Background(), p); err != nil {
		b.Fatal(err)
	}
	var ds delays
	for i := 0; b.Loop(); i++ {
		name := "_acme-challenge.h" + randomValue()[:8]
		value := randomValue()
		rec := &storage.ChallengeRecord{ProviderID: p.ID, Zone: testZone, Name: name, Type: "TXT", Value: value}
		fqdn := name + "." + testZone
		var served <-chan time.Time
		if sched == "published" {
			dns.AddTXT(fqdn, value)
			at := make(chan time.Time, 1)
			at <- time.Now()
			served = at
		} else {
			served = publishAt(dns, fqdn, value, lateOffset())
		}
		if _, err := svc.WaitPropagation(context.Background(), rec); err != nil {
			b.Fatal(err)
		}
		done := time.Now()
		ds = append(ds, done.Sub(<-served))
	}
	ds.report(b)
}

// delayedProvider publishes to the harness DNS server after a delay (the
// late schedule) or at once, like a provider API.
type delayedProvider struct {
	dns    *acmetest.DNSServer
	late   bool
	mu     sync.Mutex
	served <-chan time.Time
}

func (p *delayedProvider) AppendRecords(_ context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rr := recs[0].RR()
	fqdn := libdns.AbsoluteName(rr.Name, zone)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.late {
		p.served = publishAt(p.dns, fqdn, rr.Data, lateOffset())
	} else {
		p.dns.AddTXT(fqdn, rr.Data)
		at := make(chan time.Time, 1)
		at <- time.Now()
		p.served = at
	}
	return recs, nil
}

func (p *delayedProvider) DeleteRecords(_ context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rr := recs[0].RR()
	p.dns.DeleteTXT(libdns.AbsoluteName(rr.Name, zone), rr.Data)
	return recs, nil
}

func benchCertmagic(b *testing.B, sched string) {
	dns := acmetest.NewDNSServer(b, testZone)
	prov := &delayedProvider{dns: dns, late: sched == "late"}
	solver := &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{DNSProvider: prov, Resolvers: []string{dns.Addr()}}}
	var ds delays
	for b.Loop() {
		chal := acme.Challenge{Type: acme.ChallengeTypeDNS01, Token: randomValue(), KeyAuthorization: randomValue(),
			Identifier: acme.Identifier{Type: "dns", Value: "h" + randomValue()[:8] + "." + testZone}}
		ctx := context.Background()
		if err := solver.Present(ctx, chal); err != nil {
			b.Fatal(err)
		}
		// the wait starts now; for "late", the record appears 1–1.25 s in
		if err := solver.Wait(ctx, chal); err != nil {
			b.Fatal(err)
		}
		done := time.Now()
		prov.mu.Lock()
		served := prov.served
		prov.mu.Unlock()
		ds = append(ds, done.Sub(<-served))
		if err := solver.CleanUp(ctx, chal); err != nil {
			b.Fatal(err)
		}
	}
	ds.report(b)
}

func benchStore(b *testing.B) storage.Store {
	b.Helper()
	st, err := sqliteOpen(b)
	if err != nil {
		b.Fatal(err)
	}
	return st
}
