package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// warmBucket maps a token ID to its current pre-authorization workflow.
const warmBucket = "gateway_warm"

type warmRecord struct {
	WorkflowID string    `json:"workflow_id"`
	IssuerID   string    `json:"issuer_id"`
	Names      []string  `json:"names"`
	Created    time.Time `json:"created"`
}

// Warm keeps the upstream authorizations of every active token's names
// valid: for a token with no pre-authorization workflow, or whose
// authorizations expire within WarmMargin (or whose names or ACME client
// changed, or whose last attempt failed more than WarmRetry ago), it
// starts a workflow of trigger preauthorization, which authorizes the
// names at the upstream CA without finalizing. An edge's later order for
// those names then comes back ready at once (the CA reuses the account's
// valid authorizations), and a finalize waits only for issuance. Safe on
// several nodes: the record is swapped, so one workflow starts per token.
func (g *Gateway) Warm(ctx context.Context) error {
	toks, err := g.store.Tokens().List(ctx, storage.TokenFilter{})
	if err != nil {
		return fmt.Errorf("warming upstream authorizations: listing tokens: %w", err)
	}
	var errs []error
	for _, t := range toks {
		if State(t, g.clock()) != StateActive || t.Spec.IssuerID == "" || len(t.Spec.Identifiers) == 0 {
			continue
		}
		if err := g.warmToken(ctx, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (g *Gateway) warmToken(ctx context.Context, t *storage.Token) error {
	names := make([]string, 0, len(t.Spec.Identifiers))
	for _, id := range t.Spec.Identifiers {
		names = append(names, id.Value)
	}
	slices.Sort(names)
	now := g.clock()
	old, err := g.store.ACME().Get(ctx, warmBucket, t.ID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		old = nil
	case err != nil:
		return fmt.Errorf("warming the authorizations of token %s: %w", t.ID, err)
	default:
		var rec warmRecord
		if json.Unmarshal(old, &rec) == nil && rec.IssuerID == t.Spec.IssuerID && slices.Equal(rec.Names, names) {
			w, err := g.engine.Get(ctx, rec.WorkflowID)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				if now.Sub(rec.Created) < time.Minute {
					return nil // its node is creating it right now
				}
			case err != nil:
				return fmt.Errorf("warming the authorizations of token %s: %w", t.ID, err)
			case !storage.IsTerminal(w.State):
				return nil // under way
			case w.State == storage.StateAuthorized:
				until := workflow.AuthorizedUntil(w)
				if until.IsZero() {
					until = rec.Created.Add(g.opts.WarmMargin * 4)
				}
				if until.Sub(now) > g.opts.WarmMargin {
					return nil // still warm
				}
			default: // failed or cancelled: try again, not at every pass
				if now.Sub(w.UpdatedAt) < g.opts.WarmRetry {
					return nil
				}
			}
		}
	}
	rec := warmRecord{WorkflowID: storage.NewID("wf"), IssuerID: t.Spec.IssuerID, Names: names, Created: now.UTC()}
	raw, _ := json.Marshal(rec)
	if _, swapped, err := g.store.ACME().CompareAndSwap(ctx, warmBucket, t.ID, old, raw); err != nil {
		return fmt.Errorf("warming the authorizations of token %s: recording the workflow: %w", t.ID, err)
	} else if !swapped {
		return nil // another node renewed it
	}
	ids := slices.Clone(t.Spec.Identifiers)
	if _, err := g.engine.Create(ctx, workflow.Request{ID: rec.WorkflowID, IssuerID: t.Spec.IssuerID, Identifiers: ids,
		Trigger: workflow.TriggerPreauthorization, Group: t.Group, Actor: "gateway"}); err != nil {
		return fmt.Errorf("warming the authorizations of token %s: %w", t.ID, err)
	}
	g.log.Debug("pre-authorizing a token's names upstream", zap.String("token_id", t.ID), zap.String("workflow_id", rec.WorkflowID))
	return nil
}

// WarmWorkflow returns the ID of a token's current pre-authorization
// workflow ("" if it has none).
func (g *Gateway) WarmWorkflow(ctx context.Context, tokenID string) string {
	raw, err := g.store.ACME().Get(ctx, warmBucket, tokenID)
	if err != nil {
		return ""
	}
	var rec warmRecord
	if json.Unmarshal(raw, &rec) != nil {
		return ""
	}
	return rec.WorkflowID
}

// KeepWarm runs Warm at once and then every interval until ctx ends; at
// each pass it also settles processing orders whose workflow has ended
// (CompleteProcessing), and at most hourly it prunes (Prune). An interval
// of zero or less does no warming but keeps that housekeeping, every
// minute.
func (g *Gateway) KeepWarm(ctx context.Context, every time.Duration) {
	warm := every > 0
	if !warm {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var pruned time.Time
	for {
		if warm {
			if err := g.Warm(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("warming upstream authorizations", zap.Error(err))
			}
		}
		if _, err := g.CompleteProcessing(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("completing processing orders", zap.Error(err))
		}
		if now := g.clock(); now.Sub(pruned) >= pruneEvery {
			pruned = now
			if _, err := g.Prune(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("pruning gateway records", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
