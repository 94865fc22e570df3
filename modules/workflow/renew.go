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

	"github.com/certlocker/caddy-certlocker/internal/renewal"
	"github.com/certlocker/caddy-certlocker/storage"
)

// RenewDue looks at every active certificate CertLocker issued and starts
// a renewal workflow for each that is due by renewal.Decide: inside the
// CA's ARI window (RFC 9773) when the CA offers one, else at two thirds of
// its lifetime.
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
	// through its life (ARI windows sit near the two-thirds point), and
	// record it on the certificate, where the inventory reads it; without
	// an answer, the window last recorded holds
	window := renewal.WindowOf(c.Meta)
	ariID := ""
	if deps != nil && deps.Clients != nil && now.After(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore)/2)) {
		if cl, _, err := deps.Clients.Client(ctx, c.IssuerID); err == nil {
			if dir, err := cl.GetDirectory(ctx); err == nil && dir.RenewalInfo != "" {
				if ri, err := cl.GetRenewalInfo(ctx, leaf); err == nil {
					window = e.recordWindow(ctx, c, &renewal.Window{Start: ri.SuggestedWindow.Start, End: ri.SuggestedWindow.End})
				}
				ariID, _ = acme.ARIUniqueIdentifier(leaf)
			}
		}
	}
	d := renewal.Decide(c.NotBefore, c.NotAfter, window, now)
	if !d.Renew {
		return false, nil
	}
	prev, err := e.opts.Store.Workflows().Get(ctx, c.WorkflowID)
	if err != nil {
		return false, fmt.Errorf("reading the workflow that issued %s: %w", c.ID, err)
	}
	if prev.Trigger == TriggerGateway {
		return false, nil // the edge holds the key and renews itself
	}
	req := RenewalRequest(prev, ariID)
	req.Actor = "renewals@" + e.opts.Node
	w, err := e.createSuccessor(ctx, c.ID, req, false)
	if err != nil || w == nil {
		return false, err
	}
	e.log.Info("renewal started", zap.String("certificate_id", c.ID), zap.String("workflow_id", w.ID), zap.String("reason", d.Reason))
	return true, nil
}

// recordWindow stores the CA's renewal window on c, where the inventory
// reads it, if it changed (a CA that stops giving one clears it), and
// returns the window to decide by.
func (e *Engine) recordWindow(ctx context.Context, c *storage.Certificate, w *renewal.Window) *renewal.Window {
	if !w.Usable() {
		w = nil
	}
	if w.Equal(renewal.WindowOf(c.Meta)) {
		return w
	}
	meta, err := renewal.WithWindow(c.Meta, w)
	if err == nil {
		upd := *c
		upd.Meta = meta
		err = e.opts.Store.Certificates().Update(ctx, &upd)
	}
	// a concurrent change (another node recording it, a re-rating) wins;
	// the next scan records it again
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		e.log.Warn("recording the CA's renewal window", zap.String("certificate_id", c.ID), zap.Error(err))
	}
	return w
}

// SuccessorBucket holds, per certificate, the workflow replacing it
// (renewal or migration), so that nodes scanning at once start one.
const SuccessorBucket = "certlocker_successors"

type successorClaim struct {
	// WorkflowID is the successor, named before it is created.
	WorkflowID string    `json:"workflow_id"`
	Node       string    `json:"node"`
	At         time.Time `json:"at"`
	// Failures counts successors that ended without a certificate; each
	// doubles the wait before the next (1h, 2h, 4h … capped at a day).
	Failures int `json:"failures,omitempty"`
}

// claimStale is how long a claim whose workflow does not exist yet (its
// node died between claiming and creating) blocks others.
const claimStale = 10 * time.Minute

// successorBackoff is the wait after n failed successors.
func successorBackoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := time.Hour << min(n-1, 5)
	if d > 24*time.Hour {
		d = 24 * time.Hour
	}
	return d
}

// createSuccessor starts the workflow that replaces certificate certID,
// unless one is under way, already issued, or the last ones failed too
// recently. The certificate is claimed by compare-and-swap, naming the new
// workflow's ID before it is created, so concurrent scans on several nodes
// start exactly one. It returns nil when nothing is to be started now.
func (e *Engine) createSuccessor(ctx context.Context, certID string, req Request, force bool) (*storage.Workflow, error) {
	kv := e.opts.Store.ACME()
	now := e.opts.Clock()
	failures := 0
	cur, err := kv.Get(ctx, SuccessorBucket, certID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		cur = nil
	case err != nil:
		return nil, err
	default:
		var cl successorClaim
		if err := json.Unmarshal(cur, &cl); err != nil {
			return nil, fmt.Errorf("reading the successor claim of %s: %w", certID, err)
		}
		w, err := e.opts.Store.Workflows().Get(ctx, cl.WorkflowID)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			if now.Sub(cl.At) < claimStale {
				return nil, nil // its node is creating it right now
			}
			failures = cl.Failures // the claiming node died before creating it
		case err != nil:
			return nil, err
		case w.State == storage.StateIssued || !storage.IsTerminal(w.State):
			return nil, nil // under way, or done
		default: // failed or cancelled
			failures = cl.Failures + 1
			// measured from when that successor started (the engine's clock)
			if !force && now.Before(cl.At.Add(successorBackoff(failures))) {
				return nil, nil
			}
		}
	}
	req.ID = storage.NewID("wf")
	claim, _ := json.Marshal(successorClaim{WorkflowID: req.ID, Node: e.opts.Node, At: now, Failures: failures})
	if _, ok, err := kv.CompareAndSwap(ctx, SuccessorBucket, certID, cur, claim); err != nil || !ok {
		return nil, err // lost the race: the winner starts it
	}
	if e.opts.afterClaim != nil {
		if err := e.opts.afterClaim(certID, req.ID); err != nil {
			return nil, err // as if the node died: the claim stays
		}
	}
	w, err := e.Create(ctx, req)
	if err != nil {
		if cur == nil {
			_ = kv.Delete(ctx, SuccessorBucket, certID)
		} else {
			_, _, _ = kv.CompareAndSwap(ctx, SuccessorBucket, certID, claim, cur)
		}
		return nil, err
	}
	return w, nil
}

// Renew starts a renewal of an issued workflow's certificate now, unless
// one is already under way (then it returns nil).
func (e *Engine) Renew(ctx context.Context, w *storage.Workflow, actor string) (*storage.Workflow, error) {
	if err := storage.CheckScope(ctx, w.Group, "workflow "+w.ID); err != nil {
		return nil, err
	}
	if w.State != storage.StateIssued || w.CertificateID == "" {
		return nil, invalid("state", "only an issued workflow can be renewed; %s is %s", w.ID, w.State)
	}
	req := RenewalRequest(w, "")
	req.Actor = actor
	return e.createSuccessor(ctx, w.CertificateID, req, true)
}

// renewals scans for due renewals every RenewalInterval until ctx ends; a
// negative interval turns the scan off until Configure turns it on again.
func (e *Engine) renewals(ctx context.Context) {
	var last time.Time // of the last scan, on the engine's clock
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		interval := e.settings().RenewalInterval
		if interval > 0 && (last.IsZero() || !e.opts.Clock().Before(last.Add(interval))) {
			last = e.opts.Clock()
			if n, err := e.RenewDue(ctx); err != nil && ctx.Err() == nil {
				e.log.Error("scanning for due renewals", zap.Error(err))
			} else if n > 0 {
				e.log.Info("renewals started", zap.Int("count", n))
			}
		}
		var tick <-chan time.Time
		if interval > 0 {
			timer.Reset(max(0, last.Add(interval).Sub(e.opts.Clock())))
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-e.changes():
			timer.Stop()
		case <-tick:
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
