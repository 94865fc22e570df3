// Package admin serves CertLocker's REST API on Caddy's admin endpoint,
// under /certlocker/ (module admin.api.certlocker). Every response is JSON;
// errors are {"error": "...", "field": "..."} with field set when one input
// field is at fault.
package admin

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
)

func init() {
	caddy.RegisterModule(API{})
}

// API is the admin.api.certlocker module.
type API struct {
	logger *zap.Logger
	mux    *http.ServeMux
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

func (a *API) handle(pattern string, m methods) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		h, ok := m[r.Method]
		if !ok {
			allow := ""
			for k := range m {
				if allow != "" {
					allow += ", "
				}
				allow += k
			}
			w.Header().Set("Allow", allow)
			writeError(w, a.logger, &Error{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("method %s not allowed; use %s", r.Method, allow)})
			return
		}
		app, err := a.app()
		if err != nil {
			writeError(w, a.logger, err)
			return
		}
		if err := h(w, r, app); err != nil {
			writeError(w, a.logger.With(zap.String("method", r.Method), zap.String("uri", r.URL.Path)), err)
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
