package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// processingFinalize orders name through a HAProxy 3.3 replay and
// finalizes it while the upstream CA holds issuance, so the gateway
// answers processing. It returns the order's URL and ID, the workflow's
// ID, the certificate key and the release of the upstream CA.
func processingFinalize(t *testing.T, e *gwEnv, h *haproxy33, name string) (orderURL, orderID, workflowID string, key *ecdsa.PrivateKey, release func()) {
	orderURL, orderID, workflowID, key, release, _, _ = processingFinalizeCSR(t, e, h, name)
	return
}

// processingFinalizeCSR is processingFinalize that also returns the
// finalize URL and the CSR it sent.
func processingFinalizeCSR(t *testing.T, e *gwEnv, h *haproxy33, name string) (orderURL, orderID, workflowID string, key *ecdsa.PrivateKey,
	release func(), finalizeURL, csr string) {
	t.Helper()
	resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": name}}})
	if resp.StatusCode != 201 {
		t.Fatalf("newOrder: %d %s", resp.StatusCode, b)
	}
	orderURL = resp.Header.Get("Location")
	finalizeURL = decode(t, b)["finalize"].(string)
	k := newKey(t, elliptic.P256())
	release = e.pebble.HoldIssuance()
	t.Cleanup(release)
	csr = base64.RawURLEncoding.EncodeToString(csrFor(t, k, name))
	resp, b = h.post(finalizeURL, map[string]string{"csr": csr})
	if resp.StatusCode != 200 || decode(t, b)["status"] != "processing" {
		t.Fatalf("held finalize: %d %s", resp.StatusCode, b)
	}
	ws, _, err := e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	if err != nil || len(ws) != 1 {
		t.Fatalf("workflows: %v %d, want one", err, len(ws))
	}
	return orderURL, path.Base(orderURL), ws[0].ID, k, release, finalizeURL, csr
}

// waitWorkflow waits until the workflow is in state (woken by the
// engine's watch, with a look at the store as a fallback), failing after
// 30 s.
func waitWorkflow(t *testing.T, e *gwEnv, id, state string) {
	t.Helper()
	ch, stop := e.app.Workflows().Watch(id)
	defer stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		w, err := e.app.Workflows().Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if w.State == state {
			return
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline:
			t.Fatalf("workflow %s is %s, never %s", id, w.State, state)
		}
	}
}

// processingRecorded reports whether the gateway still records the order
// as processing.
func processingRecorded(t *testing.T, e *gwEnv, orderID string) bool {
	t.Helper()
	_, err := e.app.Store().ACME().Get(t.Context(), gateway.ProcessingBucket, orderID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// checkCompleted asserts that smallstep's order is valid with a
// certificate, the processing record is gone, and an edge's poll gets the
// order valid and the certificate with its key.
func checkCompleted(t *testing.T, e *gwEnv, h *haproxy33, orderURL, orderID string, key *ecdsa.PrivateKey) {
	t.Helper()
	status, certID, err := e.gw.StoredOrder(t.Context(), orderID)
	if err != nil || status != "valid" || certID == "" {
		t.Fatalf("stored order: %v %s, certificate %q", err, status, certID)
	}
	if processingRecorded(t, e, orderID) {
		t.Fatal("the order is still recorded as processing")
	}
	resp, b := h.post(orderURL, nil)
	o := decode(t, b)
	if resp.StatusCode != 200 || o["status"] != "valid" || o["certificate"] == nil {
		t.Fatalf("order: %d %s", resp.StatusCode, b)
	}
	resp, b = h.post(o["certificate"].(string), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("certificate: %d %s", resp.StatusCode, b)
	}
	if !key.PublicKey.Equal(parseLeaf(t, b).PublicKey) {
		t.Fatal("wrong key")
	}
}

// The node that answered processing settles the order as soon as it sees
// the workflow issue: smallstep's order turns valid with the certificate
// although the edge never polls it.
func TestProcessingOrderCompletesUnpolled(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	_, creds := e.token("unpolled.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)
	before := e.pebble.NewOrders()
	orderURL, orderID, wfID, key, release := processingFinalize(t, e, h, "unpolled.example.test")
	if st, _, _ := e.gw.StoredOrder(t.Context(), orderID); st != "ready" || !processingRecorded(t, e, orderID) {
		t.Fatalf("while processing: stored order %s, recorded %v", st, processingRecorded(t, e, orderID))
	}
	release()
	waitWorkflow(t, e, wfID, storage.StateIssued)
	// nobody polls: the order is settled in the background
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		st, _, err := e.gw.StoredOrder(t.Context(), orderID)
		if err != nil {
			t.Fatal(err)
		}
		if st == "valid" && !processingRecorded(t, e, orderID) { // settled: completed, record removed
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the order is still %s after its workflow issued", st)
		}
	}
	checkCompleted(t, e, h, orderURL, orderID, key)
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull", n)
	}
}

// When the node that answered processing is gone (or the workflow ran on
// another node), the periodic sweep settles the order on any node, once:
// a live claim by another node is respected, an expired one is taken over
// (an injected clock moves past it), and of two nodes sweeping at once
// exactly one completes the order.
func TestProcessingOrderSweep(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	nodes := make([]*gateway.Gateway, 2)
	for i, name := range []string{"node-b", "node-c"} {
		g, err := gateway.New(gateway.Options{Store: e.app.Store(), Engine: e.app.Workflows(), Node: name, Clock: clock,
			Clients: e.app.IssuerRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		nodes[i] = g
	}
	_, creds := e.token("swept.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)
	before := e.pebble.NewOrders()
	orderURL, orderID, wfID, key, release := processingFinalize(t, e, h, "swept.example.test")
	e.gw.Close() // the node that answered processing stops following the order
	release()
	waitWorkflow(t, e, wfID, storage.StateIssued)
	if st, _, _ := e.gw.StoredOrder(t.Context(), orderID); st != "ready" {
		t.Fatalf("stored order %s before any sweep; want ready (nothing settled it)", st)
	}

	// a claim by a node that is settling it right now holds
	claim(t, e, orderID, clock().Add(time.Minute))
	if n, err := nodes[0].CompleteProcessing(t.Context()); err != nil || n != 0 {
		t.Fatalf("sweep under another node's claim: %d %v", n, err)
	}
	if st, _, _ := e.gw.StoredOrder(t.Context(), orderID); st != "ready" {
		t.Fatalf("stored order %s under another node's claim", st)
	}

	// the claim expires (node-x died): both nodes sweep at once, one settles
	offset.Store(int64(3 * time.Minute))
	var wg sync.WaitGroup
	counts := make([]int, len(nodes))
	errs := make([]error, len(nodes))
	for i, g := range nodes {
		wg.Go(func() { counts[i], errs[i] = g.CompleteProcessing(t.Context()) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || counts[0]+counts[1] != 1 {
		t.Fatalf("concurrent sweeps settled %v (errors %v); want exactly one", counts, errs)
	}
	checkCompleted(t, e, h, orderURL, orderID, key)
	if n, err := nodes[1].CompleteProcessing(t.Context()); err != nil || n != 0 {
		t.Fatalf("a sweep after the order was settled: %d %v", n, err)
	}
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull", n)
	}
}

// The sweep turns a processing order invalid, with the reason, once its
// workflow was cancelled, although nobody polls it.
func TestProcessingOrderSweepFailed(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	_, creds := e.token("swept-fail.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)
	orderURL, orderID, wfID, _, _ := processingFinalize(t, e, h, "swept-fail.example.test")
	e.gw.Close()
	if _, err := e.app.Workflows().Cancel(t.Context(), wfID, "test"); err != nil {
		t.Fatal(err)
	}
	if n, err := e.gw.CompleteProcessing(t.Context()); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if st, _, _ := e.gw.StoredOrder(t.Context(), orderID); st != "invalid" || processingRecorded(t, e, orderID) {
		t.Fatalf("stored order %s, recorded %v after the sweep", st, processingRecorded(t, e, orderID))
	}
	resp, b := h.post(orderURL, nil)
	o := decode(t, b)
	if oerr, _ := o["error"].(map[string]any); resp.StatusCode != 200 || o["status"] != "invalid" || oerr == nil {
		t.Fatalf("order after the sweep: %d %s", resp.StatusCode, b)
	}
}

// claim seeds a claim on a processing order by node-x, valid until until.
func claim(t *testing.T, e *gwEnv, orderID string, until time.Time) {
	t.Helper()
	raw, err := e.app.Store().ACME().Get(t.Context(), gateway.ProcessingBucket, orderID)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	rec["claimed_by"], rec["claimed_until"] = "node-x", until.UTC()
	raw, _ = json.Marshal(rec)
	if err := e.app.Store().ACME().Set(t.Context(), gateway.ProcessingBucket, orderID, raw); err != nil {
		t.Fatal(err)
	}
}

// A retried finalize (same CSR) of a processing order completes it only
// with the claim, like a poll or a sweep: while another node holds the
// claim it answers processing and leaves the order to that node (so the
// order is completed once); once the claim has expired, a sweep completes
// it.
func TestProcessingRetriedFinalizeRespectsClaim(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	var offset atomic.Int64
	gwB, err := gateway.New(gateway.Options{Store: e.app.Store(), Engine: e.app.Workflows(), Node: "node-b",
		Clock: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }, Clients: e.app.IssuerRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gwB.Close)
	_, creds := e.token("retried.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)
	before := e.pebble.NewOrders()
	orderURL, orderID, wfID, key, release, finalizeURL, csr := processingFinalizeCSR(t, e, h, "retried.example.test")
	claim(t, e, orderID, time.Now().Add(time.Minute))
	release()
	waitWorkflow(t, e, wfID, storage.StateIssued)
	resp, b := h.post(finalizeURL, map[string]string{"csr": csr})
	if resp.StatusCode != 200 || decode(t, b)["status"] != "processing" {
		t.Fatalf("retried finalize under another node's claim: %d %s", resp.StatusCode, b)
	}
	if st, _, _ := e.gw.StoredOrder(t.Context(), orderID); st != "ready" || !processingRecorded(t, e, orderID) {
		t.Fatalf("stored order %s, recorded %v: the retried finalize completed a claimed order", st, processingRecorded(t, e, orderID))
	}
	offset.Store(int64(3 * time.Minute))
	if n, err := gwB.CompleteProcessing(t.Context()); err != nil || n != 1 {
		t.Fatalf("sweep after the claim expired: %d %v", n, err)
	}
	checkCompleted(t, e, h, orderURL, orderID, key)
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull", n)
	}
}
