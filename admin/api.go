// Package admin serves CertLocker's REST API on Caddy's admin endpoint,
// under /certlocker/ (module admin.api.certlocker). Every response is JSON;
// errors are {"error": "...", "field": "..."} with field set when one input
// field is at fault.
package admin

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	caddy.RegisterModule(API{})
}

// API is the admin.api.certlocker module.
type API struct {
	logger *zap.Logger
	mux    *http.ServeMux
	routes []route
}

// CaddyModule returns the Caddy module information.
func (API) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.certlocker",
		New: func() caddy.Module { return new(API) },
	}
}

// Provision builds the routes. The app is looked up per request
// (certlocker.Current): admin routers are provisioned before the apps of
// the same config, and the admin endpoint answers while they load.
func (a *API) Provision(ctx caddy.Context) error {
	// Caddy provisions admin routers outside any module's context, so the
	// module is named here (as caddypki's admin API does) for the config's
	// logs to apply to this one
	a.logger = ctx.Logger(a)
	a.mux = http.NewServeMux()
	for _, register := range routeSets {
		register(a)
	}
	a.mux.HandleFunc("/certlocker/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, a.logger, &Error{Status: http.StatusNotFound, Message: "no such endpoint: " + r.URL.Path})
	})
	return nil
}

// routeSets register the routes of one area of the API each (system,
// issuers, DNS providers, ...); every area's file adds its own in init.
var routeSets []func(a *API)

// Routes implements caddy.AdminRouter.
func (a *API) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/certlocker/",
		Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			a.mux.ServeHTTP(w, r)
			return nil
		}),
	}}
}

// handlerFunc is an API handler: it writes a success response itself, or
// returns an error that is written as a JSON problem.
type handlerFunc func(w http.ResponseWriter, r *http.Request, app *certlocker.App) error

// methods maps HTTP methods to the handlers of one path.
type methods map[string]handlerFunc

// handle registers the methods of one path. Every request carries its
// client address as the audit source; a mutating request that is refused
// or fails is audited here (successful changes are audited by the
// services themselves).
func (a *API) handle(pattern string, m methods) {
	a.routes = append(a.routes, route{Pattern: pattern, Methods: methodNames(m)})
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		h, ok := m[r.Method]
		if !ok {
			allow := strings.Join(methodNames(m), ", ")
			w.Header().Set("Allow", allow)
			writeError(w, a.logger, &Error{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("method %s not allowed; use %s", r.Method, allow)})
			return
		}
		app, err := a.app()
		if err != nil {
			writeError(w, a.logger, err)
			return
		}
		source := sourceOf(r.RemoteAddr)
		if s := sessionOf(r.Context()); s != nil {
			source = s.Addr
		}
		r = r.WithContext(storage.WithAuditSource(r.Context(), source))
		var aw *auditedWriter
		if mutating(r.Method) {
			aw = &auditedWriter{ResponseWriter: w}
			w = aw
		}
		if err := h(w, r, app); err != nil {
			writeError(w, a.logger.With(zap.String("method", r.Method), zap.String("uri", r.URL.Path)), err)
		}
		if aw != nil && aw.status >= 400 {
			a.auditRefusal(r.Context(), app, r, pattern, aw.status, errorMessage(aw.body.Bytes(), aw.status))
		}
	})
}

// app returns the running certlocker app.
func (a *API) app() (*certlocker.App, error) {
	app := certlocker.Current()
	if app == nil {
		return nil, &Error{Status: http.StatusServiceUnavailable,
			Message: `the certlocker app is not running: it is starting, or not configured (add "certlocker": {} under "apps")`}
	}
	return app, nil
}

// Interface guards
var (
	_ caddy.AdminRouter = (*API)(nil)
	_ caddy.Provisioner = (*API)(nil)
)
