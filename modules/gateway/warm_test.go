package gateway_test

import (
	"context"
	"crypto/elliptic"
	"slices"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// waitTerminal waits (deadline, no sleep) until workflow id is terminal.
func (e *gwEnv) waitTerminal(id string) *storage.Workflow {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), time.Minute)
	defer cancel()
	ch, stop := e.app.Workflows().Watch(id)
	defer stop()
	for {
		w, err := e.app.Workflows().Get(ctx, id)
		if err == nil && storage.IsTerminal(w.State) {
			return w
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("workflow %s not terminal in time (last %v, %v)", id, w, err)
		case <-ch:
		}
	}
}

// With the token's names pre-authorized upstream (a preauthorization
// workflow, visible in the list), a pull's upstream order comes back with
// valid authorizations: the CA is asked to validate nothing more, and the
// gateway workflow's timeline says so. Warm again is a no-op while the
// authorizations are fresh, and renews them when they near expiry.
func TestWarmAuthorizations(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	e := newGWEnvPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true, AuthzReusePercent: 100}, gateway.Options{Clock: clock})
	tok, creds := e.token("warm.example.test", "www.warm.example.test")
	if err := e.gw.Warm(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := e.gw.WarmWorkflow(t.Context(), tok.ID)
	if id == "" {
		t.Fatal("no pre-authorization workflow recorded")
	}
	pre := e.waitTerminal(id)
	if pre.State != storage.StateAuthorized || pre.Trigger != workflow.TriggerPreauthorization || pre.CertificateID != "" {
		t.Fatalf("pre-authorization ended %s (%s), trigger %s, certificate %q", pre.State, pre.Status, pre.Trigger, pre.CertificateID)
	}
	until := workflow.AuthorizedUntil(pre)
	if until.IsZero() {
		t.Fatal("pre-authorization recorded no expiry")
	}
	ws, _, err := e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	if err != nil || !slices.ContainsFunc(ws, func(w *storage.Workflow) bool { return w.ID == id }) {
		t.Fatalf("pre-authorization not in the workflow list (%v)", err)
	}
	if err := e.gw.Warm(t.Context()); err != nil || e.gw.WarmWorkflow(t.Context(), tok.ID) != id {
		t.Fatalf("Warm replaced fresh authorizations (%v)", err)
	}

	chalsBefore, ordersBefore := e.pebble.ChallengePOSTs(), e.pebble.NewOrders()
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	chain, err := e.pull(cl, acct, csrFor(t, key, "warm.example.test", "www.warm.example.test"), "warm.example.test", "www.warm.example.test")
	if err != nil {
		t.Fatal(err)
	}
	e.checkEdgeCert(chain, key, "warm.example.test")
	if got := e.pebble.NewOrders() - ordersBefore; got != 1 {
		t.Fatalf("upstream saw %d orders for the pull, want 1", got)
	}
	if got := e.pebble.ChallengePOSTs() - chalsBefore; got != 0 {
		t.Fatalf("upstream was asked to validate %d challenges for a pull with warm authorizations, want 0", got)
	}
	ws, _, _ = e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	var gw *storage.Workflow
	for _, w := range ws {
		if w.Trigger == workflow.TriggerGateway {
			gw = w
		}
	}
	if gw == nil {
		t.Fatal("no gateway workflow")
	}
	evs, err := e.app.Workflows().Events(t.Context(), gw.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, ev := range evs {
		if ev.Step == "ordering" && ev.Message == "order created at the CA: ready" {
			ready = true
		}
		if ev.Step == workflow.StepValidating || ev.Step == workflow.StepPresenting || ev.Step == "authorizing" {
			t.Errorf("gateway workflow event %s %s %q: it authorized at the CA", ev.Step, ev.Identifier, ev.Message)
		}
	}
	if !ready {
		for _, ev := range evs {
			t.Logf("%s %s %q", ev.Step, ev.Identifier, ev.Message)
		}
		t.Fatal("the gateway workflow's timeline does not show the upstream order ready at once")
	}

	// near expiry: renewed by a new pre-authorization workflow
	now = until.Add(-time.Minute)
	if err := e.gw.Warm(t.Context()); err != nil {
		t.Fatal(err)
	}
	next := e.gw.WarmWorkflow(t.Context(), tok.ID)
	if next == id || next == "" {
		t.Fatalf("authorizations a minute from expiry were not renewed (workflow %q)", next)
	}
	if w := e.waitTerminal(next); w.State != storage.StateAuthorized {
		t.Fatalf("renewal pre-authorization ended %s: %s", w.State, w.Status)
	}
}
