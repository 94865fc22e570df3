package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// fail ends the workflow with the CA's problem, or moves it to the next
// fallback ACME client if its policy names one.
func (s *session) fail(ctx context.Context, step, identifier, msg string, p *acme.Problem) error {
	if len(s.d.Fallbacks) > 0 {
		return s.fallBack(ctx, step, identifier, msg, p)
	}
	s.w.State = storage.StateFailed
	s.w.Status = msg
	if p != nil && p.Detail != "" {
		s.w.Status = msg + ": " + p.Detail
	}
	s.d.Problem = problemJSON(p)
	if p != nil {
		s.e.opts.Metrics.caError(p.Type)
	}
	s.e.cleanup(ctx, s.w, s.d) // before the terminal persist, as in download
	if err := s.save(ctx, storage.WorkflowEvent{Step: step, Identifier: identifier, Message: s.w.Status, Problem: problemJSON(p)}); err != nil {
		return err
	}
	s.e.emit("certlocker.workflow_failed", map[string]any{"workflow_id": s.w.ID, "message": s.w.Status, "issuer_id": s.w.IssuerID})
	s.log.Warn("workflow failed", zap.String("step", step), zap.String("identifier", identifier),
		zap.String("issuer_id", s.w.IssuerID), zap.String("message", s.w.Status))
	return nil
}

// fallBack starts the order over on the next fallback ACME client.
func (s *session) fallBack(ctx context.Context, step, identifier, msg string, p *acme.Problem) error {
	from := s.w.IssuerID
	s.e.cleanup(ctx, s.w, s.d)
	s.w.IssuerID, s.d.Fallbacks = s.d.Fallbacks[0], s.d.Fallbacks[1:]
	s.d.resetOrder(s.w)
	s.d.Replaces = ""
	s.w.Profile = "" // profiles are per CA
	s.w.Attempt, s.w.State, s.w.NextRunAt = 0, storage.StateRetryScheduled, s.e.opts.Clock()
	s.d.Resume, s.d.Problem = storage.StateOrdering, problemJSON(p)
	s.w.Status = "falling back to ACME client " + s.w.IssuerID + " after: " + msg
	if p != nil && p.Detail != "" {
		s.w.Status += ": " + p.Detail
	}
	if p != nil {
		s.e.opts.Metrics.caError(p.Type)
	}
	s.log.Warn("falling back to another ACME client", zap.String("from_issuer_id", from), zap.String("issuer_id", s.w.IssuerID),
		zap.String("step", step))
	return s.save(ctx, storage.WorkflowEvent{Step: step, Identifier: identifier, Message: s.w.Status, Problem: problemJSON(p)})
}

// failOrRetry schedules a retry for transient errors and fails the
// workflow for permanent ones. Context cancellation is passed up.
func (s *session) failOrRetry(ctx context.Context, step, identifier string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, storage.ErrConflict) {
		return err
	}
	var p acme.Problem
	var pp *acme.Problem
	if errors.As(err, &p) {
		pp = &p
	}
	ptype := ""
	if pp != nil {
		ptype = pp.Type
	}
	s.w.Attempt++
	at, ok := NextRetry(s.e.settings().Retry, s.w.Attempt, ptype, s.ra.get(), s.e.opts.Clock(), jitter())
	if !ok {
		return s.fail(ctx, step, identifier, describe(step, err), pp)
	}
	s.e.opts.Metrics.caError(ptype)
	s.d.Resume = s.w.State
	s.d.Problem = problemJSON(pp)
	s.w.State = storage.StateRetryScheduled
	s.w.NextRunAt = at
	s.w.Status = describe(step, err)
	return s.save(ctx, storage.WorkflowEvent{Step: step, Identifier: identifier,
		Message: fmt.Sprintf("%s; retry %d at %s", s.w.Status, s.w.Attempt, at.UTC().Format(time.RFC3339)),
		Problem: problemJSON(pp), RetryAfter: s.ra.get()})
}

func describe(step string, err error) string {
	var p acme.Problem
	if errors.As(err, &p) {
		return fmt.Sprintf("%s: the CA answered %s: %s", step, strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:"), p.Detail)
	}
	return fmt.Sprintf("%s: %v", step, err)
}

func problemJSON(p *acme.Problem) json.RawMessage {
	if p == nil || (p.Type == "" && p.Detail == "") {
		return nil
	}
	b, _ := json.Marshal(p)
	return b
}
