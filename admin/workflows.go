package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	routeSets = append(routeSets, func(a *API) {
		a.handle("/certlocker/workflows", methods{http.MethodGet: a.listWorkflows, http.MethodPost: a.createWorkflow})
		a.handle("/certlocker/workflows/{id}", methods{http.MethodGet: a.getWorkflow})
		a.handle("/certlocker/workflows/{id}/actions/{action}", methods{http.MethodPost: a.workflowAction})
		a.handle("/certlocker/workflows/{id}/events", methods{http.MethodGet: a.workflowEvents})
		a.handle("/certlocker/migrations", methods{http.MethodPost: a.startMigration})
	})
}

// workflowView is a workflow as the API shows it: never its private key.
type workflowView struct {
	ID                    string               `json:"id"`
	IssuerID              string               `json:"issuer_id"`
	Identifiers           []storage.Identifier `json:"identifiers"`
	KeyType               string               `json:"key_type,omitempty"`
	Profile               string               `json:"profile,omitempty"`
	Trigger               string               `json:"trigger"`
	Group                 string               `json:"group,omitempty"`
	State                 string               `json:"state"`
	Status                string               `json:"status"`
	OrderURL              string               `json:"order_url,omitempty"`
	CertificateID         string               `json:"certificate_id,omitempty"`
	PreviousCertificateID string               `json:"previous_certificate_id,omitempty"`
	ParentID              string               `json:"parent_id,omitempty"`
	Attempt               int                  `json:"attempt"`
	NextRunAt             *time.Time           `json:"next_run_at,omitempty"`
	LeaseOwner            string               `json:"lease_owner,omitempty"`
	CreatedAt             time.Time            `json:"created_at"`
	UpdatedAt             time.Time            `json:"updated_at"`
	workflow.Progress
	Timeline []eventView `json:"timeline,omitempty"`
}

type eventView struct {
	Seq        int64           `json:"seq"`
	Time       time.Time       `json:"time"`
	Node       string          `json:"node"`
	State      string          `json:"state"`
	Step       string          `json:"step,omitempty"`
	Identifier string          `json:"identifier,omitempty"`
	Message    string          `json:"message,omitempty"`
	DurationMS int64           `json:"duration_ms,omitempty"`
	Problem    json.RawMessage `json:"problem,omitempty"`
	RetryAfter float64         `json:"retry_after_seconds,omitempty"`
}

func viewWorkflow(w *storage.Workflow) workflowView {
	v := workflowView{ID: w.ID, IssuerID: w.IssuerID, Identifiers: w.Identifiers, KeyType: w.KeyType, Profile: w.Profile,
		Trigger: w.Trigger, Group: w.Group, State: w.State, Status: w.Status, OrderURL: w.OrderURL, CertificateID: w.CertificateID,
		PreviousCertificateID: w.PreviousCertificateID, ParentID: w.ParentID, Attempt: w.Attempt, CreatedAt: w.CreatedAt,
		UpdatedAt: w.UpdatedAt, Progress: workflow.ProgressOf(w)}
	if w.State == storage.StateRetryScheduled && !w.NextRunAt.IsZero() {
		t := w.NextRunAt
		v.NextRunAt = &t
	}
	if w.LeaseUntil.After(time.Now()) {
		v.LeaseOwner = w.LeaseOwner
	}
	return v
}

func viewEvent(ev *storage.WorkflowEvent) eventView {
	return eventView{Seq: ev.Seq, Time: ev.Time, Node: ev.Node, State: ev.State, Step: ev.Step, Identifier: ev.Identifier,
		Message: ev.Message, DurationMS: ev.Duration.Milliseconds(), Problem: ev.Problem, RetryAfter: ev.RetryAfter.Seconds()}
}

type createWorkflowBody struct {
	IssuerID    string               `json:"issuer_id"`
	Identifiers []storage.Identifier `json:"identifiers"`
	KeyType     string               `json:"key_type"`
	Profile     string               `json:"profile"`
	Group       string               `json:"group"`
	// FallbackIssuerIDs are ACME clients to try, in order, if the CA
	// fails the order for good.
	FallbackIssuerIDs []string `json:"fallback_issuer_ids"`
}

// createWorkflow answers POST /certlocker/workflows.
func (a *API) createWorkflow(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var body createWorkflowBody
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if err := checkIssuer(r, app, "issuer_id", body.IssuerID); err != nil {
		return err
	}
	for i, id := range body.FallbackIssuerIDs {
		if id == "" || id == body.IssuerID {
			return BadRequest(fmt.Sprintf("fallback_issuer_ids[%d]", i), "a fallback must be another ACME client")
		}
		if err := checkIssuer(r, app, fmt.Sprintf("fallback_issuer_ids[%d]", i), id); err != nil {
			return err
		}
	}
	for i, id := range body.Identifiers {
		if id.DNSProviderID == "" {
			continue
		}
		// by ID or name; the workflow keeps the ID
		p, err := app.DNS().Get(r.Context(), id.DNSProviderID)
		if errors.Is(err, storage.ErrNotFound) {
			return BadRequest(fmt.Sprintf("identifiers[%d].dns_provider_id", i), "no DNS provider client %q", id.DNSProviderID)
		} else if err != nil {
			return err
		}
		body.Identifiers[i].DNSProviderID = p.ID
		if err := checkDelegation(r, app, fmt.Sprintf("identifiers[%d].value", i), p.ID, id.Value); err != nil {
			return err
		}
	}
	wf, err := app.Workflows().Create(r.Context(), workflow.Request{IssuerID: body.IssuerID, Identifiers: body.Identifiers,
		KeyType: body.KeyType, Profile: body.Profile, Group: body.Group, Trigger: workflow.TriggerManual,
		FallbackIssuerIDs: body.FallbackIssuerIDs, Actor: actor(r)})
	if err != nil {
		return workflowError(err)
	}
	writeJSON(w, http.StatusCreated, viewWorkflow(wf))
	return nil
}

// checkIssuer answers 400 naming field if id is set and no such ACME
// client exists.
func checkIssuer(r *http.Request, app *certlocker.App, field, id string) error {
	if id == "" {
		return nil
	}
	if _, err := app.IssuerRegistry().Get(r.Context(), id); errors.Is(err, storage.ErrNotFound) {
		return BadRequest(field, "no ACME client %q", id)
	} else if err != nil {
		return err
	}
	return nil
}

type migrationBody struct {
	FromIssuerID  string `json:"from_issuer_id"`
	Group         string `json:"group"`
	Domain        string `json:"domain"`
	ToIssuerID    string `json:"to_issuer_id"`
	PerMinute     int    `json:"per_minute"`
	DNSProviderID string `json:"dns_provider_id"`
}

// startMigration answers POST /certlocker/migrations: re-issue the selected
// certificates on another ACME client, paced; progress is visible as the
// returned workflows.
func (a *API) startMigration(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var body migrationBody
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if err := checkIssuer(r, app, "to_issuer_id", body.ToIssuerID); err != nil {
		return err
	}
	if err := checkIssuer(r, app, "from_issuer_id", body.FromIssuerID); err != nil {
		return err
	}
	res, err := app.Workflows().Migrate(r.Context(), workflow.Migration{FromIssuerID: body.FromIssuerID, Group: body.Group,
		Domain: body.Domain, ToIssuerID: body.ToIssuerID, PerMinute: body.PerMinute, DNSProviderID: body.DNSProviderID,
		Actor: actor(r)})
	if err != nil && (res == nil || len(res.Workflows) == 0) {
		return workflowError(err)
	}
	if err != nil {
		// some workflows started before the failure: they run; say so
		ids := make([]string, 0, len(res.Workflows))
		for _, wf := range res.Workflows {
			ids = append(ids, wf.ID)
		}
		msg := internalError(a.logger.With(zap.String("issuer_id", body.ToIssuerID), zap.String("from_issuer_id", body.FromIssuerID),
			zap.Int("started", len(ids))), "migration stopped", err)
		audit(r, app, body.Group, "workflow.migrate", body.ToIssuerID, map[string]any{"from_issuer_id": body.FromIssuerID,
			"started": ids, "error": msg})
		return &Error{Status: http.StatusInternalServerError,
			Message: fmt.Sprintf("migration stopped after starting %d workflows (%s): %s", len(ids), strings.Join(ids, ", "), msg)}
	}
	out := struct {
		Workflows []workflowView           `json:"workflows"`
		Skipped   []workflow.MigrationSkip `json:"skipped"`
	}{Workflows: []workflowView{}, Skipped: res.Skipped}
	for _, wf := range res.Workflows {
		out.Workflows = append(out.Workflows, viewWorkflow(wf))
	}
	audit(r, app, body.Group, "workflow.migrate", body.ToIssuerID, map[string]any{"from_issuer_id": body.FromIssuerID, "group": body.Group,
		"domain": body.Domain, "started": len(res.Workflows), "skipped": len(res.Skipped)})
	writeJSON(w, http.StatusAccepted, out)
	return nil
}

func workflowError(err error) error {
	var inv *workflow.InvalidError
	if errors.As(err, &inv) {
		if inv.Field == "state" {
			return &Error{Status: http.StatusConflict, Message: inv.Message, Field: inv.Field}
		}
		return BadRequest(inv.Field, "%s", inv.Message)
	}
	return err
}

// listWorkflows answers GET /certlocker/workflows?state=&issuer=&domain=&group=&limit=&cursor=
// (see workflow.FilterFromQuery).
func (a *API) listWorkflows(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	f, err := workflow.FilterFromQuery(r.URL.Query(), "limit", "cursor")
	var inv *workflow.InvalidError
	if errors.As(err, &inv) {
		return BadRequest(inv.Field, "%s", inv.Message)
	} else if err != nil {
		return err
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	ws, next, err := app.Workflows().List(r.Context(), f, p)
	if err != nil {
		return err
	}
	out := struct {
		Items      []workflowView `json:"items"`
		NextCursor string         `json:"next_cursor,omitempty"`
	}{Items: []workflowView{}, NextCursor: next}
	for _, wf := range ws {
		out.Items = append(out.Items, viewWorkflow(wf))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getWorkflow answers GET /certlocker/workflows/{id} with the timeline.
func (a *API) getWorkflow(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	wf, err := app.Workflows().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	evs, err := app.Workflows().Events(r.Context(), wf.ID, 0, storage.MaxLimit)
	if err != nil {
		return err
	}
	v := viewWorkflow(wf)
	v.Timeline = []eventView{}
	for _, ev := range evs {
		v.Timeline = append(v.Timeline, viewEvent(ev))
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// workflowAction answers POST /certlocker/workflows/{id}/actions/{retry|cancel|renew}.
func (a *API) workflowAction(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	id, action := r.PathValue("id"), r.PathValue("action")
	eng := app.Workflows()
	var (
		wf  *storage.Workflow
		err error
	)
	status := http.StatusOK
	switch action {
	case "retry":
		wf, err = eng.Retry(r.Context(), id, actor(r))
	case "cancel":
		wf, err = eng.Cancel(r.Context(), id, actor(r))
	case "renew":
		var prev *storage.Workflow
		if prev, err = app.Workflows().Get(r.Context(), id); err != nil {
			return err
		}
		if wf, err = eng.Renew(r.Context(), prev, actor(r)); err == nil && wf == nil {
			return &Error{Status: http.StatusConflict, Message: "a renewal of this certificate is already under way", Field: "state"}
		}
		status = http.StatusCreated
	default:
		return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("unknown action %q: use retry, cancel or renew", action), Field: "action"}
	}
	if err != nil {
		return workflowError(err)
	}
	writeJSON(w, status, viewWorkflow(wf))
	return nil
}

// workflowEvents answers GET /certlocker/workflows/{id}/events with the
// timeline as Server-Sent Events: every event so far (or after the
// Last-Event-ID the client sends on reconnect), then each new one as it is
// persisted, until the workflow is finished and its last event sent.
func (a *API) workflowEvents(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	id := r.PathValue("id")
	current, err := app.Workflows().Get(r.Context(), id)
	if err != nil {
		return err
	}
	var after int64
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return BadRequest("Last-Event-ID", "Last-Event-ID must be an event sequence number")
		}
		after = n
	}
	if storage.IsTerminal(current.State) && after > 0 {
		// a client reconnecting after the end: nothing more will come
		if more, err := app.Workflows().Events(r.Context(), id, after, 1); err == nil && len(more) == 0 {
			w.WriteHeader(http.StatusNoContent) // tells EventSource to stop reconnecting
			return nil
		}
	}
	// Caddy's admin server wraps the writer: find the flusher beneath
	rc := http.NewResponseController(w)
	flusher := flushFunc(func() { _ = rc.Flush() })
	wake, stop := app.Workflows().Watch(id)
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// other nodes' steps are not signalled here: look at the store
	// at least this often
	const recheck = time.Second
	for {
		evs, err := app.Workflows().Events(r.Context(), id, after, storage.MaxLimit)
		if err != nil {
			return nil // the client went away or the store failed; the stream ends
		}
		for _, ev := range evs {
			b, _ := json.Marshal(viewEvent(ev))
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, sseName(ev.State), b)
			after = ev.Seq
		}
		if len(evs) > 0 {
			flusher.Flush()
		}
		wf, err := app.Workflows().Get(r.Context(), id)
		if err != nil {
			return nil
		}
		if storage.IsTerminal(wf.State) {
			// drain what the final persist wrote, then end
			if more, _ := app.Workflows().Events(r.Context(), id, after, storage.MaxLimit); len(more) == 0 {
				fmt.Fprintf(w, "event: end\ndata: {\"state\":%q}\n\n", wf.State)
				flusher.Flush()
				return nil
			}
			continue
		}
		t := time.NewTimer(recheck)
		select {
		case <-r.Context().Done():
			t.Stop()
			return nil
		case <-wake:
			t.Stop()
		case <-t.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			flusher.Flush()
		}
	}
}

type flushFunc func()

func (f flushFunc) Flush() { f() }

func sseName(state string) string { return "state." + strings.ReplaceAll(state, " ", "_") }

// audit records an API change; details never hold secrets.
func audit(r *http.Request, app *certlocker.App, group, action, target string, details map[string]any) {
	b, _ := json.Marshal(details)
	if err := app.AuditEntry(r.Context(), &storage.AuditEntry{Actor: actor(r), Action: action, Target: target, Group: group,
		Details: b}); err != nil {
		app.Logger().Error("recording audit entry", zap.String("action", action), zap.String("target", target), zap.Error(err))
	}
}
