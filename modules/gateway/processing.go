package gateway

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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

const processingBucket = "gateway_processing" // order ID -> processingRecord

type processingRecord struct {
	TokenID    string `json:"token_id"`
	WorkflowID string `json:"workflow_id"`
	// CSRHash identifies the finalize's CSR; CSR is its DER
	CSRHash string `json:"csr_hash"`
	CSR     []byte `json:"csr"`
}

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
	if err := g.store.ACME().Set(ctx, processingBucket, orderID, raw); err != nil {
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
// processing, or completed now that its workflow has ended.
func (g *Gateway) processingOrder(w http.ResponseWriter, r *http.Request, s *reqState, rec *recorder, orderID string, pr *processingRecord) {
	ctx := r.Context()
	profile := g.profileOf(ctx, orderID)
	o, err := g.db.GetOrder(ctx, orderID)
	if err != nil || o.Status != acme.StatusReady {
		// completed meanwhile (here or on another node), or gone
		g.doneProcessing(ctx, orderID)
		rec.setBody(withProfile(rec.body.Bytes(), profile))
		rec.flush(w)
		return
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	wf, err := g.engine.Get(ctx, pr.WorkflowID)
	switch {
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		g.problemNoNonce(w, http.StatusInternalServerError, acme.ErrorServerInternalType, "reading the order's workflow failed", 0)
		return
	case err == nil && wf.State == storage.StateIssued:
		if err := g.completeOrder(ctx, s, o, pr); err != nil {
			g.log.Warn("completing a processing order", zap.String("order_id", orderID), zap.String("workflow_id", wf.ID), zap.Error(err))
		}
		if o, err = g.db.GetOrder(ctx, orderID); err != nil || o.Status != acme.StatusValid {
			// not completed (another request may be at it): still processing
			g.writeOrder(w, r, o, "processing", profile)
			return
		}
		g.doneProcessing(ctx, orderID)
		g.writeOrder(w, r, o, o.Status, profile)
	case err != nil || wf.State == storage.StateFailed || wf.State == storage.StateCancelled:
		reason := "the workflow is gone"
		if err == nil {
			reason = fmt.Sprintf("workflow %s %s: %s", wf.ID, wf.State, wf.Status)
		}
		o.Status = acme.StatusInvalid
		o.Error = acme.NewError(acme.ErrorServerInternalType, "issuing the certificate failed")
		o.Error.Detail = fmt.Sprintf("issuing the certificate failed (%s)", reason)
		if err := g.db.UpdateOrder(ctx, o); err != nil {
			g.log.Warn("marking a processing order invalid", zap.String("order_id", orderID), zap.Error(err))
		}
		g.doneProcessing(ctx, orderID)
		g.writeOrder(w, r, o, o.Status, profile)
	default:
		g.writeOrder(w, r, o, "processing", profile)
	}
}

// completeOrder lets smallstep finish a ready order whose workflow has
// issued: Order.Finalize signs through the CA service, which finds the
// workflow by the pull record of the token and CSR and returns its chain.
func (g *Gateway) completeOrder(ctx context.Context, s *reqState, o *acme.Order, pr *processingRecord) error {
	csr, err := x509.ParseCertificateRequest(pr.CSR)
	if err != nil {
		return fmt.Errorf("parsing the stored CSR: %w", err)
	}
	name := provEAB
	if s.urlSecret != "" {
		name = provToken
	}
	pi, err := g.auth.LoadProvisionerByName(name)
	if err != nil {
		return err
	}
	prov, ok := pi.(*provisioner.ACME)
	if !ok {
		return fmt.Errorf("provisioner %s is not ACME", name)
	}
	p := &pull{tokenID: pr.TokenID, remote: s.remote, workflowID: pr.WorkflowID, profile: g.profileOf(ctx, o.ID), orderID: o.ID}
	g.pulls.put(pr.CSRHash, p)
	defer g.pulls.del(pr.CSRHash, p)
	return o.Finalize(ctx, g.db, csr, g.auth, prov)
}
