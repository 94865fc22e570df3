package workflow_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Benchmarks of issue throughput and latency against the same in-process
// Pebble (no validation sleeps), side by side in one run:
//
//	go test -run '^$' -bench 'BenchmarkIssue' -benchtime 1x ./modules/workflow/
//
// CERTLOCKER_BENCH_ORDERS sets the orders per case (default 500). Every
// order is one http-01 name; concurrency is 8 on 8 accounts (Pebble 2.10.3
// deadlocks near 32 concurrent orders on one account).

func benchOrders() int {
	if n, err := strconv.Atoi(os.Getenv("CERTLOCKER_BENCH_ORDERS")); err == nil && n > 0 {
		return n
	}
	return 500
}

const benchConcurrency = 8

func BenchmarkIssue(b *testing.B) {
	e := newEnv(b, acmetest.PebbleOptions{})
	n := benchOrders()
	names := func(prefix string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = e.name(fmt.Sprintf("%s%d", prefix, i))
		}
		return out
	}
	b.Run("engine_sqlite", func(b *testing.B) {
		for b.Loop() {
			hosts := names(fmt.Sprintf("eng%d-", time.Now().UnixNano()))
			issuers := benchIssuers(b, e, benchConcurrency)
			_, opts := e.engine("bench", nil)
			opts.Concurrency, opts.PerIssuerConcurrency = benchConcurrency, benchConcurrency
			eng := e.newEngine(opts)
			start := time.Now()
			ids := make([]string, 0, n)
			for i, h := range hosts {
				w, err := eng.Create(b.Context(), workflow.Request{IssuerID: issuers[i%len(issuers)],
					Identifiers: []storage.Identifier{{Value: h}}})
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, w.ID)
			}
			if err := eng.RunDue(b.Context()); err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			report(b, n, elapsed, issuedLatencies(b, e.store, ids))
		}
	})
	b.Run("acmez_bare", func(b *testing.B) {
		for b.Loop() {
			hosts := names(fmt.Sprintf("bare%d-", time.Now().UnixNano()))
			start := time.Now()
			lat := bareAcmez(b, e, hosts)
			report(b, n, time.Since(start), lat)
		}
	})
}

// BenchmarkLatency issues orders one at a time: order-to-issued latency
// without queueing, engine vs bare acmez.
//
//	go test -run '^$' -bench BenchmarkLatency -benchtime 1x ./modules/workflow/
func BenchmarkLatency(b *testing.B) {
	e := newEnv(b, acmetest.PebbleOptions{})
	n := benchOrders() / 10
	b.Run("engine_sqlite", func(b *testing.B) {
		for b.Loop() {
			start := time.Now()
			lat := engineSequential(b, e, n, "lat")
			report(b, n, time.Since(start), lat)
		}
	})
	b.Run("acmez_bare", func(b *testing.B) {
		for b.Loop() {
			hosts := make([]string, n)
			for i := range hosts {
				hosts[i] = e.name(fmt.Sprintf("latb%d-%d", time.Now().UnixNano(), i))
			}
			start := time.Now()
			lat := bareAcmezN(b, e, hosts, 1)
			report(b, n, time.Since(start), lat)
		}
	})
}

// engineSequential issues n orders through the engine one at a time (each
// created, then run to issued, before the next) on one account, and returns
// their order-to-issued latencies.
func engineSequential(b *testing.B, e *env, n int, prefix string) []time.Duration {
	issuers := benchIssuers(b, e, 1)
	_, opts := e.engine(prefix, nil)
	opts.Concurrency, opts.PerIssuerConcurrency = 1, 1
	eng := e.newEngine(opts)
	ids := make([]string, 0, n)
	for i := 0; i < n; i++ {
		w, err := eng.Create(b.Context(), workflow.Request{IssuerID: issuers[0],
			Identifiers: []storage.Identifier{{Value: e.name(fmt.Sprintf("%s%d-%d", prefix, time.Now().UnixNano(), i))}}})
		if err != nil {
			b.Fatal(err)
		}
		if err := eng.RunDue(b.Context()); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, w.ID)
	}
	return issuedLatencies(b, e.store, ids)
}

// benchIssuers creates k issuers, so orders spread over k accounts.
func benchIssuers(b *testing.B, e *env, k int) []string {
	var ids []string
	for i := 0; i < k; i++ {
		iss := &storage.Issuer{Name: fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i), DirectoryURL: e.pebble.DirectoryURL()}
		if err := e.store.Issuers().Create(b.Context(), iss); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, iss.ID)
	}
	return ids
}

// issuedLatencies reads the order-to-issued times of the workflows ids (the
// run being measured, nothing else in the store), failing the benchmark for
// any that did not issue.
func issuedLatencies(b *testing.B, st storage.Store, ids []string) []time.Duration {
	lat := make([]time.Duration, 0, len(ids))
	for _, id := range ids {
		w, err := st.Workflows().Get(b.Context(), id)
		if err != nil {
			b.Fatal(err)
		}
		if w.State != storage.StateIssued {
			b.Errorf("workflow %s %s: %s", w.ID, w.State, w.Status)
			continue
		}
		lat = append(lat, w.UpdatedAt.Sub(w.CreatedAt))
	}
	return lat
}

func report(b *testing.B, n int, elapsed time.Duration, lat []time.Duration) {
	slices.Sort(lat)
	if len(lat) == 0 {
		b.Fatal("nothing issued")
	}
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "certs/s")
	b.ReportMetric(pct(0.5), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(float64(len(lat)), "issued")
}

// bareAcmez issues the same kind of orders with acmez's high-level client
// and no persistence: the library on its own.
func bareAcmez(b *testing.B, e *env, hosts []string) []time.Duration {
	return bareAcmezN(b, e, hosts, benchConcurrency)
}

func bareAcmezN(b *testing.B, e *env, hosts []string, workers int) []time.Duration {
	jobs := make(chan string)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := acmez.Client{Client: &acme.Client{Directory: e.pebble.DirectoryURL(), HTTPClient: e.pebble.HTTPClient()},
				ChallengeSolvers: map[string]acmez.Solver{acme.ChallengeTypeHTTP01: memSolver{e}}}
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			acct, err := cl.NewAccount(b.Context(), acme.Account{PrivateKey: key, TermsOfServiceAgreed: true})
			if err != nil {
				b.Error(err)
				return
			}
			for h := range jobs {
				start := time.Now()
				ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if _, err := cl.ObtainCertificateForSANs(b.Context(), acct, ck, []string{h}); err != nil {
					b.Error(err)
					continue
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	for _, h := range hosts {
		jobs <- h
	}
	close(jobs)
	wg.Wait()
	return lat
}

type memSolver struct{ e *env }

func (s memSolver) Present(_ context.Context, c acme.Challenge) error {
	s.e.memHTTP01.Store(c.Token, c.KeyAuthorization)
	return nil
}

func (s memSolver) CleanUp(_ context.Context, c acme.Challenge) error {
	s.e.memHTTP01.Delete(c.Token)
	return nil
}

// BenchmarkInFlight puts 2,000 workflows in flight at once (created, not
// finished: rows in the store, leased and run 16 at a time) and reports the
// process's peak RSS (VmHWM: Pebble, the store and the engine together) and
// throughput. Pebble 2.10.3 deadlocks on its own locks at a few dozen
// concurrent orders (seen here at 256 in total, and at 32 on one account),
// so the engine's concurrency stays below that; queued workflows cost a
// row, not a goroutine.
//
//	go test -run '^$' -bench BenchmarkInFlight -benchtime 1x ./modules/workflow/
func BenchmarkInFlight(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("CERTLOCKER_BENCH_INFLIGHT")); err == nil && v > 0 {
		n = v
	}
	e := newEnv(b, acmetest.PebbleOptions{})
	issuers := benchIssuers(b, e, 100)
	for b.Loop() {
		_, opts := e.engine("inflight", nil)
		opts.Concurrency, opts.PerIssuerConcurrency = 16, 4
		eng := e.newEngine(opts)
		ids := make([]string, 0, n)
		for i := 0; i < n; i++ {
			w, err := eng.Create(b.Context(), workflow.Request{IssuerID: issuers[i%len(issuers)],
				Identifiers: []storage.Identifier{{Value: e.name(fmt.Sprintf("if%d-%d", time.Now().UnixNano(), i))}}})
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, w.ID)
		}
		start := time.Now()
		if err := eng.RunDue(b.Context()); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		report(b, n, elapsed, issuedLatencies(b, e.store, ids))
		b.ReportMetric(peakRSSMB(), "peak_rss_MB")
	}
}

func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkLego compares the Debian lego CLI, one process per certificate
// and so one order at a time, with the engine issuing the same number of
// orders one at a time (both sequential, like with like), against the same
// kind of Pebble, in one run.
//
//	go test -run '^$' -bench BenchmarkLego -benchtime 1x ./modules/workflow/
func BenchmarkLego(b *testing.B) {
	lego, err := exec.LookPath("lego")
	if err != nil {
		b.Skip("lego not installed (apt-get install lego)")
	}
	e := newEnv(b, acmetest.PebbleOptions{})
	port := e.pebble.HTTPPort()
	n := 10
	if v, err := strconv.Atoi(os.Getenv("CERTLOCKER_BENCH_LEGO")); err == nil && v > 0 {
		n = v
	}
	// first: the engine needs the harness's http-01 server, which lego's
	// run below replaces
	b.Run("engine_sqlite_sequential", func(b *testing.B) {
		for b.Loop() {
			start := time.Now()
			lat := engineSequential(b, e, n, "legoeng")
			report(b, n, time.Since(start), lat)
		}
	})
	b.Run("lego_cli", func(b *testing.B) {
		// lego answers http-01 itself on the port Pebble dials: stop ours
		e.stopHTTP01()
		caPEM := filepath.Join(b.TempDir(), "pebble-wfe.pem")
		if err := os.WriteFile(caPEM, e.pebble.WFECertPEM(), 0o600); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			var lat []time.Duration
			start := time.Now()
			dir := b.TempDir()
			for i := 0; i < n; i++ {
				host := e.name(fmt.Sprintf("lego%d-%d", time.Now().UnixNano(), i))
				t0 := time.Now()
				cmd := exec.Command(lego, "--accept-tos", "--email", "ops@example.test", "--server", e.pebble.DirectoryURL(),
					"--path", dir, "--http", "--http.port", "127.0.0.1:"+strconv.Itoa(port), "--domains", host, "run")
				cmd.Env = append(os.Environ(), "LEGO_CA_CERTIFICATES="+caPEM)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("lego: %v\n%s", err, out)
				}
				lat = append(lat, time.Since(t0))
			}
			report(b, n, time.Since(start), lat)
		}
	})
}
