package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

// route is one path of the API and the methods it answers; the route
// table lets tests (and readers) walk every mutating endpoint.
type route struct {
	Pattern string
	Methods []string
}

// Mutating returns the methods of r that change something.
func (r route) Mutating() []string {
	var out []string
	for _, m := range r.Methods {
		if mutating(m) {
			out = append(out, m)
		}
	}
	return out
}

func methodNames(m methods) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sourceOf is the client address of a request, for the audit log: the IP
// without the port.
func sourceOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// auditedWriter remembers the status a handler answered and, for errors,
// the start of the body (the JSON problem) so that a refusal written
// without returning an error is audited too.
type auditedWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *auditedWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 && w.body.Len() < 1024 {
		w.body.Write(b[:min(len(b), 1024-w.body.Len())])
	}
	return w.ResponseWriter.Write(b)
}

func (w *auditedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// auditRefusal records a mutating request that was refused (4xx) or failed
// (5xx), unless the service already recorded its own entry saying so
// (e.g. a refused key export). Successful changes are audited by the
// services, in the transaction that makes them.
func (a *API) auditRefusal(ctx context.Context, app *certlocker.App, r *http.Request, pattern string, status int, msg string) {
	if status < 400 || storage.AuditRecordedNotOK(ctx) {
		return
	}
	result := storage.AuditRefused
	if status >= 500 {
		result = storage.AuditFailed
	}
	d, _ := json.Marshal(map[string]any{"status": status, "error": msg, "path": apiPath(r.URL.Path)})
	target := r.PathValue("id")
	e := &storage.AuditEntry{Actor: actor(r), Action: r.Method + " " + apiPath(pattern), Target: target,
		Group: app.GroupOf(target), Result: result, Details: d}
	if err := app.AuditEntry(context.WithoutCancel(ctx), e); err != nil {
		a.logger.Warn("auditing a refused request", zap.String("method", r.Method), zap.String("uri", r.URL.Path), zap.Error(err))
	}
}

// apiPath is the path as its caller knows it: "/issuers/{id}" for the
// admin API's /certlocker/issuers/{id} and the UI's /api/issuers/{id}.
func apiPath(p string) string { return "/" + strings.TrimPrefix(p, "/certlocker/") }

// errorMessage reads the message of a JSON problem body, else names the
// status.
func errorMessage(body []byte, status int) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return http.StatusText(status)
}
