package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Triggers say why a workflow exists.
const (
	TriggerManual    = "manual"
	TriggerRenewal   = "renewal"
	TriggerGateway   = "gateway"
	TriggerMigration = "migration"
	// TriggerPreauthorization: authorize the identifiers at the CA and
	// stop before finalizing (the gateway keeps authorizations warm).
	TriggerPreauthorization = "preauthorization"
)

// Request asks for a new workflow.
type Request struct {
	IssuerID    string
	Identifiers []storage.Identifier
	KeyType     string
	Profile     string
	Trigger     string
	Group       string
	// PreviousCertificateID and Replaces link a renewal to the
	// certificate it replaces (Replaces is its ARI certificate ID).
	PreviousCertificateID string
	Replaces              string
	ParentID              string
	// FallbackIssuerIDs are ACME clients to switch to, in order, when
	// the CA fails the order for good (its problem, or out of retries).
	FallbackIssuerIDs []string
	// StartAt delays the first step (pacing); zero starts at once.
	StartAt time.Time
	// Actor, if set, is recorded in the audit log (workflow.create) in the
	// same transaction as the workflow.
	Actor string
	// ID, if set, is the new workflow's ID (made with storage.NewID("wf")).
	ID string
	// CSR, for trigger gateway only, is the edge's CSR (DER) to finalize
	// with; the workflow then generates and holds no key.
	CSR []byte
}

// InvalidError is a request the engine refuses, naming the field.
type InvalidError struct {
	Field, Message string
}

func (e *InvalidError) Error() string { return e.Message }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Validate checks a request without touching the store.
func (r *Request) Validate() error {
	if r.IssuerID == "" {
		return invalid("issuer_id", "issuer_id is required")
	}
	if len(r.Identifiers) == 0 {
		return invalid("identifiers", "at least one identifier is required")
	}
	if len(r.Identifiers) > 100 {
		return invalid("identifiers", "at most 100 identifiers per order")
	}
	seen := map[string]bool{}
	for i := range r.Identifiers {
		id := &r.Identifiers[i]
		field := fmt.Sprintf("identifiers[%d]", i)
		id.Value = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(id.Value), "."))
		if id.Type == "" {
			id.Type = "dns"
			if net.ParseIP(strings.Trim(id.Value, "[]")) != nil {
				id.Type = "ip"
			}
		}
		switch id.Type {
		case "dns":
			if err := checkDNSName(id.Value); err != nil {
				return invalid(field+".value", "%s: %v", field, err)
			}
		case "ip":
			ip := net.ParseIP(strings.Trim(id.Value, "[]"))
			if ip == nil {
				return invalid(field+".value", "%s: %q is not an IP address", field, id.Value)
			}
			id.Value = ip.String()
		default:
			return invalid(field+".type", "%s: type must be dns or ip", field)
		}
		if seen[id.Value] {
			return invalid(field+".value", "%s: %s is listed twice", field, id.Value)
		}
		seen[id.Value] = true
		switch id.Challenge {
		case "":
			if strings.HasPrefix(id.Value, "*.") {
				id.Challenge = ChallengeDNS01
			} else {
				id.Challenge = ChallengeHTTP01
			}
		case ChallengeDNS01, ChallengeHTTP01:
		default:
			return invalid(field+".challenge", "%s: challenge must be dns-01 or http-01", field)
		}
		if strings.HasPrefix(id.Value, "*.") && id.Challenge != ChallengeDNS01 {
			return invalid(field+".challenge", "%s: a wildcard needs dns-01", field)
		}
		if id.Type == "ip" && id.Challenge == ChallengeDNS01 {
			return invalid(field+".challenge", "%s: an IP address cannot use dns-01", field)
		}
		if id.Challenge == ChallengeDNS01 && id.DNSProviderID == "" {
			return invalid(field+".dns_provider_id", "%s: dns-01 needs a dns_provider_id", field)
		}
	}
	if !storage.ValidGroup(r.Group) {
		return invalid("group", "group must be %s", storage.GroupRule)
	}
	if !ValidKeyType(r.KeyType) {
		return invalid("key_type", "key_type must be one of p256, p384, rsa2048, rsa3072, rsa4096")
	}
	switch r.Trigger {
	case "":
		r.Trigger = TriggerManual
	case TriggerManual, TriggerRenewal, TriggerGateway, TriggerMigration, TriggerPreauthorization:
	default:
		return invalid("trigger", "unknown trigger %q", r.Trigger)
	}
	return nil
}

func checkDNSName(name string) error {
	n := strings.TrimPrefix(name, "*.")
	if n == "" || len(name) > 253 {
		return fmt.Errorf("%q is not a DNS name", name)
	}
	if strings.Contains(n, "*") {
		return fmt.Errorf("%q: only a leading \"*.\" label may be a wildcard", name)
	}
	labels := strings.Split(n, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%q is not a fully qualified name", name)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return fmt.Errorf("%q has an invalid label %q", name, l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q has an invalid character %q", name, c)
			}
		}
	}
	return nil
}

// Query parameters of the workflow list, as the admin API and the UI take
// them.
var listParams = []string{"state", "issuer", "domain", "group"}

// FilterFromQuery reads list filters from URL query parameters:
//
//	state=   a workflow state (pending, ordering, ..., issued, failed)
//	issuer=  ACME client ID
//	domain=  a DNS name or IP among the workflow's identifiers
//	group=   group
//
// Parameters named in extra are allowed and left to the caller; any other
// parameter, or a value that can match nothing, is an *InvalidError
// naming it, so a typo does not silently match all or nothing.
func FilterFromQuery(q url.Values, extra ...string) (storage.WorkflowFilter, error) {
	for k := range q {
		if !slices.Contains(listParams, k) && !slices.Contains(extra, k) {
			return storage.WorkflowFilter{}, invalid(k, "unknown query parameter %q: use %s", k,
				strings.Join(append(slices.Clone(listParams), extra...), ", "))
		}
	}
	f := storage.WorkflowFilter{State: q.Get("state"), IssuerID: q.Get("issuer"), Domain: q.Get("domain"), Group: q.Get("group")}
	if f.State != "" && !slices.Contains(states, f.State) {
		return f, invalid("state", "unknown state %q: use one of %s", f.State, strings.Join(states, ", "))
	}
	if !storage.ValidGroup(f.Group) {
		return f, invalid("group", "group must be %s", storage.GroupRule)
	}
	return f, nil
}

// states are every state a workflow can be in.
var states = []string{storage.StatePending, storage.StateOrdering, storage.StateAuthorizing, storage.StateFinalizing,
	storage.StateDownloading, storage.StateIssued, storage.StateAuthorized, storage.StateFailed, storage.StateCancelled, storage.StateRetryScheduled}

// Get returns a workflow (storage.ErrNotFound if there is none).
// Under a group scope (storage.WithGroups), workflows of other groups are
// not found.
func (e *Engine) Get(ctx context.Context, id string) (*storage.Workflow, error) {
	w, err := e.opts.Store.Workflows().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := storage.CheckScope(ctx, w.Group, "workflow "+id); err != nil {
		return nil, err
	}
	return w, nil
}

// List returns the workflows matching f, a page at a time, and the cursor
// of the next page ("" after the last).
// Under a group scope only the scope's workflows are listed, filtered in
// the query (a page is full however the groups' rows interleave).
func (e *Engine) List(ctx context.Context, f storage.WorkflowFilter, p storage.Page) ([]*storage.Workflow, string, error) {
	g, groups, ok := storage.ScopeFilter(ctx, f.Group)
	if !ok {
		return nil, "", nil
	}
	f.Group, f.Groups = g, groups
	ws, next, err := e.opts.Store.Workflows().List(ctx, f, p)
	if err != nil {
		return nil, "", err
	}
	return storage.FilterScope(ctx, ws, func(w *storage.Workflow) string { return w.Group }), next, nil
}

// Events returns up to limit entries of a workflow's timeline after the
// one numbered after (0: from the start), oldest first.
func (e *Engine) Events(ctx context.Context, id string, after int64, limit int) ([]*storage.WorkflowEvent, error) {
	if _, restricted := storage.ScopeGroups(ctx); restricted {
		if _, err := e.Get(ctx, id); err != nil {
			return nil, err
		}
	}
	return e.opts.Store.Workflows().Events(ctx, id, after, limit)
}

// Create stores a new workflow and wakes the scheduler.
func (e *Engine) Create(ctx context.Context, r Request) (*storage.Workflow, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if err := checkSuppliedCSR(&r); err != nil {
		return nil, err
	}
	if !storage.InScope(ctx, r.Group) {
		return nil, invalid("group", "group %q is not one of yours: choose one of your groups", r.Group)
	}
	d := &orderData{Replaces: r.Replaces, Fallbacks: r.FallbackIssuerIDs, CSR: r.CSR}
	raw, err := d.encode()
	if err != nil {
		return nil, err
	}
	w := &storage.Workflow{ID: r.ID, IssuerID: r.IssuerID, Identifiers: r.Identifiers, KeyType: r.KeyType, Profile: r.Profile,
		Trigger: r.Trigger, Group: r.Group, State: storage.StatePending, Status: "waiting to start",
		PreviousCertificateID: r.PreviousCertificateID, ParentID: r.ParentID, NextRunAt: e.opts.Clock(), Data: raw}
	if !r.StartAt.IsZero() {
		w.NextRunAt = r.StartAt
	}
	err = e.opts.Store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Workflows().Create(ctx, w); err != nil {
			return err
		}
		names := make([]string, 0, len(w.Identifiers))
		for _, id := range w.Identifiers {
			names = append(names, id.Value+" ("+id.Challenge+")")
		}
		if err := tx.Workflows().AppendEvent(ctx, &storage.WorkflowEvent{WorkflowID: w.ID, Node: e.opts.Node, State: w.State,
			Step: "created", Message: r.Trigger + " order for " + strings.Join(names, ", "), Time: e.opts.Clock()}); err != nil {
			return err
		}
		if r.Actor == "" {
			return nil
		}
		details, _ := json.Marshal(map[string]any{"issuer_id": w.IssuerID, "identifiers": w.Identifiers, "trigger": w.Trigger})
		return tx.Audit().Append(ctx, &storage.AuditEntry{Node: e.opts.Node, Actor: r.Actor, Action: "workflow.create",
			Target: w.ID, Group: w.Group, Details: details})
	})
	if err != nil {
		return nil, err
	}
	e.Kick()
	return w, nil
}

// Cancel ends a workflow that is not finished. A run in progress on this
// node stops at once; on another node, at its next step. Records it
// published are removed.
func (e *Engine) Cancel(ctx context.Context, id, actor string) (*storage.Workflow, error) {
	w, err := e.changeState(ctx, id, func(w *storage.Workflow) error {
		if storage.IsTerminal(w.State) {
			return invalid("state", "workflow %s is already %s", id, w.State)
		}
		w.State, w.Status = storage.StateCancelled, "cancelled by "+actor
		return nil
	}, "cancelled", "cancelled by "+actor, actor)
	if err != nil {
		return nil, err
	}
	e.cancelLocal(id)
	// clean up now unless another live node holds it (that node cleans up
	// when its next step finds the workflow cancelled); a local run also
	// looks again when it stops
	if w.LeaseOwner == "" || w.LeaseOwner == e.opts.Node || !w.LeaseUntil.After(e.opts.Clock()) {
		d, _ := decodeData(w.Data)
		e.cleanup(ctx, w, d)
	}
	return w, nil
}

// Retry puts a failed or retry-scheduled workflow back to run now, resuming
// its order if the CA still holds it.
func (e *Engine) Retry(ctx context.Context, id, actor string) (*storage.Workflow, error) {
	w, err := e.changeState(ctx, id, func(w *storage.Workflow) error {
		switch w.State {
		case storage.StateFailed, storage.StateRetryScheduled:
		default:
			return invalid("state", "only a failed or retry-scheduled workflow can be retried; %s is %s", id, w.State)
		}
		d, _ := decodeData(w.Data)
		if w.State == storage.StateFailed {
			d.Resume = storage.StateOrdering
			w.Attempt = 0
		}
		raw, err := d.encode()
		if err != nil {
			return err
		}
		w.Data = raw
		w.State, w.Status, w.NextRunAt = storage.StateRetryScheduled, "retry requested", e.opts.Clock()
		return nil
	}, "retry", "retry requested by "+actor, actor)
	if err != nil {
		return nil, err
	}
	e.Kick()
	return w, nil
}

// changeState applies fn to the latest version of the workflow, retrying
// on concurrent changes, and records the event and the audit entry
// (workflow.<step>, by actor) in the same transaction.
func (e *Engine) changeState(ctx context.Context, id string, fn func(*storage.Workflow) error, step, msg, actor string) (*storage.Workflow, error) {
	for attempt := 0; attempt < 20; attempt++ {
		w, err := e.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(w); err != nil {
			return nil, err
		}
		owner := w.LeaseOwner
		w.LeaseOwner = "" // an operator's change does not need the lease
		err = e.opts.Store.InTx(ctx, func(tx storage.Store) error {
			if err := tx.Workflows().Update(ctx, w); err != nil {
				return err
			}
			if err := tx.Workflows().AppendEvent(ctx, &storage.WorkflowEvent{WorkflowID: id, Node: e.opts.Node, State: w.State,
				Step: step, Message: msg, Time: e.opts.Clock()}); err != nil {
				return err
			}
			details, _ := json.Marshal(map[string]any{"state": w.State})
			return tx.Audit().Append(ctx, &storage.AuditEntry{Node: e.opts.Node, Actor: actor, Action: "workflow." + step,
				Target: id, Group: w.Group, Details: details})
		})
		w.LeaseOwner = owner
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		e.notifyWatchers(id)
		e.emit("certlocker.workflow_state", map[string]any{"workflow_id": id, "state": w.State, "step": step, "message": msg})
		return w, nil
	}
	return nil, fmt.Errorf("changing workflow %s: %w", id, storage.ErrConflict)
}
