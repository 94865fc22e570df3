package admin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
)

// benchSite is a running app on a SQLite file seeded with n workflows and n
// certificates (groups A, B, C in turn), the UI handler in front of it,
// and the IDs of the workflows still running (for timelines to watch).
type benchSite struct {
	ui      *UI
	app     *certlocker.App
	running []string
}

// seedBench writes the rows straight into a fresh SQLite file through the
// storage backend (one transaction per kind: the services' per-row audit
// and parsing would make seeding take minutes and measure nothing the
// pages do), then starts the app on that file the way Caddy does.
// Workflows are terminal or retry-scheduled a year ahead, so the engine
// leaves them alone; renewals are off.
func seedBench(b *testing.B, n, running int) *benchSite {
	b.Helper()
	ctx := b.Context()
	dir := b.TempDir()
	path := filepath.Join(dir, "c.db")
	key, err := storage.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv(certlocker.EnvEncryptionKey, hex.EncodeToString(key))
	sealer, err := storage.NewSealer(key)
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlite.Open(ctx, path, sealer)
	if err != nil {
		b.Fatal(err)
	}
	groups := []string{"A", "B", "C"}
	issuerOf := map[string]string{}
	fx := newCertFixture(b, []string{"bench.example.test"}, time.Now().Add(90*24*time.Hour))
	var runningIDs []string
	err = st.InTx(ctx, func(tx storage.Store) error {
		for _, g := range groups {
			iss := &storage.Issuer{Name: "ca-" + g, DirectoryURL: "https://ca.invalid/directory", Group: g, Status: "valid",
				AccountKey: storage.NewSecret([]byte(fx.key)), Contacts: []string{"mailto:ops@example.test"}}
			if err := tx.Issuers().Create(ctx, iss); err != nil {
				return err
			}
			issuerOf[g] = iss.ID
		}
		states := []string{storage.StateIssued, storage.StateIssued, storage.StateFailed, storage.StateCancelled, storage.StateRetryScheduled}
		for i := range n {
			g := groups[i%3]
			w := &storage.Workflow{IssuerID: issuerOf[g], Group: g, Trigger: "manual", KeyType: "p256",
				State: states[i%len(states)], Status: "seeded", NextRunAt: time.Now().Add(365 * 24 * time.Hour),
				Identifiers: []storage.Identifier{
					{Type: "dns", Value: fmt.Sprintf("*.s%d.example.test", i), Challenge: "dns-01"},
					{Type: "dns", Value: fmt.Sprintf("www.s%d.example.test", i), Challenge: "http-01"},
				}}
			if w.State == storage.StateFailed {
				w.Data = json.RawMessage(`{"problem":{"type":"urn:ietf:params:acme:error:dns","detail":"DNS problem: NXDOMAIN looking up TXT for _acme-challenge.s` +
					strconv.Itoa(i) + `.example.test","status":400}}`)
			}
			if i < running {
				w.State = storage.StateRetryScheduled
			}
			if err := tx.Workflows().Create(ctx, w); err != nil {
				return err
			}
			if i < running {
				runningIDs = append(runningIDs, w.ID)
				for s, state := range []string{storage.StatePending, storage.StateOrdering, storage.StateAuthorizing, storage.StateRetryScheduled} {
					if err := tx.Workflows().AppendEvent(ctx, &storage.WorkflowEvent{WorkflowID: w.ID, Node: "n1", State: state,
						Step: state, Message: "seeded step " + strconv.Itoa(s)}); err != nil {
						return err
					}
				}
			}
			fp := sha256.Sum256([]byte(strconv.Itoa(i)))
			name := fmt.Sprintf("h%05d.s%d.example.test", i, i%100)
			na := time.Now().Add(time.Duration(i%210-10) * 24 * time.Hour)
			c := &storage.Certificate{Fingerprint: hex.EncodeToString(fp[:]), CommonName: name, Names: []string{name, "www." + name},
				IssuerDN: "CN=Bench CA", Serial: strconv.FormatInt(int64(i)+1<<40, 16), NotBefore: na.Add(-90 * 24 * time.Hour), NotAfter: na,
				KeyType: "ECDSA P-256", Rating: []string{"A", "A", "B", "C"}[i%4], IssuerID: issuerOf[g], Source: storage.CertSourceIssued,
				Group: g, Status: storage.CertStatusActive, ChainPEM: fx.chain, PrivateKey: storage.NewSecret([]byte(fx.key)),
				Meta: json.RawMessage(`{}`)}
			if i%10 == 9 {
				c.Status = storage.CertStatusRenewed
			}
			if err := tx.Certificates().Put(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	_, app := testAPI(b, mustJSON(map[string]any{
		"storage": map[string]any{"path": path}, "node_id": "n1",
		"workflow": map[string]any{"renewal_interval": "-1s"},
		"users": []any{
			map[string]any{"id": "root", "role": "admin"},
			map[string]any{"id": "ac", "role": "operator", "groups": []string{"A", "C"}},
		},
	}))
	cctx, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		b.Fatal(err)
	}
	site := &benchSite{ui: new(UI), app: app, running: runningIDs}
	if err := site.ui.Provision(cctx); err != nil {
		b.Fatal(err)
	}
	return site
}

// request is one page request as Caddy hands it to the handler after
// basic_auth: the user in the replacer, the CSRF cookie set.
func (s *benchSite) request(ctx context.Context, user, target string) *http.Request {
	repl := caddy.NewReplacer()
	repl.Set("http.auth.user.id", user)
	ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, repl)
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	req.RemoteAddr = "203.0.113.7:4444"
	req.AddCookie(&http.Cookie{Name: csrfCookie, Value: testCSRF})
	return req
}

func (s *benchSite) get(b *testing.B, user, target string) string {
	rec := httptest.NewRecorder()
	if err := s.ui.ServeHTTP(rec, s.request(b.Context(), user, target), nil); err != nil {
		b.Fatal(err)
	}
	if rec.Code != http.StatusOK {
		b.Fatalf("GET %s as %s: %d\n%.2000s", target, user, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// BenchmarkUIPages renders the workflows list and the inventory page
// (expiry widgets, chart and a 50-row table) through the UI handler, as
// an admin and as an operator of two of three groups, over 10,000
// workflows and 10,000 certificates, and over 100 of each in the same run
// for the ratio: the pages query one page and aggregates, so the ratio
// stays near 1. It reports p50 and p95 milliseconds per page.
//
//	go test -run '^$' -bench BenchmarkUIPages -benchtime 200x ./admin/
func BenchmarkUIPages(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			site := seedBench(b, n, 0)
			next := regexp.MustCompile(`rel="next" href="([^"]*)"`)
			nextOf := func(user, target string) string {
				m := next.FindStringSubmatch(site.get(b, user, target))
				if m == nil {
					b.Fatalf("%s has no next page", target)
				}
				return target[:strings.Index(target+"?", "?")] + html.UnescapeString(m[1])
			}
			pages := []struct{ name, user, target string }{
				{"workflows/admin", "root", "/workflows"},
				{"workflows/groups-AC", "ac", "/workflows"},
				{"workflows/admin-page2", "root", nextOf("root", "/workflows")},
				{"workflows/failed", "root", "/workflows?state=failed"},
				{"inventory/admin", "root", "/inventory"},
				{"inventory/groups-AC", "ac", "/inventory"},
				{"inventory/admin-by-name-page2", "root", nextOf("root", "/inventory?sort=name")},
			}
			for _, p := range pages {
				b.Run(p.name, func(b *testing.B) {
					var took []time.Duration
					for b.Loop() {
						start := time.Now()
						site.get(b, p.user, p.target)
						took = append(took, time.Since(start))
					}
					reportPercentiles(b, took)
				})
			}
		})
	}
}

// reportPercentiles reports the p50 and p95 of the durations in ms.
func reportPercentiles(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	at := func(p float64) float64 {
		i := int(float64(len(took)-1) * p)
		return float64(took[i].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.95), "p95-ms")
}

// BenchmarkUISSE opens 200 Server-Sent Event streams at once over real
// HTTP connections to the UI handler (httptest.Server): 200 workflow
// timelines (/api/workflows/{id}/events, what a workflow page opens), and
// 200 live workflows lists (/live/workflows). It waits until every stream
// has sent its first events, then for three rounds of one more message
// on every stream (a keep-alive of each timeline, which looks at the store
// each time; a change on the live lists' first page), and reports the
// extra resident memory of the whole process (VmRSS from
// /proc/self/status, after minus before; the HTTP clients run in the same
// process, so it is an upper bound) and the CPU time the process spent
// per second while the streams sat open.
//
//	go test -run '^$' -bench BenchmarkUISSE -benchtime 1x ./admin/
func BenchmarkUISSE(b *testing.B) {
	const streams = 200
	site := seedBench(b, 10_000, streams)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := site.ui.ServeHTTP(w, site.request(r.Context(), "root", r.URL.RequestURI()), nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	b.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: streams,
		DialContext: (&net.Dialer{}).DialContext}}
	const rounds = 3
	cases := []struct {
		name   string
		target func(i int) string
		first  string // what the stream sends once it has caught up
	}{
		{"timelines", func(i int) string { return "/api/workflows/" + site.running[i] + "/events" }, "event: state.retry_scheduled"},
		{"live-lists", func(int) string { return "/live/workflows" }, ": ready"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				before := rssKB(b)
				ctx, cancel := context.WithCancel(b.Context())
				var wg sync.WaitGroup
				ready := make(chan error, streams)
				ticked := make(chan struct{}, streams*(rounds+1))
				for i := range streams {
					wg.Add(1)
					go func() {
						defer wg.Done()
						req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+c.target(i), nil)
						resp, err := client.Do(req)
						if err != nil {
							ready <- err
							return
						}
						defer resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							ready <- fmt.Errorf("GET %s: %d", c.target(i), resp.StatusCode)
							return
						}
						sc := bufio.NewScanner(resp.Body)
						caught := false
						for sc.Scan() {
							line := sc.Text()
							switch {
							case !caught && strings.HasPrefix(line, c.first):
								caught = true
								ready <- nil
							case caught && (line == ": keep-alive" || strings.HasPrefix(line, "event: ")):
								select {
								case ticked <- struct{}{}:
								default:
								}
							}
						}
					}()
				}
				for range streams {
					if err := <-ready; err != nil {
						b.Fatal(err)
					}
				}
				var ru0, ru1 syscall.Rusage
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
				t0 := time.Now()
				// rounds of one message on every stream: the timelines'
				// keep-alives (each a look at the store), or one change on
				// the live lists' first page
				for range rounds {
					if c.name == "live-lists" {
						ws, _, err := site.app.Workflows().List(ctx, storage.WorkflowFilter{State: storage.StateRetryScheduled}, storage.Page{Limit: 1})
						if err != nil || len(ws) == 0 {
							b.Fatalf("no workflow to cancel: %v", err)
						}
						if _, err := site.app.Workflows().Cancel(ctx, ws[0].ID, "bench"); err != nil {
							b.Fatal(err)
						}
					}
					for range streams {
						select {
						case <-ticked:
						case <-time.After(30 * time.Second):
							b.Fatal("the streams stopped sending")
						}
					}
				}
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
				elapsed := time.Since(t0)
				after := rssKB(b)
				cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
				b.ReportMetric(float64(after-before)/1024, "extra-RSS-MB")
				b.ReportMetric(float64(cpu.Milliseconds())/elapsed.Seconds(), "CPU-ms/s")
				cancel()
				wg.Wait()
			}
		})
	}
}

// rssKB reads the process's resident set size (VmRSS) in kB.
func rssKB(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatalf("reading RSS: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("reading RSS from %q: %v", line, err)
			}
			return n
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
