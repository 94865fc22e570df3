package workflow_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	inv "github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// issue runs one workflow to issued and returns it.
func issue(t *testing.T, e *env, eng *workflow.Engine, req workflow.Request) *storage.Workflow {
	t.Helper()
	w, err := eng.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued {
		t.Fatalf("workflow %s: %s", w.State, w.Status)
	}
	return w
}

func TestRenewals(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	first := issue(t, e, eng, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("renew")}}})
	cert, err := e.store.Certificates().Get(t.Context(), first.CertificateID)
	if err != nil {
		t.Fatal(err)
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	at := func(frac float64) func() time.Time {
		return func() time.Time { return cert.NotBefore.Add(time.Duration(float64(life) * frac)) }
	}

	// fresh: nothing to do
	fresh, _ := e.engine("node-a", at(0.1))
	if n, err := fresh.RenewDue(t.Context()); err != nil || n != 0 {
		t.Fatalf("fresh certificate: %d renewals, %v", n, err)
	}

	// past half-life, before two thirds: the CA's ARI window decides
	mid, _ := e.engine("node-a", at(0.55))
	if n, err := mid.RenewDue(t.Context()); err != nil || n != 0 {
		t.Fatalf("before the window: %d renewals, %v", n, err)
	}
	x := leaf(t, e.store, cert.ID)
	if err := e.pebble.SetRenewalWindow(x, at(0.55)().Add(-time.Hour), at(0.55)().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := mid.RenewDue(t.Context()); err != nil || n != 1 {
		t.Fatalf("inside the ARI window: %d renewals, %v", n, err)
	}
	// before two thirds, inside the CA's window: the inventory says due
	// as the engine did (one rule)
	inWindow, err := e.store.Certificates().Get(t.Context(), cert.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := inv.RenewalStatus(inWindow, at(0.55)()); r.Status != inv.RenewalDue || r.RenewAt.Sub(at(0.55)().Add(-time.Hour)).Abs() > time.Second {
		t.Fatalf("the engine renews inside the CA's window; the inventory says %s from %v (%s)", r.Status, r.RenewAt, r.Message)
	}
	if n, _ := mid.RenewDue(t.Context()); n != 0 {
		t.Fatalf("a second scan started %d more renewals", n)
	}
	run(t, mid)
	ws, _, _ := e.store.Workflows().List(t.Context(), storage.WorkflowFilter{Domain: first.Identifiers[0].Value}, storage.Page{})
	var renewal *storage.Workflow
	for _, w := range ws {
		if w.ID != first.ID {
			renewal = w
		}
	}
	if renewal == nil || renewal.State != storage.StateIssued || renewal.Trigger != workflow.TriggerRenewal ||
		renewal.ParentID != first.ID || renewal.PreviousCertificateID != cert.ID {
		t.Fatalf("renewal workflow: %+v", renewal)
	}
	old, _ := e.store.Certificates().Get(t.Context(), cert.ID)
	if old.Status != storage.CertStatusRenewed || old.ReplacedBy != renewal.CertificateID {
		t.Fatalf("old certificate status %s replaced by %q", old.Status, old.ReplacedBy)
	}
	// the renewed certificate is not renewed again; the new one is fresh
	if n, err := mid.RenewDue(t.Context()); err != nil || n != 0 {
		t.Fatalf("after renewal: %d renewals, %v", n, err)
	}
	evs, _ := e.store.Workflows().Events(t.Context(), renewal.ID, 0, 0)
	if !strings.Contains(evs[0].Message, "renewal order") {
		t.Fatalf("first event of the renewal: %q", evs[0].Message)
	}
}

// Late in the certificate's life (three quarters), past Pebble's default
// ARI window, the scan renews it.
func TestRenewalLateInLife(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	first := issue(t, e, eng, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("twothirds")}}})
	cert, _ := e.store.Certificates().Get(t.Context(), first.CertificateID)
	late, _ := e.engine("node-a", func() time.Time { return cert.NotAfter.Add(-cert.NotAfter.Sub(cert.NotBefore) / 4) })
	if n, err := late.RenewDue(t.Context()); err != nil || n != 1 {
		t.Fatalf("%d renewals, %v", n, err)
	}
}

func TestFallbackIssuer(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	// the first ACME client's account is deactivated: the CA refuses it
	e.deactivateAccount(t)
	backup := &storage.Issuer{Name: "backup", DirectoryURL: e.pebble.DirectoryURL()}
	if err := e.store.Issuers().Create(t.Context(), backup); err != nil {
		t.Fatal(err)
	}
	eng, _ := e.engine("node-a", nil)
	w := issue(t, e, eng, workflow.Request{IssuerID: e.issuer.ID, FallbackIssuerIDs: []string{backup.ID},
		Identifiers: []storage.Identifier{{Value: e.name("fallback")}}})
	if w.IssuerID != backup.ID {
		t.Fatalf("issued by %s, want the fallback %s", w.IssuerID, backup.ID)
	}
	evs, _ := e.store.Workflows().Events(t.Context(), w.ID, 0, 0)
	found := false
	for _, ev := range evs {
		if strings.Contains(ev.Message, "falling back to ACME client "+backup.ID) && len(ev.Problem) > 0 {
			found = true
		}
	}
	if !found {
		t.Fatal("the fallback is not on the timeline with the CA's problem")
	}
}

func TestMigrateInBulk(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	var certIDs []string
	for _, label := range []string{"mig1", "mig2", "mig3"} {
		w := issue(t, e, eng, workflow.Request{IssuerID: e.issuer.ID, Group: "web", Identifiers: []storage.Identifier{{Value: e.name(label)}}})
		certIDs = append(certIDs, w.CertificateID)
	}
	target := &storage.Issuer{Name: "new-ca", DirectoryURL: e.pebble.DirectoryURL()}
	if err := e.store.Issuers().Create(t.Context(), target); err != nil {
		t.Fatal(err)
	}
	var inv *workflow.InvalidError
	for name, bad := range map[string]workflow.Migration{
		"no selector": {ToIssuerID: target.ID},
		"no target":   {FromIssuerID: e.issuer.ID},
		"same CA":     {FromIssuerID: e.issuer.ID, ToIssuerID: e.issuer.ID},
	} {
		if _, err := eng.Migrate(t.Context(), bad); !errors.As(err, &inv) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// 60 per minute: one second apart
	res, err := eng.Migrate(t.Context(), workflow.Migration{FromIssuerID: e.issuer.ID, ToIssuerID: target.ID, PerMinute: 60})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Workflows) != 3 || len(res.Skipped) != 0 {
		t.Fatalf("started %d, skipped %v", len(res.Workflows), res.Skipped)
	}
	if gap := res.Workflows[2].NextRunAt.Sub(res.Workflows[0].NextRunAt); gap != 2*time.Second {
		t.Fatalf("pacing gap %v, want 2s", gap)
	}
	// a second migration finds them under way
	again, _ := eng.Migrate(t.Context(), workflow.Migration{FromIssuerID: e.issuer.ID, ToIssuerID: target.ID})
	if len(again.Workflows) != 0 || len(again.Skipped) != 3 {
		t.Fatalf("second migration started %d", len(again.Workflows))
	}
	later, _ := e.engine("node-a", func() time.Time { return time.Now().Add(time.Minute) })
	run(t, later)
	for i, id := range certIDs {
		old, _ := e.store.Certificates().Get(t.Context(), id)
		if old.Status != storage.CertStatusRenewed || old.ReplacedBy == "" {
			t.Fatalf("certificate %d not replaced: %s", i, old.Status)
		}
		repl, _ := e.store.Certificates().Get(t.Context(), old.ReplacedBy)
		if repl.IssuerID != target.ID {
			t.Fatalf("replacement issued by %s", repl.IssuerID)
		}
	}
}

// Several nodes scanning at once start exactly one renewal per certificate.
func TestRenewalsFromManyNodes(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	var certs []*storage.Certificate
	for _, label := range []string{"many1", "many2"} {
		w := issue(t, e, eng, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name(label)}}})
		c, _ := e.store.Certificates().Get(t.Context(), w.CertificateID)
		certs = append(certs, c)
	}
	late := func() time.Time { return certs[0].NotAfter.Add(-time.Hour) }
	var wg sync.WaitGroup
	started := make(chan int, 4)
	for i := 0; i < 4; i++ {
		node, _ := e.engine(fmt.Sprintf("node-%d", i), late)
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := node.RenewDue(t.Context())
			if err != nil {
				t.Error(err)
			}
			started <- n
		}()
	}
	wg.Wait()
	close(started)
	total := 0
	for n := range started {
		total += n
	}
	// exactly one renewal workflow per certificate, whoever started it
	per := map[string]int{}
	ws, _, err := e.store.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Trigger == workflow.TriggerRenewal {
			per[w.PreviousCertificateID]++
		}
	}
	for _, c := range certs {
		if per[c.ID] != 1 {
			t.Errorf("certificate %s: %d renewals started by 4 nodes, want 1", c.ID, per[c.ID])
		}
	}
	if len(per) != len(certs) || total != len(certs) {
		t.Fatalf("renewals per certificate %v; the nodes reported %d started", per, total)
	}
}

// A renewal that fails is not started again at once: the next waits an
// hour after the failed one started, then two, then four (each step
// checked to the nanosecond on the engine's clock); a manual renewal is
// not held by the back-off, and one under way is not doubled.
func TestFailedRenewalBacksOff(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	first := issue(t, e, eng, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("backoff")}}})
	cert, _ := e.store.Certificates().Get(t.Context(), first.CertificateID)
	t0 := cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) * 9 / 10) // due, and stays due below
	at := func(d time.Duration) *workflow.Engine {
		node, _ := e.engine("node-a", func() time.Time { return t0.Add(d) })
		return node
	}
	scan := func(d time.Duration) int {
		n, err := at(d).RenewDue(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// failRenewal ends the renewal under way (an operator cancels it)
	failRenewal := func() {
		t.Helper()
		ws, _, _ := e.store.Workflows().List(t.Context(), storage.WorkflowFilter{State: storage.StatePending}, storage.Page{})
		if len(ws) != 1 || ws[0].Trigger != workflow.TriggerRenewal {
			t.Fatalf("%d pending workflows, want the one renewal", len(ws))
		}
		if _, err := eng.Cancel(t.Context(), ws[0].ID, "operator"); err != nil {
			t.Fatal(err)
		}
	}
	if n := scan(0); n != 1 {
		t.Fatalf("first scan started %d", n)
	}
	started := time.Duration(0) // when the last renewal started, from t0
	for i, wait := range []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour} {
		failRenewal()
		if n := scan(started + time.Minute); n != 0 {
			t.Fatalf("failure %d: restarted at once (%d)", i+1, n)
		}
		if n := scan(started + wait - time.Nanosecond); n != 0 {
			t.Fatalf("failure %d: restarted %v before the %v back-off ended", i+1, time.Nanosecond, wait)
		}
		if n := scan(started + wait); n != 1 {
			t.Fatalf("failure %d: %d renewals once the %v back-off ended, want 1", i+1, n, wait)
		}
		started += wait
	}
	// a manual renewal during a back-off starts at once
	failRenewal()
	manual, err := at(started+time.Minute).Renew(t.Context(), first, "operator")
	if err != nil || manual == nil {
		t.Fatalf("manual renewal during the back-off: %v, %v", manual, err)
	}
	if manual.State != storage.StatePending || manual.PreviousCertificateID != cert.ID {
		t.Fatalf("manual renewal %+v", manual)
	}
	// a manual renewal while one is under way is refused, not doubled
	if w, err := at(started+2*time.Minute).Renew(t.Context(), first, "operator"); err != nil || w != nil {
		t.Fatalf("manual renewal during one under way: %v %v", w, err)
	}
	// the scan does not double it either
	if n := scan(started + 24*time.Hour); n != 0 {
		t.Fatalf("the scan started %d beside the manual renewal", n)
	}
}

// A renewal orders with replaces naming the old certificate's ARI ID; a
// second successor of the same certificate is refused alreadyReplaced by
// the CA and orders again without it.
func TestRenewalOrderReplaces(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	cp, clients := e.throughProxy(t)
	_, opts := e.engine("node-a", nil)
	eng := e.engineWith(t, opts, clients, nil)
	name := e.name("replaces")
	first := issue(t, e, eng, workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: name}}})
	cert, _ := e.store.Certificates().Get(t.Context(), first.CertificateID)
	ariID, err := acme.ARIUniqueIdentifier(leaf(t, e.store, cert.ID))
	if err != nil {
		t.Fatal(err)
	}
	_, lopts := e.engine("node-a", func() time.Time { return cert.NotAfter.Add(-cert.NotAfter.Sub(cert.NotBefore) / 10) })
	late := e.engineWith(t, lopts, clients, nil)
	if n, err := late.RenewDue(t.Context()); err != nil || n != 1 {
		t.Fatalf("%d renewals, %v", n, err)
	}
	run(t, late)
	sent := cp.sent(name)
	if len(sent) != 2 || sent[1].Replaces != ariID || sent[1].Status != http.StatusCreated {
		t.Fatalf("renewal's newOrder requests %+v, want the second with replaces %s, created", sent, ariID)
	}
	// another successor naming the same certificate
	again, err := late.Create(t.Context(), workflow.RenewalRequest(first, ariID))
	if err != nil {
		t.Fatal(err)
	}
	run(t, late)
	if w := get(t, e.store, again.ID); w.State != storage.StateIssued {
		t.Fatalf("second successor %s: %s", w.State, w.Status)
	}
	sent = cp.sent(name)
	if len(sent) != 4 || sent[2].Replaces != ariID || sent[2].Status == http.StatusCreated || sent[3].Replaces != "" || sent[3].Status != http.StatusCreated {
		t.Fatalf("second successor's newOrder requests %+v: want one refused with replaces, then one created without", sent[2:])
	}
	evs, _ := e.store.Workflows().Events(t.Context(), again.ID, 0, 0)
	found := false
	for _, ev := range evs {
		found = found || (strings.Contains(ev.Message, "already replaced") && strings.Contains(string(ev.Problem), "alreadyReplaced"))
	}
	if !found {
		t.Fatal("the CA's alreadyReplaced is not on the timeline")
	}
}
