package admin

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	routeSets = append(routeSets, func(a *API) {
		a.handle("/certlocker/health", methods{http.MethodGet: a.health})
		a.handle("/certlocker/audit", methods{http.MethodGet: a.listAudit})
		a.handle("/certlocker/actions/rekey", methods{http.MethodPost: a.rekey})
	})
}

// health answers GET /certlocker/health: 200 when the store answers, 503
// otherwise, with the backend, schema version and node ID.
func (a *API) health(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	h, err := app.Health(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, struct {
			certlocker.NodeHealth
			Error string `json:"error"`
		}{h, "storage unreachable: " + internalError(a.logger, "health check failed", err)})
		return nil
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

type auditEntry struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Node    string    `json:"node"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Target  string    `json:"target,omitempty"`
	Group   string    `json:"group,omitempty"`
	Source  string    `json:"source,omitempty"`
	Result  string    `json:"result"`
	Details any       `json:"details,omitempty"`
}

// auditFilter reads the audit log's query parameters: action, actor (with
// or without its "@address"), target (the resource ID), group, result (ok,
// refused, failed), since and until (RFC 3339).
func auditFilter(q url.Values) (storage.AuditFilter, error) {
	f := storage.AuditFilter{Action: strings.TrimSpace(q.Get("action")), Target: strings.TrimSpace(q.Get("target")),
		Actor: strings.TrimSpace(q.Get("actor")), Group: strings.TrimSpace(q.Get("group")), Result: q.Get("result")}
	if !storage.ValidAuditResult(f.Result) {
		return f, BadRequest("result", "result must be ok, refused or failed")
	}
	for _, tf := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := strings.TrimSpace(q.Get(tf.name)); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return f, BadRequest(tf.name, "%s must be an RFC 3339 time such as 2026-05-20T11:05:00Z", tf.name)
			}
			*tf.to = t
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, BadRequest("until", "until must be after since")
	}
	return f, nil
}

// listAudit answers GET /certlocker/audit?action=&actor=&target=&group=&result=&since=&until=&limit=&cursor=
// Admins read every entry; a group-restricted UI user the entries of
// their groups and their own (the app scopes it).
func (a *API) listAudit(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	f, err := auditFilter(r.URL.Query())
	if err != nil {
		return err
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	entries, next, err := app.AuditLog(r.Context(), f, p)
	if err != nil {
		return err
	}
	out := struct {
		Items      []auditEntry `json:"items"`
		NextCursor string       `json:"next_cursor,omitempty"`
	}{Items: []auditEntry{}, NextCursor: next}
	for _, e := range entries {
		out.Items = append(out.Items, auditEntry{ID: e.ID, Time: e.Time, Node: e.Node, Actor: e.Actor, Action: e.Action,
			Target: e.Target, Group: e.Group, Source: e.Source, Result: e.Result, Details: e.Details})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// page reads limit and cursor query parameters.
func page(r *http.Request) (storage.Page, error) {
	q := r.URL.Query()
	p := storage.Page{Cursor: q.Get("cursor")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > storage.MaxLimit {
			return p, BadRequest("limit", "limit must be a number from 1 to %d", storage.MaxLimit)
		}
		p.Limit = n
	}
	return p, nil
}

// rekey answers POST /certlocker/actions/rekey: re-seal every secret with
// the current encryption key.
func (a *API) rekey(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	n, err := app.Rekey(r.Context(), actor(r))
	if err != nil {
		return err
	}
	h, _ := app.Health(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"resealed": n, "key_id": h.KeyID})
	return nil
}

// actor names who made an admin API request, for the audit log: the UI's
// user when the request came through the UI (certlocker_ui).
func actor(r *http.Request) string {
	if s := sessionOf(r.Context()); s != nil {
		return s.actor()
	}
	return "admin-api@" + r.RemoteAddr
}
