package workflow_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

func run(t *testing.T, eng *workflow.Engine) {
	t.Helper()
	if err := eng.RunDue(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, st storage.Store, id string) *storage.Workflow {
	t.Helper()
	w, err := st.Workflows().Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// dns-01 for a wildcard and its apex, http-01 for www, in one order.
func TestIssueMixedChallenges(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	www := e.name("www")
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{
		{Value: "*.example.test", Challenge: "dns-01", DNSProviderID: "dns_test"},
		{Value: "example.test", Challenge: "dns-01", DNSProviderID: "dns_test"},
		{Value: www, Challenge: "http-01"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued || w.CertificateID == "" {
		t.Fatalf("workflow %s: %s", w.State, w.Status)
	}
	x := leaf(t, e.store, w.CertificateID)
	slices.Sort(x.DNSNames)
	if !slices.Equal(x.DNSNames, []string{"*.example.test", "example.test", "www.example.test"}) {
		t.Fatalf("certificate names %v", x.DNSNames)
	}
	// every step is on the timeline, in order, with the node
	evs, err := e.store.Workflows().Events(t.Context(), w.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, ev := range evs {
		if ev.Node != "node-a" {
			t.Fatalf("event without node: %+v", ev)
		}
		if len(states) == 0 || states[len(states)-1] != ev.State {
			states = append(states, ev.State)
		}
	}
	want := []string{"pending", "ordering", "authorizing", "finalizing", "downloading", "issued"}
	if !slices.Equal(states, want) {
		t.Fatalf("timeline states %v, want %v", states, want)
	}
	steps := map[string]int{}
	for _, ev := range evs {
		steps[ev.Step]++
	}
	for _, s := range []string{"presenting", "propagating", "validating", "valid"} {
		if steps[s] == 0 {
			t.Errorf("no %s step on the timeline", s)
		}
	}
	// nothing left published
	if recs, _ := e.store.DNSProviders().ListRecords(t.Context(), "", time.Time{}); len(recs) != 0 {
		t.Fatalf("%d challenge records left", len(recs))
	}
	if txt := e.dns.TXT("_acme-challenge.example.test"); len(txt) != 0 {
		t.Fatalf("TXT records left in DNS: %v", txt)
	}
	if kv, _ := e.store.ACME().List(t.Context(), workflow.HTTP01Bucket); len(kv) != 0 {
		t.Fatalf("%d http-01 responses left", len(kv))
	}
}

// A challenge the CA rejects: failed, with the CA's problem verbatim.
func TestChallengeRejectedByCA(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	// no address record: the CA cannot reach the name for http-01
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID,
		Identifiers: []storage.Identifier{{Value: "nowhere.example.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateFailed {
		t.Fatalf("state %s: %s", w.State, w.Status)
	}
	evs, _ := e.store.Workflows().Events(t.Context(), w.ID, 0, 0)
	last := evs[len(evs)-1]
	var p struct{ Type, Detail string }
	if err := json.Unmarshal(last.Problem, &p); err != nil || !strings.HasPrefix(p.Type, "urn:ietf:params:acme:error:") || p.Detail == "" {
		t.Fatalf("last event has no CA problem: %s (%v)", last.Problem, err)
	}
	if !strings.Contains(w.Status, p.Detail) {
		t.Fatalf("status %q does not show the CA's detail %q", w.Status, p.Detail)
	}
	if kv, _ := e.store.ACME().List(t.Context(), workflow.HTTP01Bucket); len(kv) != 0 {
		t.Fatal("the failed workflow left its http-01 response")
	}
}

// Pebble rejecting 30% of nonces: every order still completes.
func TestNonceRejection(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{NonceRejectPercent: 30})
	eng, _ := e.engine("node-a", nil)
	var ids []string
	for i := 0; i < 8; i++ {
		w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID,
			Identifiers: []storage.Identifier{{Value: e.name(fmt.Sprintf("n%d", i))}}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, w.ID)
	}
	run(t, eng)
	for _, id := range ids {
		if w := get(t, e.store, id); w.State != storage.StateIssued {
			t.Errorf("workflow %s: %s: %s", id, w.State, w.Status)
		}
	}
}

// The engine stops after each persisted transition (and after claiming a
// certificate's successor) as if the process died; another node takes the
// work over once the lease expires and completes it: exactly one
// certificate, exactly one order at the CA, nothing of the workflow's left
// published. Crashed in: a plain order (http-01, and dns-01 through the real
// DNS provider store and the Cloudflare API stand-in), a retry after the CA
// refused the order, a fallback to another ACME client, a renewal and a
// migration (each from its claim on).
func TestCrashAtEveryState(t *testing.T) {
	// one-day certificates: a renewal is due within the day Pebble keeps an
	// order, so node clocks stay inside the CA's order lifetimes
	e := newEnv(t, acmetest.PebbleOptions{Profiles: map[string]acmetest.Profile{"day": {Validity: 24 * time.Hour}}})
	cp, clients := e.throughProxy(t)
	dns, provID := realDNS(t, e, "node-a")
	newIssuer := func(name string) *storage.Issuer {
		iss := &storage.Issuer{Name: name, DirectoryURL: cp.DirectoryURL()}
		if err := e.store.Issuers().Create(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		return iss
	}
	dead, src, dst := newIssuer("dead"), newIssuer("migrate-from"), newIssuer("migrate-to")
	clients.deactivate(t, dead.ID)
	engine := func(node string, clock func() time.Time, edit func(*workflow.Options)) *workflow.Engine {
		_, o := e.engine(node, clock)
		if edit != nil {
			edit(&o)
		}
		return e.engineWith(t, o, clients, dns)
	}
	prep := engine("prep", nil, nil)

	// work is one case's names and, for renewals and migrations, the
	// certificate replaced
	type work struct {
		name, dnsName string
		cert          *storage.Certificate
	}
	request := func(wk work, issuerID string) workflow.Request {
		return workflow.Request{IssuerID: issuerID, Identifiers: []storage.Identifier{
			{Value: wk.name, Challenge: "http-01"}, {Value: wk.dnsName, Challenge: "dns-01", DNSProviderID: provID}}}
	}
	issued := func(t *testing.T, wk work, issuerID string) work {
		t.Helper()
		w, err := prep.Create(t.Context(), request(wk, issuerID))
		if err != nil {
			t.Fatal(err)
		}
		run(t, prep)
		if w = get(t, e.store, w.ID); w.State != storage.StateIssued {
			t.Fatalf("preparing: %s: %s", w.State, w.Status)
		}
		if wk.cert, err = e.store.Certificates().Get(t.Context(), w.CertificateID); err != nil {
			t.Fatal(err)
		}
		return wk
	}
	// retireOthers revokes every other active certificate, so a renewal
	// scan sees only this case's
	retireOthers := func(t *testing.T, keep string) {
		t.Helper()
		certs, _, err := e.store.Certificates().List(t.Context(), storage.CertificateFilter{Status: storage.CertStatusActive}, storage.Page{Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range certs {
			if c.ID != keep {
				c.Status = storage.CertStatusRevoked
				if err := e.store.Certificates().Update(t.Context(), c); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	successor := func(t *testing.T, certID string) string {
		t.Helper()
		ws, _, err := e.store.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		id := ""
		for _, w := range ws {
			if w.PreviousCertificateID == certID {
				if id != "" {
					t.Fatalf("two successors of %s: %s and %s", certID, id, w.ID)
				}
				id = w.ID
			}
		}
		return id
	}
	late := func(wk work) time.Time {
		return wk.cert.NotBefore.Add(wk.cert.NotAfter.Sub(wk.cert.NotBefore) * 9 / 10)
	}

	type crashCase struct {
		// setup prepares the case's work
		setup func(t *testing.T, wk work) work
		// clock is node A's (nil: the wall clock)
		clock func(wk work) time.Time
		// start begins the work on a node; it returns the workflow to
		// follow, "" if the node crashed before creating it
		start func(t *testing.T, eng *workflow.Engine, wk work) string
		// claims: the case claims a certificate's successor
		claims bool
		// via is a state/step its clean run must pass through
		via string
		// replaces: the successor's order names the replaced certificate
		replaces bool
	}
	cases := map[string]crashCase{
		"order": {
			start: func(t *testing.T, eng *workflow.Engine, wk work) string {
				w, err := eng.Create(t.Context(), request(wk, e.issuer.ID))
				if err != nil {
					t.Fatal(err)
				}
				return w.ID
			},
		},
		"retry": {
			start: func(t *testing.T, eng *workflow.Engine, wk work) string {
				// a 5xx would be retried inside acmez; a rate limit without
				// Retry-After comes back to the engine's retry policy
				cp.failNewOrder(wk.name, orderFault{Status: http.StatusTooManyRequests, ProblemType: "urn:ietf:params:acme:error:rateLimited",
					Detail: "too many new orders recently"})
				w, err := eng.Create(t.Context(), request(wk, e.issuer.ID))
				if err != nil {
					t.Fatal(err)
				}
				return w.ID
			},
			via: storage.StateRetryScheduled + "/ordering",
		},
		"fallback": {
			start: func(t *testing.T, eng *workflow.Engine, wk work) string {
				req := request(wk, dead.ID)
				req.FallbackIssuerIDs = []string{e.issuer.ID}
				w, err := eng.Create(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				return w.ID
			},
			via: storage.StateRetryScheduled + "/ordering",
		},
		"renewal": {
			setup: func(t *testing.T, wk work) work {
				wk = issued(t, wk, e.issuer.ID)
				retireOthers(t, wk.cert.ID)
				return wk
			},
			clock: late,
			start: func(t *testing.T, eng *workflow.Engine, wk work) string {
				if _, err := eng.RenewDue(t.Context()); err != nil {
					t.Fatal(err)
				}
				return successor(t, wk.cert.ID)
			},
			claims:   true,
			replaces: true,
		},
		"migration": {
			setup: func(t *testing.T, wk work) work { return issued(t, wk, src.ID) },
			start: func(t *testing.T, eng *workflow.Engine, wk work) string {
				if _, err := eng.Migrate(t.Context(), workflow.Migration{FromIssuerID: src.ID, ToIssuerID: dst.ID, PerMinute: 6000}); err != nil {
					t.Fatal(err)
				}
				return successor(t, wk.cert.ID)
			},
			claims: true,
		},
	}

	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			seq := 0
			prepare := func(t *testing.T) work {
				seq++
				label := fmt.Sprintf("%s%02d", name, seq)
				wk := work{name: e.name(label), dnsName: e.name(label + "-dns")}
				if c.setup != nil {
					wk = c.setup(t, wk)
				}
				return wk
			}
			// node clocks run at the wall clock's pace (a retry a
			// nanosecond out comes due), from the case's start
			clockOf := func(wk work, d time.Duration) func() time.Time {
				if c.clock == nil {
					return func() time.Time { return time.Now().Add(d) }
				}
				t0, wall := c.clock(wk), time.Now()
				return func() time.Time { return t0.Add(d + time.Since(wall)) }
			}
			// a clean run counts the persists to crash after
			wk := prepare(t)
			persists := 0
			var steps []string
			clean := engine("node-a", clockOf(wk, 0), func(o *workflow.Options) {
				o.SetAfterPersist(func(w *storage.Workflow, ev *storage.WorkflowEvent) error {
					persists++
					steps = append(steps, w.State+"/"+ev.Step)
					return nil
				})
			})
			id := c.start(t, clean, wk)
			run(t, clean)
			if id == "" || get(t, e.store, id).State != storage.StateIssued || persists < 10 {
				t.Fatalf("clean run: workflow %q after %d persists", id, persists)
			}
			if c.via != "" && !slices.Contains(steps, c.via) {
				t.Fatalf("clean run never passed %s: %v", c.via, steps)
			}
			first := 1
			if c.claims {
				first = 0 // 0: crash right after the claim
			}
			for k := first; k <= persists; k++ {
				t.Run(fmt.Sprintf("crash_after_persist_%02d", k), func(t *testing.T) {
					var wk work
					var id, crashedAt string
					var ordersBefore int
					// Pebble reuses a valid authorization of the account now and
					// then (1% per identifier, even when told 0%), which makes a
					// renewal two persists per identifier shorter: a run that
					// ends issued before the k-th persist is tried again with
					// new names
					for try := 1; ; try++ {
						wk = prepare(t)
						ordersBefore = cp.created(wk.name)
						n := 0
						a := engine("node-a", clockOf(wk, 0), func(o *workflow.Options) {
							o.SetAfterClaim(func(certID, workflowID string) error {
								if k == 0 {
									crashedAt = "claim of " + certID
									return workflow.ErrCrash
								}
								return nil
							})
							o.SetAfterPersist(func(w *storage.Workflow, ev *storage.WorkflowEvent) error {
								if n++; n == k {
									crashedAt = w.State + "/" + ev.Step
									return workflow.ErrCrash
								}
								return nil
							})
						})
						if id = c.start(t, a, wk); id != "" {
							run(t, a)
						}
						if crashedAt != "" {
							break
						}
						if id == "" || get(t, e.store, id).State != storage.StateIssued || try == 3 {
							t.Fatalf("never crashed (%d persists)", n)
						}
						t.Logf("issued after %d persists without crashing (the CA reused an authorization); again", n)
					}
					t.Logf("crashed at %s", crashedAt)
					if k == 0 {
						if id != "" {
							t.Fatalf("crashed in the claim, yet workflow %s exists", id)
						}
						// the claim holds while its node might still create
						// the workflow, then another node takes it over
						if got := c.start(t, engine("node-b", clockOf(wk, time.Minute), nil), wk); got != "" {
							t.Fatalf("another node started %s while the claim was fresh", got)
						}
						if id = c.start(t, engine("node-b", clockOf(wk, workflow.ClaimStale+time.Minute), nil), wk); id == "" {
							t.Fatal("no node took over the stale claim")
						}
					}
					// node B, after node A's lease expired
					b := engine("node-b", clockOf(wk, workflow.ClaimStale+10*time.Minute), nil)
					run(t, b)
					w := get(t, e.store, id)
					if w.State != storage.StateIssued {
						t.Fatalf("crashed at %s; after takeover: %s: %s", crashedAt, w.State, w.Status)
					}
					certs, _, err := e.store.Certificates().List(t.Context(), storage.CertificateFilter{Domain: wk.name}, storage.Page{})
					if err != nil {
						t.Fatal(err)
					}
					mine := 0
					for _, x := range certs {
						if x.WorkflowID == w.ID {
							mine++
						}
					}
					wantCerts := 1
					if wk.cert != nil {
						wantCerts = 2 // the one replaced, and its successor
					}
					if mine != 1 || len(certs) != wantCerts {
						t.Fatalf("crashed at %s: %d certificates of the workflow (want 1), %d for the name (want %d)", crashedAt, mine, len(certs), wantCerts)
					}
					if orders := cp.created(wk.name) - ordersBefore; orders != 1 {
						t.Fatalf("crashed at %s: %d orders created at the CA, want exactly 1", crashedAt, orders)
					}
					if wk.cert != nil {
						if got := successor(t, wk.cert.ID); got != w.ID {
							t.Fatalf("crashed at %s: successor %s, want %s", crashedAt, got, w.ID)
						}
						old, _ := e.store.Certificates().Get(t.Context(), wk.cert.ID)
						if old.Status != storage.CertStatusRenewed || old.ReplacedBy != w.CertificateID {
							t.Fatalf("crashed at %s: replaced certificate %s, replaced by %q", crashedAt, old.Status, old.ReplacedBy)
						}
					}
					if c.replaces {
						ariID, _ := acme.ARIUniqueIdentifier(leaf(t, e.store, wk.cert.ID))
						sent := cp.sent(wk.name)
						if last := sent[len(sent)-1]; last.Status != http.StatusCreated || last.Replaces != ariID {
							t.Fatalf("crashed at %s: the successor's order %+v, want replaces %s", crashedAt, last, ariID)
						}
					}
					// nothing of this workflow left published
					if recs, err := e.store.DNSProviders().WorkflowRecords(t.Context(), w.ID); err != nil || len(recs) != 0 {
						t.Fatalf("crashed at %s: %d challenge records of the workflow left (%v)", crashedAt, len(recs), err)
					}
					if txt := e.dns.TXT("_acme-challenge." + wk.dnsName); len(txt) != 0 {
						t.Fatalf("crashed at %s: TXT left in DNS: %v", crashedAt, txt)
					}
					kv, _ := e.store.ACME().List(t.Context(), workflow.HTTP01Bucket)
					for _, v := range kv {
						if strings.Contains(string(v.Value), w.ID) {
							t.Fatalf("crashed at %s: http-01 response of the workflow left: %s", crashedAt, v.Value)
						}
					}
				})
			}
		})
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	t.Run("before it runs", func(t *testing.T) {
		eng, _ := e.engine("node-a", nil)
		w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("cx")}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.Cancel(t.Context(), w.ID, "operator"); err != nil {
			t.Fatal(err)
		}
		run(t, eng)
		if w = get(t, e.store, w.ID); w.State != storage.StateCancelled || w.OrderURL != "" {
			t.Fatalf("state %s order %q", w.State, w.OrderURL)
		}
		var inv *workflow.InvalidError
		if _, err := eng.Cancel(t.Context(), w.ID, "operator"); !errors.As(err, &inv) {
			t.Fatalf("cancelling a cancelled workflow: %v", err)
		}
	})
	t.Run("mid-flight", func(t *testing.T) {
		var eng *workflow.Engine
		var once sync.Once
		_, opts := e.engine("node-a", nil)
		opts.SetAfterPersist(func(w *storage.Workflow, ev *storage.WorkflowEvent) error {
			if ev.Step == workflow.StepPropagating {
				once.Do(func() {
					if _, err := eng.Cancel(t.Context(), w.ID, "operator"); err != nil {
						t.Error(err)
					}
				})
			}
			return nil
		})
		eng = e.newEngine(opts)
		w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{
			{Value: e.name("mid"), Challenge: "dns-01", DNSProviderID: "dns_test"}}})
		if err != nil {
			t.Fatal(err)
		}
		run(t, eng)
		if w = get(t, e.store, w.ID); w.State != storage.StateCancelled || w.CertificateID != "" {
			t.Fatalf("state %s cert %q", w.State, w.CertificateID)
		}
		if recs, _ := e.store.DNSProviders().ListRecords(t.Context(), "", time.Time{}); len(recs) != 0 {
			t.Fatalf("%d challenge records left after cancel", len(recs))
		}
		if txt := e.dns.TXT("_acme-challenge." + w.Identifiers[0].Value); len(txt) != 0 {
			t.Fatalf("TXT left in DNS after cancel: %v", txt)
		}
	})
}

func TestDNSProviderFailure(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	boom := errors.New("cloudflare: 403 Authentication error")
	e.pres.fail.Store(&boom)
	eng, _ := e.engine("node-a", nil)
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{
		{Value: e.name("broken"), Challenge: "dns-01", DNSProviderID: "dns_test"}}})
	if err != nil {
		t.Fatal(err)
	}
	// retries are due at once with this policy; each pass retries
	for i := 0; i < 5; i++ {
		run(t, eng)
	}
	w = get(t, e.store, w.ID)
	if w.State != storage.StateFailed || !strings.Contains(w.Status, "Authentication error") || w.Attempt != 3 {
		t.Fatalf("state %s attempt %d: %s", w.State, w.Attempt, w.Status)
	}
	evs, _ := e.store.Workflows().Events(t.Context(), w.ID, 0, 0)
	retries := 0
	for _, ev := range evs {
		if ev.State == storage.StateRetryScheduled {
			retries++
		}
	}
	if retries != 2 {
		t.Fatalf("%d retries on the timeline, want 2", retries)
	}
	// the operator fixes the provider and retries: it completes
	e.pres.fail.Store(nil)
	if _, err := eng.Retry(t.Context(), w.ID, "operator"); err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	if w = get(t, e.store, w.ID); w.State != storage.StateIssued {
		t.Fatalf("after retry: %s: %s", w.State, w.Status)
	}
}

func TestDeactivatedAccount(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.deactivateAccount(t)
	eng, _ := e.engine("node-a", nil)
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("deact")}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateFailed || !strings.Contains(w.Status, "unauthorized") {
		t.Fatalf("state %s: %s", w.State, w.Status)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	m := workflow.NewMetrics(e.store)
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := m.Register(reg); err != nil {
		t.Fatalf("registering twice: %v", err)
	}
	_, opts := e.engine("node-a", nil)
	opts.Metrics = m
	eng := e.newEngine(opts)
	for _, id := range []storage.Identifier{{Value: e.name("m1"), Challenge: "dns-01", DNSProviderID: "dns_test"}, {Value: "unresolvable.example.test"}} {
		if _, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{id}}); err != nil {
			t.Fatal(err)
		}
	}
	run(t, eng)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			switch {
			case m.GetHistogram() != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"certlocker_workflows/issued":                                1,
		"certlocker_workflows/failed":                                1,
		"certlocker_workflow_order_to_issued_seconds/" + e.issuer.ID: 1,
		"certlocker_workflow_dns_propagation_seconds":                1,
		"certlocker_workflow_ca_errors_total/connection":             1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

// An IP address identifier over http-01 (Pebble allows them).
func TestIssueIPAddress(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: "127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if w.Identifiers[0].Type != "ip" || w.Identifiers[0].Challenge != "http-01" {
		t.Fatalf("identifier %+v", w.Identifiers[0])
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued {
		t.Fatalf("workflow %s: %s", w.State, w.Status)
	}
	x := leaf(t, e.store, w.CertificateID)
	if len(x.IPAddresses) != 1 || x.IPAddresses[0].String() != "127.0.0.1" {
		t.Fatalf("certificate IPs %v", x.IPAddresses)
	}
}

// Two nodes on one store, one slot per ACME client each: the first node
// leases only what it can run now, so the second picks up the workflow the
// first has no slot for, while the first is busy with the other; and the
// first node's busy ACME client does not keep it from another's work.
func TestBusyIssuerLeftToOtherNodes(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	other := &storage.Issuer{Name: "other", DirectoryURL: e.pebble.DirectoryURL()}
	if err := e.store.Issuers().Create(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	// node A stops in its first persisted step of the first workflow it
	// runs, until released
	blocked, release := make(chan string, 1), make(chan struct{})
	var once sync.Once
	_, aopts := e.engine("node-a", nil)
	aopts.PerIssuerConcurrency = 1
	aopts.SetAfterPersist(func(w *storage.Workflow, ev *storage.WorkflowEvent) error {
		if w.IssuerID != e.issuer.ID {
			return nil
		}
		first := false
		once.Do(func() { first = true })
		if first {
			blocked <- w.ID
			<-release
		}
		return nil
	})
	a := e.newEngine(aopts)
	var ids []string
	for _, label := range []string{"busy1", "busy2"} {
		w, err := a.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name(label)}}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, w.ID)
	}
	third, err := a.Create(t.Context(), workflow.Request{IssuerID: other.ID, Identifiers: []storage.Identifier{{Value: e.name("busy3")}}})
	if err != nil {
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() { aDone <- a.RunDue(t.Context()) }()
	var held string
	select {
	case held = <-blocked:
	case err := <-aDone:
		t.Fatalf("node A returned before running anything: %v", err)
	}
	waiting := ids[0]
	if held == ids[0] {
		waiting = ids[1]
	}
	// node A is busy on the ACME client, but still runs the other client's
	// workflow to the end
	deadline := time.Now().Add(30 * time.Second)
	for get(t, e.store, third.ID).State != storage.StateIssued {
		if time.Now().After(deadline) {
			t.Fatalf("node A did not run the other ACME client's workflow while busy: %s", get(t, e.store, third.ID).State)
		}
		time.Sleep(10 * time.Millisecond) // polling the store with a deadline
	}
	if w := get(t, e.store, waiting); w.LeaseOwner != "" {
		t.Fatalf("node A holds the lease of %s, which it has no slot to run (owner %q)", waiting, w.LeaseOwner)
	}
	// node B takes the workflow node A cannot run now
	_, bopts := e.engine("node-b", nil)
	bopts.PerIssuerConcurrency = 1
	b := e.newEngine(bopts)
	run(t, b)
	w := get(t, e.store, waiting)
	if w.State != storage.StateIssued {
		t.Fatalf("node B left %s in %s: %s", waiting, w.State, w.Status)
	}
	evs, _ := e.store.Workflows().Events(t.Context(), waiting, 0, 0)
	for _, ev := range evs[1:] { // the first event is its creation on node A
		if ev.Node != "node-b" {
			t.Fatalf("%s: step %s ran on %s, want node-b", waiting, ev.Step, ev.Node)
		}
	}
	close(release)
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if w := get(t, e.store, held); w.State != storage.StateIssued {
		t.Fatalf("node A's workflow %s: %s", held, w.State)
	}
}

// The CA refuses the first newOrder with rateLimited and a Retry-After far
// longer than the back-off: the workflow waits exactly that long, with the
// CA's problem and Retry-After on its timeline, then orders again once and
// is issued.
func TestRateLimitedHonoursRetryAfter(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	cp, clients := e.throughProxy(t)
	name := e.name("limited")
	cp.failNewOrder(name, orderFault{Status: http.StatusTooManyRequests, ProblemType: "urn:ietf:params:acme:error:rateLimited",
		Detail: "too many new orders recently", RetryAfter: "3600"})
	t0 := time.Now()
	at := func(d time.Duration) workflow.Options {
		_, opts := e.engine("node-a", func() time.Time { return t0.Add(d) })
		return opts
	}
	eng := e.engineWith(t, at(0), clients, nil)
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: name}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	// the policy's back-off is a nanosecond: only the CA's hour explains it
	if w.State != storage.StateRetryScheduled || w.NextRunAt.Sub(t0.Add(time.Hour)).Abs() > time.Millisecond ||
		!strings.Contains(w.Status, "rateLimited") {
		t.Fatalf("state %s next run %v (want %v): %s", w.State, w.NextRunAt, t0.Add(time.Hour), w.Status)
	}
	evs, _ := e.store.Workflows().Events(t.Context(), w.ID, 0, 0)
	last := evs[len(evs)-1]
	var p struct{ Type string }
	if err := json.Unmarshal(last.Problem, &p); err != nil || p.Type != "urn:ietf:params:acme:error:rateLimited" || last.RetryAfter != time.Hour {
		t.Fatalf("timeline: problem %s retry after %v", last.Problem, last.RetryAfter)
	}
	// a second before the CA's time, nothing runs
	run(t, e.engineWith(t, at(time.Hour-time.Second), clients, nil))
	if w = get(t, e.store, w.ID); w.State != storage.StateRetryScheduled || len(cp.sent(name)) != 1 {
		t.Fatalf("before the Retry-After: %s, %d newOrder requests", w.State, len(cp.sent(name)))
	}
	run(t, e.engineWith(t, at(time.Hour), clients, nil))
	if w = get(t, e.store, w.ID); w.State != storage.StateIssued {
		t.Fatalf("after the Retry-After: %s: %s", w.State, w.Status)
	}
	if sent, created := len(cp.sent(name)), cp.created(name); sent != 2 || created != 1 {
		t.Fatalf("%d newOrder requests, %d orders created; want 2 and 1", sent, created)
	}
}

// The CA takes longer to validate than ValidationTimeout (its validator
// waits on the name's HTTP server): the engine stops waiting, schedules a
// retry saying why, and resumes polling the same authorization later.
func TestValidationTimeout(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	// slow.example.test resolves to 127.0.0.2, where the http-01 answer
	// comes only once released
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(e.pebble.HTTPPort())))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		if !workflow.ServeChallenge(e.store, nil, w, r) {
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	name := "slow." + zone
	e.dns.SetAddrs(name, netip.MustParseAddr("127.0.0.2"))

	t0 := time.Now()
	opts := func(d time.Duration) workflow.Options {
		_, o := e.engine("node-a", func() time.Time { return t0.Add(d) })
		o.ValidationTimeout = 200 * time.Millisecond
		o.Retry = workflow.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Hour, MaxDelay: time.Hour}
		return o
	}
	eng := e.newEngine(opts(0))
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: name}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateRetryScheduled || w.Attempt != 1 || !strings.Contains(w.Status, "waiting for the CA to validate") ||
		w.NextRunAt.Before(t0.Add(time.Hour)) {
		t.Fatalf("after the validation timeout: %s attempt %d next %v: %s", w.State, w.Attempt, w.NextRunAt, w.Status)
	}
	close(release)
	run(t, e.newEngine(opts(2*time.Hour)))
	if w = get(t, e.store, w.ID); w.State != storage.StateIssued {
		t.Fatalf("after the CA validated: %s: %s", w.State, w.Status)
	}
}

// Configure changes the running engine's tunables and nothing else.
func TestConfigure(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	_, opts := e.engine("node-a", nil)
	opts.Concurrency, opts.PerIssuerConcurrency = 2, 1
	eng := e.newEngine(opts)
	eng.Start()
	defer eng.Stop()
	if err := eng.Configure(workflow.Options{Node: "node-b"}); err == nil {
		t.Fatal("the node changed under a running engine")
	}
	if err := eng.Configure(workflow.Options{Store: newStoreFor(t)}); err == nil {
		t.Fatal("the store changed under a running engine")
	}
	if err := eng.Configure(workflow.Options{Concurrency: 5, PerIssuerConcurrency: 3, Retry: workflow.RetryPolicy{MaxAttempts: 2}}); err != nil {
		t.Fatal(err)
	}
	got := eng.Settings()
	if got.Concurrency != 5 || got.PerIssuerConcurrency != 3 || got.Retry.MaxAttempts != 2 || got.LeaseTTL != 2*time.Minute ||
		got.Node != "node-a" || got.Store != e.store {
		t.Fatalf("settings after Configure: %+v", got)
	}
	// the running engine works under the new settings
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("conf")}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for get(t, e.store, w.ID).State != storage.StateIssued {
		if time.Now().After(deadline) {
			t.Fatalf("not issued after Configure: %s", get(t, e.store, w.ID).State)
		}
		time.Sleep(10 * time.Millisecond) // polling the store with a deadline
	}
}

func newStoreFor(t *testing.T) storage.Store {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "other.db"), storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
