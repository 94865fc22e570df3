package workflow

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// RenewDue looks at every active certificate CertLocker issued and starts
// a renewal workflow for each that is due: inside the CA's ARI window
// (RFC 9773) when the CA offers one, else at two thirds of its lifetime.
// A certificate with a renewal already under way is skipped. It returns
// how many renewals it started.
func (e *Engine) RenewDue(ctx context.Context) (int, error) {
	deps := e.deps.Load()
	started := 0
	cursor := ""
	for {
		certs, next, err := e.opts.Store.Certificates().List(ctx, storage.CertificateFilter{Status: storage.CertStatusActive},
			storage.Page{Cursor: cursor, Limit: 500})
		if err != nil {
			return started, fmt.Errorf("listing certificates to renew: %w", err)
		}
		for _, c := range certs {
			if c.IssuerID == "" || c.WorkflowID == "" || c.ReplacedBy != "" {
				continue // imported, or already renewed
			}
			ok, err := e.renewOne(ctx, deps, c)
			if err != nil {
				if ctx.Err() != nil {
					return started, ctx.Err()
				}
				e.log.Warn("checking certificate renewal", zap.String("certificate_id", c.ID), zap.Error(err))
				continue
			}
			if ok {
				started++
			}
		}
		if next == "" {
			return started, nil
		}
		cursor = next
	}
}

func (e *Engine) renewOne(ctx context.Context, deps *Deps, c *storage.Certificate) (bool, error) {
	now := e.opts.Clock()
	leaf, err := leafOf(c.ChainPEM)
	if err != nil {
		return false, err
	}
	// ask the CA for its window only once the certificate is half way
	// through its life: ARI windows sit near the two-thirds point
	var ari *acme.RenewalInfo
	ariID := ""
	if deps != nil && deps.Clients != nil && now.After(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore)/2)) {
		if cl, _, err := deps.Clients.Client(ctx, c.IssuerID); err == nil {
			if dir, err := cl.GetDirectory(ctx); err == nil && dir.RenewalInfo != "" {
				if ri, err := cl.GetRenewalInfo(ctx, leaf); err == nil {
					ari = &ri
				}
				ariID, _ = acme.ARIUniqueIdentifier(leaf)
			}
		}
	}
	d := ShouldRenew(c.NotBefore, c.NotAfter, ari, now)
	if !d.Renew {
		return false, nil
	}
	prev, err := e.opts.Store.Workflows().Get(ctx, c.WorkflowID)
	if err != nil {
		return false, fmt.Errorf("reading the workflow that issued %s: %w", c.ID, err)
	}
	req := RenewalRequest(prev, ariID)
	req.Actor = "renewals@" + e.opts.Node
	w, err := e.createSuccessor(ctx, c.ID, req)
	if err != nil || w == nil {
		return false, err
	}
	e.log.Info("renewal started", zap.String("certificate_id", c.ID), zap.String("workflow_id", w.ID), zap.String("reason", d.Reason))
	return true, nil
}

// SuccessorBucket holds, per certificate, the workflow replacing it
// (renewal or migration), so that nodes scanning at once start one.
const SuccessorBucket = "certlocker_successors"

type successorClaim struct {
	WorkflowID string    `json:"workflow_id,omitempty"`
	Node       string    `json:"node"`
	At         time.Time `json:"at"`
}

// claimStale is how long a claim without a workflow (its node died
// between claiming and creating) blocks others.
const claimStale = 10 * time.Minute

// createSuccessor starts the workflow that replaces certificate certID,
// unless one is under way or already issued. The certificate is claimed
// by compare-and-swap first, so concurrent scans on several nodes start
// exactly one. It returns nil when another workflow has it.
func (e *Engine) createSuccessor(ctx context.Context, certID string, req Request) (*storage.Workflow, error) {
	kv := e.opts.Store.ACME()
	cur, err := kv.Get(ctx, SuccessorBucket, certID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		cur = nil
	case err != nil:
		return nil, err
	default:
		var cl successorClaim
		if json.Unmarshal(cur, &cl) == nil {
			if cl.WorkflowID == "" && e.opts.Clock().Sub(cl.At) < claimStale {
				return nil, nil // another node is creating it right now
			}
			if cl.WorkflowID != "" {
				w, err := e.opts.Store.Workflows().Get(ctx, cl.WorkflowID)
				if err == nil && (w.State == storage.StateIssued || !storage.IsTerminal(w.State)) {
					return nil, nil // under way, or done
				}
			}
		}
	}
	claiming, _ := json.Marshal(successorClaim{Node: e.opts.Node, At: e.opts.Clock()})
	if _, ok, err := kv.CompareAndSwap(ctx, SuccessorBucket, certID, cur, claiming); err != nil || !ok {
		return nil, err // lost the race: the winner starts it
	}
	w, err := e.Create(ctx, req)
	if err != nil {
		_ = kv.Delete(ctx, SuccessorBucket, certID)
		return nil, err
	}
	done, _ := json.Marshal(successorClaim{WorkflowID: w.ID, Node: e.opts.Node, At: e.opts.Clock()})
	if _, _, err := kv.CompareAndSwap(ctx, SuccessorBucket, certID, claiming, done); err != nil {
		return w, fmt.Errorf("recording the successor of %s: %w", certID, err)
	}
	return w, nil
}

// RunRenewals checks for due renewals every interval until ctx ends.
func (e *Engine) RunRenewals(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := e.RenewDue(ctx); err != nil && ctx.Err() == nil {
			e.log.Error("scanning for due renewals", zap.Error(err))
		} else if n > 0 {
			e.log.Info("renewals started", zap.Int("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func leafOf(chainPEM string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(chainPEM))
	if b == nil {
		return nil, errors.New("certificate chain is not PEM")
	}
	return x509.ParseCertificate(b.Bytes)
}
