package workflow_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// stopAfterFinalize runs node A until the CA has accepted its CSR, and
// stops it right then, before it persists anything about the answer
// (the process dies with the request done).
func stopAfterFinalize(t *testing.T, e *env, req workflow.Request) *storage.Workflow {
	t.Helper()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	e.clients.mu.Lock()
	e.clients.afterFinalize = func() error { stop(); return errors.New("node A stopped") }
	e.clients.mu.Unlock()
	a, _ := e.engine("node-a", nil)
	w, err := a.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	_ = a.RunDue(ctx) // ends with ctx's error
	e.clients.mu.Lock()
	e.clients.afterFinalize = nil
	e.clients.mu.Unlock()
	if n := e.clients.finalizes.Load(); n != 1 {
		t.Fatalf("node A sent %d finalize requests, want 1", n)
	}
	if w = get(t, e.store, w.ID); w.State != storage.StateFinalizing {
		t.Fatalf("node A stopped in %s: %s", w.State, w.Status)
	}
	return w
}

// takeOver runs node B and checks the order was issued without a second
// CSR: exactly one finalize request and one certificate.
func takeOver(t *testing.T, e *env, w *storage.Workflow, bopts func(*workflow.Options)) {
	t.Helper()
	later := func() time.Time { return time.Now().Add(10 * time.Minute) }
	_, opts := e.engine("node-b", later)
	if bopts != nil {
		bopts(&opts)
	}
	run(t, e.newEngine(opts))
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued {
		t.Fatalf("after takeover: %s: %s", w.State, w.Status)
	}
	if n := e.clients.finalizes.Load(); n != 1 {
		t.Fatalf("%d finalize requests in all, want 1: a resumed order is polled, never finalized again", n)
	}
	certs, _, err := e.store.Certificates().List(t.Context(), storage.CertificateFilter{Domain: w.Identifiers[0].Value}, storage.Page{})
	if err != nil || len(certs) != 1 || certs[0].ID != w.CertificateID {
		t.Fatalf("%d certificates, want 1 (%v)", len(certs), err)
	}
	if workflow.DecodeOrders(w) != 1 {
		t.Fatalf("%d orders, want 1", workflow.DecodeOrders(w))
	}
}

// Pebble finalizes asynchronously: node B finds the order processing
// (Pebble holds it there until node B has seen it so) and polls it.
func TestResumeProcessingOrderPebble(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	release := e.pebble.HoldIssuance()
	w := stopAfterFinalize(t, e, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("fin")}}})
	var once sync.Once
	// if node B sends a CSR again, let the CA issue anyway: the count of
	// finalize requests is what fails
	e.clients.afterFinalize = func() error { once.Do(release); return nil }
	takeOver(t, e, w, func(o *workflow.Options) {
		o.SetAfterPersist(func(_ *storage.Workflow, ev *storage.WorkflowEvent) error {
			if ev.Step == "finalizing" && strings.Contains(ev.Message, "the CA is issuing") {
				once.Do(release)
			}
			return nil
		})
	})
}

// Caddy's acme_server (smallstep) finalizes synchronously and answers an
// empty CSR with malformed: node B must find the order valid and download
// it, never finalize again.
func TestResumeAfterFinalizeSmallstep(t *testing.T) {
	e := newSmallstepEnv(t)
	w := stopAfterFinalize(t, e, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{
		{Value: "fin." + zone, Challenge: "dns-01", DNSProviderID: "dns_test"}}})
	takeOver(t, e, w, nil)
	// what a second, empty finalize would have met
	cl, acct, err := e.clients.Client(t.Context(), e.issuer.ID)
	if err != nil {
		t.Fatal(err)
	}
	w = get(t, e.store, w.ID)
	order, err := cl.GetOrder(t.Context(), acct, acme.Order{Location: w.OrderURL})
	if err != nil {
		t.Fatal(err)
	}
	var p acme.Problem
	if _, err := cl.FinalizeOrder(t.Context(), acct, order, nil); !errors.As(err, &p) || !strings.HasSuffix(p.Type, ":malformed") {
		t.Fatalf("smallstep answered an empty CSR with %v, expected malformed", err)
	}
}

// A CA that answers the finalize with processing (Pebble issues
// asynchronously; held here until the engine says so) is polled by the
// engine itself, on its own pace (first poll after 20 ms, doubling, or the
// CA's Retry-After), not by the ACME library's fixed interval: the engine
// persists that the CA accepted the CSR before it polls, so a node that
// dies while the CA issues is taken over without a second CSR.
func TestFinalizeProcessingPolledByEngine(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	release := e.pebble.HoldIssuance()
	_, opts := e.engine("node-a", nil)
	var accepted atomic.Bool
	opts.SetAfterPersist(func(w *storage.Workflow, ev *storage.WorkflowEvent) error {
		if ev.Step == "finalizing" && strings.Contains(ev.Message, "the CA accepted the CSR") {
			if !workflow.FinalizeRequested(w) {
				t.Errorf("the event says the CA accepted the CSR, the data does not")
			}
			accepted.Store(true)
			release()
		}
		return nil
	})
	eng := e.newEngine(opts)
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("proc")}}})
	if err != nil {
		t.Fatal(err)
	}
	// with the library polling, the held order never ends before its
	// five-minute poll timeout: bound the run well below it
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := eng.RunDue(ctx); err != nil {
		t.Fatalf("running: %v (the accepted CSR was never persisted)", err)
	}
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued || !accepted.Load() {
		t.Fatalf("%s: %s (accepted event seen: %v)", w.State, w.Status, accepted.Load())
	}
	if n := e.clients.finalizes.Load(); n != 1 {
		t.Fatalf("%d finalize requests, want 1", n)
	}
}
