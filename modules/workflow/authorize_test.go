package workflow_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// publishTogether holds every TXT record at the DNS stand-in until n of
// them were added, then serves them all at once: an order whose records
// are presented one identifier at a time, each waiting for its own to be
// served, never gets there. It reports how many were held when it gave up.
func publishTogether(t *testing.T, e *env, n int) (held func() int) {
	t.Helper()
	var mu sync.Mutex
	var gates []chan struct{}
	all := make(chan struct{})
	e.dns.SetPublishDelay(func(name, value string) <-chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		ch := make(chan struct{})
		gates = append(gates, ch)
		if len(gates) == n {
			close(all)
		}
		return ch
	})
	count := -1
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-all:
		case <-time.After(20 * time.Second): // a guard, not a wait the test relies on
		case <-t.Context().Done():
		}
		mu.Lock()
		defer mu.Unlock()
		count = len(gates)
		for _, g := range gates {
			close(g)
		}
		e.dns.SetPublishDelay(nil)
	}()
	return func() int { <-done; return count }
}

// dnsNames creates n dns-01 identifiers under the zone.
func dnsNames(prefix string, n int) []storage.Identifier {
	var ids []storage.Identifier
	for i := range n {
		ids = append(ids, storage.Identifier{Value: fmt.Sprintf("%s%d.%s", prefix, i, zone), Challenge: "dns-01", DNSProviderID: "dns_test"})
	}
	return ids
}

// A multi-name dns-01 order presents every record before waiting for any,
// waits for their propagation together, and each authorization keeps its
// own timeline.
func TestAuthorizationsTogether(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	const n = 4
	held := publishTogether(t, e, n)
	eng, _ := e.engine("node-a", nil)
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: dnsNames("t", n)})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	if got := held(); got != n {
		t.Errorf("%d of %d records were presented before the first was served", got, n)
	}
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued {
		t.Fatalf("workflow %s: %s", w.State, w.Status)
	}
	evs, err := e.store.Workflows().Events(t.Context(), w.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// every propagation wait began (record published) before any ended
	lastPublished, firstServed := -1, len(evs)
	steps := map[string][]string{}
	for i, ev := range evs {
		if ev.Identifier == "" {
			continue
		}
		steps[ev.Identifier] = append(steps[ev.Identifier], ev.Step+": "+ev.Message)
		switch {
		case ev.Step == workflow.StepPropagating && strings.Contains(ev.Message, "published"):
			lastPublished = max(lastPublished, i)
		case ev.Step == workflow.StepValidating && strings.Contains(ev.Message, "served by every authoritative nameserver"):
			firstServed = min(firstServed, i)
		}
	}
	if lastPublished < 0 || firstServed == len(evs) || lastPublished > firstServed {
		t.Fatalf("propagation waits did not overlap: last record published at event %d, first served at event %d", lastPublished, firstServed)
	}
	for _, id := range w.Identifiers {
		got := strings.Join(steps[id.Value], " | ")
		for _, want := range []string{"presenting: presenting the dns-01 challenge", "propagating: TXT record", "validating: record",
			"validating: asked the CA to validate", "valid: validated by the CA"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: no %q on its timeline: %s", id.Value, want, got)
			}
		}
	}
	if c := e.cf.RequestCount(acmetest.EndpointCreateRecord); c != n {
		t.Errorf("%d records created at the DNS provider, want %d", c, n)
	}
	if c := e.cf.RequestCount(acmetest.EndpointDeleteRecord); c != n {
		t.Errorf("%d records deleted at the DNS provider, want %d", c, n)
	}
}

// A crash in the middle of each concurrent phase (one authorization's
// step persisted, the others' in flight): another node resumes the same
// order, publishes nothing again and issues.
func TestCrashWhileAuthorizingTogether(t *testing.T) {
	cases := []struct {
		name string
		at   func(ev *storage.WorkflowEvent) bool
		// together holds the records until all are presented, so the
		// crash comes while every propagation wait is in flight
		together bool
	}{
		{"propagating", func(ev *storage.WorkflowEvent) bool {
			return ev.Step == workflow.StepValidating && strings.Contains(ev.Message, "served by every authoritative nameserver")
		}, true},
		{"asking the CA", func(ev *storage.WorkflowEvent) bool {
			return ev.Step == workflow.StepValidating && ev.Message == "asked the CA to validate"
		}, false},
		{"polling", func(ev *storage.WorkflowEvent) bool { return ev.Step == workflow.StepValid }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, acmetest.PebbleOptions{})
			const n = 3
			held := func() int { return n }
			if c.together {
				held = publishTogether(t, e, n)
			}
			_, aopts := e.engine("node-a", nil)
			var crashed sync.Once
			crashedAt := ""
			aopts.SetAfterPersist(func(w *storage.Workflow, ev *storage.WorkflowEvent) error {
				var err error
				if c.at(ev) {
					crashed.Do(func() { crashedAt, err = ev.Identifier, workflow.ErrCrash })
				}
				return err
			})
			a := e.newEngine(aopts)
			w, err := a.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: dnsNames("x", n)})
			if err != nil {
				t.Fatal(err)
			}
			run(t, a)
			if held() != n || crashedAt == "" {
				t.Fatalf("never crashed while authorizing (%d records held)", held())
			}
			if mid := get(t, e.store, w.ID); mid.State != storage.StateAuthorizing {
				t.Fatalf("crashed in %s", mid.State)
			}
			ordersBefore := e.clients.newOrders.Load()
			later := func() time.Time { return time.Now().Add(10 * time.Minute) }
			b, _ := e.engine("node-b", later)
			run(t, b)
			w = get(t, e.store, w.ID)
			if w.State != storage.StateIssued {
				t.Fatalf("crashed after %s's step; after takeover: %s: %s", crashedAt, w.State, w.Status)
			}
			if o := e.clients.newOrders.Load() - ordersBefore; o != 0 || workflow.DecodeOrders(w) != 1 {
				t.Fatalf("%d new orders on takeover, %d in all, want the same order resumed", o, workflow.DecodeOrders(w))
			}
			if got := e.cf.RequestCount(acmetest.EndpointCreateRecord); got != n {
				t.Errorf("%d records created at the DNS provider, want %d (none again after the crash)", got, n)
			}
			if recs, _ := e.store.DNSProviders().ListRecords(t.Context(), "", time.Time{}); len(recs) != 0 {
				t.Fatalf("%d challenge records left", len(recs))
			}
			certs, _, err := e.store.Certificates().List(t.Context(), storage.CertificateFilter{Domain: w.Identifiers[0].Value}, storage.Page{})
			if err != nil || len(certs) != 1 {
				t.Fatalf("%d certificates, want 1 (%v)", len(certs), err)
			}
		})
	}
}
