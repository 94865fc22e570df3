package dnsproviders

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
)

func TestVerifyCloudflare(t *testing.T) {
	t.Parallel()
	const (
		apiOnly   = "cf-dns-only-token-0123456789abcdefghijklmn"
		zoneRead  = "cf-zone-read-token-0123456789abcdefghijklm"
		acctToken = "cf-account-token-0123456789abcdefghijklmno"
		readOnly  = "cf-read-only-token-0123456789abcdefghijklm"
	)
	tests := []struct {
		name    string
		setup   func(e *env)
		config  func(c *Config)
		wantOK  bool
		want    string // in the message
		failing string // the name of the failed check
	}{
		{name: "valid token", wantOK: true, want: "can publish and remove challenge records in example.test"},
		{name: "separate zone token", wantOK: true,
			setup: func(e *env) {
				e.cf.AddToken(apiOnly, acmetest.PermDNSEdit(testZone))
				e.cf.AddToken(zoneRead, acmetest.PermZoneRead(acmetest.AllZones))
			},
			config: func(c *Config) {
				c.Credentials = creds(map[string]string{"api_token": apiOnly, "zone_token": zoneRead})
			}},
		{name: "account token", wantOK: true,
			setup: func(e *env) {
				e.cf.AddAccountToken(acctToken, acmetest.PermZoneRead(testZone), acmetest.PermDNSEdit(testZone))
			},
			config: func(c *Config) { c.Credentials = creds(map[string]string{"api_token": acctToken}) }},
		{name: "invalid token", failing: "api_token", want: "Cloudflare does not accept the api_token: it is invalid, expired or revoked",
			config: func(c *Config) { c.Credentials = creds(map[string]string{"api_token": "unknown-token-0123456789"}) }},
		{name: "revoked zone token", failing: "zone_token", want: "does not accept the zone_token",
			setup: func(e *env) {
				e.cf.AddToken(zoneRead, acmetest.PermZoneRead(acmetest.AllZones))
				e.cf.RevokeToken(zoneRead)
			},
			config: func(c *Config) {
				c.Credentials = creds(map[string]string{"api_token": cfToken, "zone_token": zoneRead})
			}},
		{name: "no DNS edit permission", failing: "publish", want: "the API token lacks a permission on zone example.test: it needs Zone → DNS → Edit",
			setup: func(e *env) {
				e.cf.AddToken(readOnly, acmetest.PermZoneRead(testZone), acmetest.PermDNSRead(testZone))
			},
			config: func(c *Config) { c.Credentials = creds(map[string]string{"api_token": readOnly}) }},
		{name: "zone not in Cloudflare", failing: "zone", want: "looking up zone other.test: Cloudflare has no such zone that the API token can read",
			config: func(c *Config) { c.Zones = []string{"other.test"} }},
		{name: "wrong account", failing: "zone", want: "zone example.test belongs to Cloudflare account acct-1 (Ops), not to the configured account acct-2",
			config: func(c *Config) { c.AccountID = "acct-2" }},
		{name: "rate limited, then through", wantOK: true,
			setup: func(e *env) { e.cf.FailNext(3, acmetest.RateLimitFault(0)) }},
		{name: "edge 502, then through", wantOK: true,
			setup: func(e *env) { e.cf.FailNext(2, acmetest.EdgeErrorFault(http.StatusBadGateway)) }},
		{name: "rate limited throughout", failing: "api_token", want: "Cloudflare's rate limit was reached (HTTP 429) and 5 attempts did not get through",
			setup: func(e *env) { e.cf.FailNext(5, acmetest.RateLimitFault(0)) }},
		{name: "API down throughout", failing: "api_token", want: "Cloudflare's API failed on its side (HTTP 503) 5 times in a row",
			setup: func(e *env) { e.cf.FailNext(5, acmetest.EdgeErrorFault(http.StatusServiceUnavailable)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			p := e.cloudflare("cf", tc.config)
			v, got, err := e.svc.Verify(t.Context(), "tester", p.ID)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(v)
			noSecret(t, "verification", string(b), cfToken, apiOnly, zoneRead, acctToken, readOnly)
			noSecret(t, "logs", logText(e.logs), cfToken, apiOnly, zoneRead, acctToken, readOnly)
			if v.OK != tc.wantOK || !strings.Contains(v.Message, tc.want) {
				t.Fatalf("verification ok=%v %q, want ok=%v %q\n%s", v.OK, v.Message, tc.wantOK, tc.want, b)
			}
			wantStatus := StatusVerified
			if !tc.wantOK {
				wantStatus = StatusFailed
				var failed string
				for _, c := range v.Checks {
					if !c.OK {
						failed = c.Name
						break
					}
				}
				if failed != tc.failing {
					t.Fatalf("failed check %q, want %q\n%s", failed, tc.failing, b)
				}
			} else {
				names := map[string]bool{}
				for _, c := range v.Checks {
					names[c.Name] = true
				}
				for _, n := range []string{"api_token", "zone", "publish", "nameservers", "propagation", "remove"} {
					if !names[n] {
						t.Fatalf("check %s missing\n%s", n, b)
					}
				}
			}
			if got.Status != wantStatus || got.LastMessage != v.Message || got.VerifiedAt.IsZero() {
				t.Fatalf("stored status %q %q", got.Status, got.LastMessage)
			}
			stored, _ := e.svc.Get(t.Context(), p.ID)
			if stored.Status != wantStatus || len(stored.Verification) == 0 {
				t.Fatalf("status not stored: %+v", stored)
			}
			// the probe never stays behind
			if recs := e.cf.Records(testZone); len(recs) != 0 {
				t.Fatalf("probe records left in Cloudflare: %+v", recs)
			}
			if recs, _ := e.svc.Records(t.Context(), p.ID); len(recs) != 0 {
				t.Fatalf("probe records left in the store: %d", len(recs))
			}
			entries, _, _ := e.st.Audit().List(t.Context(), storage.AuditFilter{Action: "dns_provider.verify"}, storage.Page{})
			if len(entries) != 1 || entries[0].Target != p.ID {
				t.Fatalf("verify audit entries: %+v", entries)
			}
		})
	}
}

// Retry-After from a rate limit is honoured (up to RetryMax), and between
// other retries the back-off doubles (with jitter).
func TestCloudflareRetryWaits(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var waits []time.Duration
	record := func(o *Options) {
		o.RetryBase, o.RetryMax = 100*time.Millisecond, 10*time.Second
		o.Sleep = func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			waits = append(waits, d)
			return ctx.Err()
		}
	}
	e := newEnv(t, record)
	p := e.cloudflare("cf", nil)
	e.cf.FailNext(1, acmetest.RateLimitFault(3*time.Second))
	e.cf.FailNext(1, acmetest.RateLimitFault(time.Minute))
	e.cf.FailNext(2, acmetest.EdgeErrorFault(http.StatusGatewayTimeout))
	rec, err := e.svc.Present(t.Context(), p.ID, "wf", "_acme-challenge.example.test", "value-1")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := append([]time.Duration(nil), waits...)
	mu.Unlock()
	// a Retry-After is taken as given (capped), a back-off gets up to a
	// fifth of jitter on top
	want := []struct{ min, max time.Duration }{
		{3 * time.Second, 3 * time.Second},
		{10 * time.Second, 10 * time.Second},
		{400 * time.Millisecond, 480 * time.Millisecond},
		{800 * time.Millisecond, 960 * time.Millisecond},
	}
	if len(got) != len(want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	for i := range want {
		if got[i] < want[i].min || got[i] > want[i].max {
			t.Fatalf("wait %d is %v, want within %v", i, got[i], want[i])
		}
	}
	if err := e.svc.CleanUp(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

// The record's identity is stored before the provider is asked to publish
// it, and forgotten only once it is removed.
func TestPresentStoresBeforePublishing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.cloudflare("cf", nil)
	seen := make(chan []*storage.ChallengeRecord, 1)
	e.cf.SetFaultHook(func(r *http.Request) *acmetest.Fault {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/dns_records") {
			recs, _ := e.st.DNSProviders().WorkflowRecords(context.Background(), "wf_42")
			seen <- recs
		}
		return nil
	})
	rec, err := e.svc.Present(t.Context(), p.ID, "wf_42", "_acme-challenge.WWW.example.test.", "token-value")
	if err != nil {
		t.Fatal(err)
	}
	before := <-seen
	if len(before) != 1 || before[0].ID != rec.ID || before[0].Name != "_acme-challenge.www" || before[0].Zone != testZone ||
		!before[0].PublishedAt.IsZero() {
		t.Fatalf("stored before publishing: %+v", before)
	}
	after, _ := e.st.DNSProviders().GetRecord(t.Context(), rec.ID)
	if after.PublishedAt.IsZero() {
		t.Fatal("published record not marked published")
	}
	if err := e.dns.WaitTXT(t.Context(), "_acme-challenge.www.example.test", "token-value"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.CleanUp(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.CleanUp(t.Context(), rec); err != nil { // twice: already gone
		t.Fatalf("second cleanup: %v", err)
	}
	if len(e.cf.Records(testZone)) != 0 || len(e.dns.TXT("_acme-challenge.www.example.test")) != 0 {
		t.Fatal("record still published after cleanup")
	}
	if _, err := e.st.DNSProviders().GetRecord(t.Context(), rec.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("record still stored after cleanup: %v", err)
	}
}

func TestPresentRefusesOutsideZones(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.cloudflare("cf", nil)
	tests := []struct{ name, fqdn string }{
		{"other zone", "_acme-challenge.other.test"},
		{"suffix but not a subdomain", "_acme-challenge.notexample.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := e.svc.Present(t.Context(), p.ID, "wf", tc.fqdn, "v")
			if !errors.Is(err, ErrOutsideZones) || rec != nil || !strings.Contains(err.Error(), `DNS provider "cf" (example.test)`) {
				t.Fatalf("got %v, %v", rec, err)
			}
		})
	}
	if recs, _ := e.svc.Records(t.Context(), p.ID); len(recs) != 0 {
		t.Fatalf("refused records stored: %d", len(recs))
	}
	if e.cf.RequestCount("") != 0 {
		t.Fatal("Cloudflare called for a refused name")
	}
}

// Partial failures: whatever happens, what was published gets removed.
func TestPartialFailuresStillCleanUp(t *testing.T) {
	t.Parallel()
	const name = "_acme-challenge.example.test"
	t.Run("answer lost after the write, then retried", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		e.cf.FailNext(1, acmetest.Fault{Endpoint: acmetest.EndpointCreateRecord, Status: 500, AfterCommit: true})
		rec, err := e.svc.Present(t.Context(), p.ID, "wf", name, "v1")
		if err != nil {
			t.Fatalf("retry after a lost answer: %v", err)
		}
		if n := len(e.cf.Records(testZone)); n != 1 {
			t.Fatalf("%d records in Cloudflare, want 1", n)
		}
		if err := e.svc.CleanUp(t.Context(), rec); err != nil || len(e.cf.Records(testZone)) != 0 {
			t.Fatalf("cleanup: %v", err)
		}
	})
	t.Run("answer lost after the write, no retries", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, func(o *Options) { o.Retries = -1 })
		p := e.cloudflare("cf", nil)
		e.cf.FailNext(1, acmetest.Fault{Endpoint: acmetest.EndpointCreateRecord, Status: 502, AfterCommit: true,
			Body: "<html>502</html>"})
		rec, err := e.svc.Present(t.Context(), p.ID, "wf", name, "v1")
		if !errors.Is(err, ErrUnavailable) || rec == nil {
			t.Fatalf("got %v, %v", rec, err)
		}
		if n := len(e.cf.Records(testZone)); n != 1 {
			t.Fatalf("%d records in Cloudflare, want the one whose answer was lost", n)
		}
		if err := e.svc.CleanUpWorkflow(t.Context(), "wf"); err != nil {
			t.Fatal(err)
		}
		if n := len(e.cf.Records(testZone)); n != 0 {
			t.Fatalf("%d records left", n)
		}
	})
	t.Run("second record of an order fails", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		if _, err := e.svc.Present(t.Context(), p.ID, "wf", name, "apex"); err != nil {
			t.Fatal(err)
		}
		e.cf.FailNext(1, acmetest.Fault{Endpoint: acmetest.EndpointCreateRecord, Status: 403, Code: acmetest.CFCodeUnauthorized,
			Message: acmetest.CFMessageUnauthorized})
		if _, err := e.svc.Present(t.Context(), p.ID, "wf", "_acme-challenge.www.example.test", "www"); !errors.Is(err, ErrPermission) {
			t.Fatalf("second present: %v", err)
		}
		if err := e.svc.CleanUpWorkflow(t.Context(), "wf"); err != nil {
			t.Fatal(err)
		}
		if n := len(e.cf.Records(testZone)); n != 0 {
			t.Fatalf("%d records left", n)
		}
		if recs, _ := e.st.DNSProviders().WorkflowRecords(t.Context(), "wf"); len(recs) != 0 {
			t.Fatalf("%d records still stored", len(recs))
		}
	})
	t.Run("removal fails, kept for later", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		rec, err := e.svc.Present(t.Context(), p.ID, "wf", name, "v1")
		if err != nil {
			t.Fatal(err)
		}
		e.cf.FailNext(1, acmetest.Fault{Endpoint: acmetest.EndpointDeleteRecord, Status: 403, Code: acmetest.CFCodeUnauthorized,
			Message: acmetest.CFMessageUnauthorized})
		err = e.svc.CleanUp(t.Context(), rec)
		if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "removing TXT _acme-challenge.example.test from zone example.test") {
			t.Fatalf("failed removal: %v", err)
		}
		kept, err := e.st.DNSProviders().GetRecord(t.Context(), rec.ID)
		if err != nil || kept.CleanupAttempts != 1 || !strings.Contains(kept.LastError, "lacks a permission") {
			t.Fatalf("kept record: %v %+v", err, kept)
		}
		if err := e.svc.CleanUp(t.Context(), kept); err != nil {
			t.Fatal(err)
		}
		if n := len(e.cf.Records(testZone)); n != 0 {
			t.Fatalf("%d records left", n)
		}
	})
	t.Run("zone not in the account", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", func(c *Config) { c.Zones = []string{testZone, "other.test"} })
		rec, err := e.svc.Present(t.Context(), p.ID, "wf", "_acme-challenge.other.test", "v1")
		if !errors.Is(err, ErrZoneNotFound) || rec == nil || !strings.Contains(err.Error(), "zone other.test is not in this Cloudflare account") {
			t.Fatalf("got %v", err)
		}
		if err := e.svc.CleanUpWorkflow(t.Context(), "wf"); !errors.Is(err, ErrZoneNotFound) {
			t.Fatalf("cleanup: %v", err)
		}
	})
	t.Run("bad credentials", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		p := e.cloudflare("cf", nil)
		e.cf.RevokeToken(cfToken)
		rec, err := e.svc.Present(t.Context(), p.ID, "wf", name, "v1")
		if !errors.Is(err, ErrInvalidCredentials) || rec == nil {
			t.Fatalf("got %v", err)
		}
		noSecret(t, "error", err.Error(), cfToken)
		noSecret(t, "logs", logText(e.logs), cfToken)
		// cleanup with the same bad token fails, and counts it
		if err := e.svc.CleanUp(t.Context(), rec); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("cleanup: %v", err)
		}
	})
}

// The janitor removes only what CertLocker stored, older than the age.
func TestJanitorRemovesOnlyItsOwnStaleRecords(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{}
	e := newEnv(t, withClock(clock))
	p := e.cloudflare("cf", nil)
	ctx := t.Context()
	const name = "_acme-challenge.www.example.test"

	start := time.Date(2026, 5, 20, 11, 0, 0, 0, time.UTC)
	clock.Set(start)
	stale, err := e.svc.Present(ctx, p.ID, "wf_old", name, "stale-value")
	if err != nil {
		t.Fatal(err)
	}
	clock.Set(start.Add(90 * time.Minute))
	fresh, err := e.svc.Present(ctx, p.ID, "wf_new", name, "fresh-value")
	if err != nil {
		t.Fatal(err)
	}
	// records CertLocker did not create: same name in Cloudflare, and
	// directly on the DNS server
	foreign, err := e.cf.AddRecord(testZone, "TXT", "_acme-challenge.www", `"someone-else"`)
	if err != nil {
		t.Fatal(err)
	}
	e.dns.AddTXT(name, "manual")

	res, err := e.svc.Janitor(ctx, time.Hour)
	if err != nil || res.Removed != 1 || res.Failed != 0 {
		t.Fatalf("janitor: %+v %v", res, err)
	}
	var contents []string
	for _, r := range e.cf.Records(testZone) {
		contents = append(contents, r.Content)
	}
	if strings.Join(contents, ",") != `"fresh-value",`+foreign.Content {
		t.Fatalf("records after the janitor: %v", contents)
	}
	txt := e.dns.TXT(name)
	if len(txt) != 3 || strings.Contains(strings.Join(txt, ","), "stale-value") {
		t.Fatalf("DNS after the janitor: %v", txt)
	}
	if _, err := e.st.DNSProviders().GetRecord(ctx, stale.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal("stale record still stored")
	}
	// an hour later, the fresh one is stale too
	clock.Set(start.Add(3 * time.Hour))
	if res, err := e.svc.Janitor(ctx, time.Hour); err != nil || res.Removed != 1 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	if _, err := e.st.DNSProviders().GetRecord(ctx, fresh.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal("fresh record not removed once stale")
	}
	if recs := e.cf.Records(testZone); len(recs) != 1 || recs[0].ID != foreign.ID {
		t.Fatalf("the janitor touched a record it did not create: %+v", recs)
	}
}

// A node that dies between publishing and cleaning up leaves a stored
// record; after the restart it is removed (by the engine through
// CleanUpWorkflow, or by the janitor).
func TestRestartRemovesLeftovers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.cloudflare("cf", nil)
	for _, n := range []string{"_acme-challenge.a.example.test", "_acme-challenge.b.example.test"} {
		if _, err := e.svc.Present(t.Context(), p.ID, "wf_crash", n, "v-"+n); err != nil {
			t.Fatal(err)
		}
	}
	e.svc = nil // the node is gone; its memory with it

	restarted := e.newService()
	if err := restarted.CleanUpWorkflow(t.Context(), "wf_crash"); err != nil {
		t.Fatal(err)
	}
	if n := len(e.cf.Records(testZone)); n != 0 {
		t.Fatalf("%d records left after the restart", n)
	}
	if recs, _ := e.st.DNSProviders().WorkflowRecords(t.Context(), "wf_crash"); len(recs) != 0 {
		t.Fatalf("%d records still stored", len(recs))
	}
}
