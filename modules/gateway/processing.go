package gateway

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/smallstep/certificates/acme"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Orders in status processing (RFC 8555 §7.4), which smallstep lacks: its
// finalize signs synchronously and its order has no processing status. A
// finalize whose upstream issuance outlasts the wait leaves smallstep's
// order ready and records it as processing here; the gateway then answers
// the order (to the finalize and to every POST-as-GET, after smallstep has
// verified the request) with status processing and Retry-After, and once
// the workflow has issued, completes smallstep's order with its exported
// Order.Finalize (the CA service finds the finished workflow by the CSR),
// so smallstep stores the certificate and the order turns valid. A
// workflow that ends without a certificate turns the order invalid.
//
// The order is settled (completed or turned invalid) by whichever comes
// first: a poll of it, the node that answered the finalize seeing the
// workflow end (it follows the workflow, see startFollow), or the sweep every
// node runs with its periodic job (CompleteProcessing), which also covers
// workflows run on another node and a node that stopped. Settling is
// claimed with compare-and-swap on the processing record, so of any
// number of nodes exactly one settles an order, once; a claim whose node
// died expires after claimTTL and is taken over.

const processingBucket = "gateway_processing" // order ID -> processingRecord

type processingRecord struct {
	TokenID    string `json:"token_id"`
	WorkflowID string `json:"workflow_id"`
	// CSRHash identifies the finalize's CSR; CSR is its DER
	CSRHash string `json:"csr_hash"`
	CSR     []byte `json:"csr"`
	// ClaimedBy is the node settling the order, until ClaimedUntil
	ClaimedBy    string    `json:"claimed_by,omitempty"`
	ClaimedUntil time.Time `json:"claimed_until,omitzero"`
}

// claimTTL bounds how long a node's claim to settle an order holds: after
// it (the node died while settling), another node takes over.
const claimTTL = 2 * time.Minute

func (g *Gateway) processingOf(ctx context.Context, orderID string) (*processingRecord, bool) {
	b, err := g.store.ACME().Get(ctx, processingBucket, orderID)
	if err != nil {
		return nil, false
	}
	var rec processingRecord
	if json.Unmarshal(b, &rec) != nil {
		return nil, false
	}
	return &rec, true
}

func (g *Gateway) doneProcessing(ctx context.Context, orderID string) {
	if err := g.store.ACME().Delete(context.WithoutCancel(ctx), processingBucket, orderID); err != nil && !errors.Is(err, storage.ErrNotFound) {
		g.log.Warn("removing a processing record", zap.String("order_id", orderID), zap.Error(err))
	}
}

// answerProcessing answers a finalize that outlasted its wait with the
// order in status processing, keeping smallstep's nonce (in rec's header).
func (g *Gateway) answerProcessing(w http.ResponseWriter, r *http.Request, rec *recorder, orderID string, p *pull, der []byte) {
	ctx := r.Context()
	raw, _ := json.Marshal(processingRecord{TokenID: p.tokenID, WorkflowID: p.workflowID, CSRHash: csrHash(der), CSR: der})
	// recorded once: a retried finalize keeps the record (and any node's
	// claim on it)
	_, created, err := g.store.ACME().CompareAndSwap(ctx, processingBucket, orderID, nil, raw)
	if err != nil {
		g.log.Error("recording a processing order", zap.String("order_id", orderID), zap.Error(err))
		g.problemNoNonce(w, http.StatusInternalServerError, acme.ErrorServerInternalType, "recording the order failed", 0)
		return
	}
	o, err := g.db.GetOrder(ctx, orderID)
	if err != nil {
		g.problemNoNonce(w, http.StatusInternalServerError, acme.ErrorServerInternalType, "reading the order failed", 0)
		return
	}
	for k, v := range rec.header {
		if k == "Replay-Nonce" || k == "Link" {
			w.Header()[k] = v
		}
	}
	if created {
		g.startFollow(orderID, p.workflowID)
	}
	g.writeOrder(w, r, o, acme.Status("processing"), p.profile)
}

// writeOrder answers an order object as smallstep would, with the given
// status and profile.
func (g *Gateway) writeOrder(w http.ResponseWriter, r *http.Request, o *acme.Order, status acme.Status, profile string) {
	ctx := r.Context()
	g.linker.LinkOrder(ctx, o)
	o.Status = status
	b, _ := json.Marshal(o)
	w.Header().Set("Location", g.linker.GetLink(ctx, acme.OrderLinkType, o.ID))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	if status == "processing" {
		w.Header().Set("Retry-After", strconv.Itoa(int((g.opts.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(withProfile(b, profile))
}

// processingOrder rewrites smallstep's answer to an order POST-as-GET
// (already verified, in rec) for an order recorded as processing: still
// processing, or settled now that its workflow has ended.
func (g *Gateway) processingOrder(w http.ResponseWriter, r *http.Request, s *reqState, rec *recorder, orderID string) {
	ctx := r.Context()
	profile := g.profileOf(ctx, orderID)
	st, err := g.settle(ctx, orderID, s.remote)
	if err != nil {
		g.log.Warn("settling a processing order", zap.String("order_id", orderID), zap.Error(err))
	}
	if st.order == nil {
		if err == nil {
			// gone meanwhile: smallstep's answer stands
			rec.setBody(withProfile(rec.body.Bytes(), profile))
			rec.flush(w)
			return
		}
		g.problemNoNonce(w, http.StatusInternalServerError, acme.ErrorServerInternalType, "reading the order failed", 0)
		return
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	if st.processing {
		g.writeOrder(w, r, st.order, "processing", profile)
		return
	}
	g.writeOrder(w, r, st.order, st.order.Status, profile)
}

// settlement is what settle found or did.
type settlement struct {
	// order is the order as stored after settle (nil: unreadable or gone)
	order *acme.Order
	// processing: the order is still processing at the gateway (its
	// workflow goes on, another node is settling it, or settling failed)
	processing bool
	// ended: the order's workflow has ended
	ended bool
	// settled: this call completed the order or turned it invalid
	settled bool
}

// settle completes a processing order whose workflow has issued, or
// turns it invalid when the workflow failed, was cancelled or is gone,
// once: the node that swaps its claim into the processing record does
// it; the others see the order processing until it is done. remote names
// the edge for the audit log ("" for the background).
func (g *Gateway) settle(ctx context.Context, orderID, remote string) (settlement, error) {
	ctx = context.WithoutCancel(ctx)
	var st settlement
	raw, err := g.store.ACME().Get(ctx, processingBucket, orderID)
	if errors.Is(err, storage.ErrNotFound) {
		st.order, _ = g.db.GetOrder(ctx, orderID)
		return st, nil // settled meanwhile (here or on another node)
	}
	if err != nil {
		st.order, _ = g.db.GetOrder(ctx, orderID)
		st.processing = st.order != nil && st.order.Status == acme.StatusReady
		return st, fmt.Errorf("reading the processing record: %w", err)
	}
	var pr processingRecord
	if err := json.Unmarshal(raw, &pr); err != nil {
		g.doneProcessing(ctx, orderID)
		st.order, _ = g.db.GetOrder(ctx, orderID)
		return st, fmt.Errorf("reading the processing record: %w", err)
	}
	o, err := g.db.GetOrder(ctx, orderID)
	if err != nil {
		if errors.Is(err, acme.ErrNotFound) {
			g.doneProcessing(ctx, orderID)
			return st, nil
		}
		return st, fmt.Errorf("reading the order: %w", err)
	}
	st.order = o
	if o.Status != acme.StatusReady { // completed by smallstep meanwhile
		g.doneProcessing(ctx, orderID)
		return st, nil
	}
	st.processing = true
	wf, err := g.engine.Get(ctx, pr.WorkflowID)
	if errors.Is(err, storage.ErrNotFound) {
		wf = nil
	} else if err != nil {
		return st, fmt.Errorf("reading the order's workflow: %w", err)
	}
	if wf != nil && wf.State != storage.StateIssued && wf.State != storage.StateFailed && wf.State != storage.StateCancelled {
		return st, nil // under way
	}
	st.ended = true
	craw, claimed, err := g.claim(ctx, orderID, raw, pr)
	if err != nil {
		return st, fmt.Errorf("claiming the processing order: %w", err)
	} else if !claimed {
		return st, nil // another node is settling it, or claimed it first
	}
	if wf != nil && wf.State == storage.StateIssued {
		if err := g.completeOrder(ctx, o, &pr, remote); err != nil {
			// let the next poll or sweep try again
			if _, _, cerr := g.store.ACME().CompareAndSwap(ctx, processingBucket, orderID, craw, raw); cerr != nil {
				g.log.Warn("releasing the claim on a processing order", zap.String("order_id", orderID), zap.Error(cerr))
			}
			return st, fmt.Errorf("completing the order with workflow %s: %w", wf.ID, err)
		}
	} else {
		reason := "the workflow is gone"
		if wf != nil {
			reason = fmt.Sprintf("workflow %s %s: %s", wf.ID, wf.State, wf.Status)
		}
		o.Status = acme.StatusInvalid
		o.Error = acme.NewError(acme.ErrorServerInternalType, "issuing the certificate failed")
		o.Error.Detail = fmt.Sprintf("issuing the certificate failed (%s)", reason)
		if err := g.db.UpdateOrder(ctx, o); err != nil {
			_, _, _ = g.store.ACME().CompareAndSwap(ctx, processingBucket, orderID, craw, raw)
			return st, fmt.Errorf("marking the order invalid: %w", err)
		}
	}
	g.doneProcessing(ctx, orderID)
	st.processing, st.settled = false, true
	if st.order, err = g.db.GetOrder(ctx, orderID); err != nil {
		return st, fmt.Errorf("reading the settled order: %w", err)
	}
	return st, nil
}

// completeOrder lets smallstep finish a ready order whose workflow has
// issued: Order.Finalize signs through the CA service, which finds the
// workflow by the pull record of the token and CSR and returns its chain.
func (g *Gateway) completeOrder(ctx context.Context, o *acme.Order, pr *processingRecord, remote string) error {
	csr, err := x509.ParseCertificateRequest(pr.CSR)
	if err != nil {
		return fmt.Errorf("parsing the stored CSR: %w", err)
	}
	pi, err := g.auth.LoadProvisionerByID(o.ProvisionerID)
	if err != nil {
		return fmt.Errorf("the order's provisioner: %w", err)
	}
	prov, ok := pi.(*provisioner.ACME)
	if !ok {
		return fmt.Errorf("provisioner %s is not ACME", pi.GetName())
	}
	p := &pull{tokenID: pr.TokenID, remote: remote, workflowID: pr.WorkflowID, profile: g.profileOf(ctx, o.ID), orderID: o.ID,
		processing: true, settling: true}
	g.pulls.put(pr.CSRHash, p)
	defer g.pulls.del(pr.CSRHash, p)
	return o.Finalize(ctx, g.db, csr, g.auth, prov)
}

// mayComplete reports whether a finalize may let smallstep complete the
// order now that its workflow has issued: yes unless the order was
// processing when finalized (a retry), in which case the finalize must
// claim it as settle does, so that the order is completed once; without
// the claim it answers processing again and the order is completed by
// whoever holds the claim.
func (g *Gateway) mayComplete(p *pull) bool {
	if !p.processing || p.settling {
		return true
	}
	ctx := context.Background()
	raw, err := g.store.ACME().Get(ctx, processingBucket, p.orderID)
	if err != nil {
		return false // settled meanwhile (or unreadable): poll it
	}
	var pr processingRecord
	if json.Unmarshal(raw, &pr) != nil {
		return false
	}
	_, claimed, err := g.claim(ctx, p.orderID, raw, pr)
	return err == nil && claimed
}

// claim takes this node's claim to settle a processing order, whose
// record as read is raw (decoded: pr), with compare-and-swap: it reports
// false when another node's claim still holds or another node swapped the
// record first. craw is the claimed record, to swap back on failure.
func (g *Gateway) claim(ctx context.Context, orderID string, raw []byte, pr processingRecord) (craw []byte, claimed bool, err error) {
	now := g.clock()
	if pr.ClaimedBy != "" && now.Before(pr.ClaimedUntil) {
		return nil, false, nil
	}
	pr.ClaimedBy, pr.ClaimedUntil = g.opts.Node, now.Add(claimTTL).UTC()
	if pr.ClaimedBy == "" {
		pr.ClaimedBy = "gateway"
	}
	craw, _ = json.Marshal(pr)
	_, swapped, err := g.store.ACME().CompareAndSwap(ctx, processingBucket, orderID, raw, craw)
	if err != nil || !swapped {
		return nil, false, err
	}
	return craw, true, nil
}

// CompleteProcessing settles every processing order whose workflow has
// ended, polled or not (see settle), and returns how many this call
// settled. Every node runs it with its periodic job (KeepWarm); it is
// safe on any number of nodes at once.
func (g *Gateway) CompleteProcessing(ctx context.Context) (int, error) {
	kvs, err := g.store.ACME().List(ctx, processingBucket)
	if err != nil {
		return 0, fmt.Errorf("completing processing orders: %w", err)
	}
	n := 0
	var errs []error
	for _, kv := range kvs {
		st, err := g.settle(ctx, kv.Key, "")
		if err != nil {
			errs = append(errs, fmt.Errorf("order %s: %w", kv.Key, err))
		}
		if st.settled {
			n++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("completing processing orders: %w", err)
	}
	return n, nil
}

// startFollow has this node settle a processing order as soon as it sees
// its workflow end (the engine wakes its watchers when this node persists
// a step), without waiting for a poll or the sweep. It stops when the
// order is settled, its workflow has ended, or the gateway is closed.
func (g *Gateway) startFollow(orderID, workflowID string) {
	b := g.background()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ctx.Err() != nil {
		return
	}
	b.wg.Add(1)
	ch, stop := g.engine.Watch(workflowID)
	go func() {
		defer b.wg.Done()
		defer stop()
		for {
			st, err := g.settle(b.ctx, orderID, "")
			if err != nil && b.ctx.Err() == nil {
				g.log.Warn("settling a processing order", zap.String("order_id", orderID), zap.Error(err))
			}
			if !st.processing || st.ended {
				return // settled, or left to a poll or the sweep
			}
			select {
			case <-b.ctx.Done():
				return
			case <-ch:
			}
		}
	}()
}

// followers is the gateway's background work: the followers of
// processing orders, stopped by Close.
type followers struct {
	once   sync.Once
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (g *Gateway) background() *followers {
	g.follow.once.Do(func() { g.follow.ctx, g.follow.cancel = context.WithCancel(context.Background()) })
	return &g.follow
}

// Close stops the gateway's background work (the followers of processing
// orders) and waits for it. The gateway still answers requests; processing
// orders are then settled by a poll or another node's sweep.
func (g *Gateway) Close() {
	b := g.background()
	b.mu.Lock()
	b.cancel()
	b.mu.Unlock()
	b.wg.Wait()
}
