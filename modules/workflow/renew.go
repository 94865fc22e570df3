package workflow

import (
	"context"
	"crypto/x509"
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
	if busy, err := e.renewalUnderway(ctx, c, prev); err != nil || busy {
		return false, err
	}
	req := RenewalRequest(prev, ariID)
	w, err := e.Create(ctx, req)
	if err != nil {
		return false, err
	}
	e.log.Info("renewal started", zap.String("certificate_id", c.ID), zap.String("workflow_id", w.ID), zap.String("reason", d.Reason))
	return true, nil
}

// renewalUnderway reports whether a workflow renewing c is not finished,
// or finished issuing (its certificate is on its way to replace c).
func (e *Engine) renewalUnderway(ctx context.Context, c *storage.Certificate, prev *storage.Workflow) (bool, error) {
	if len(prev.Identifiers) == 0 {
		return false, nil
	}
	cursor := ""
	for {
		ws, next, err := e.opts.Store.Workflows().List(ctx, storage.WorkflowFilter{Domain: prev.Identifiers[0].Value},
			storage.Page{Cursor: cursor, Limit: 200})
		if err != nil {
			return false, err
		}
		for _, w := range ws {
			if w.PreviousCertificateID == c.ID && (w.State == storage.StateIssued || !storage.IsTerminal(w.State)) {
				return true, nil
			}
		}
		if next == "" {
			return false, nil
		}
		cursor = next
	}
}

// supersede marks the certificate a renewal replaced.
func (e *Engine) supersede(ctx context.Context, prevID, newID string) error {
	for attempt := 0; attempt < 5; attempt++ {
		c, err := e.opts.Store.Certificates().Get(ctx, prevID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil // deleted meanwhile: nothing to mark
		}
		if err != nil {
			return err
		}
		if c.ReplacedBy == newID {
			return nil
		}
		c.ReplacedBy, c.Status = newID, storage.CertStatusRenewed
		err = e.opts.Store.Certificates().Update(ctx, c)
		if !errors.Is(err, storage.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("marking certificate %s as renewed: %w", prevID, storage.ErrConflict)
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
