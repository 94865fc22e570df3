package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("certlocker_acme", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("certlocker_acme", httpcaddyfile.Before, "redir")
}

// Handler is the ACME gateway (module http.handlers.certlocker_acme): it
// serves CertLocker's ACME directory at /rest/acme/directory (EAB with a
// certificate token: key ID = token ID, MAC key = the token's EAB key) and
// a per-token directory at /rest/acme/t/{url secret}/directory for clients
// without EAB. Other paths go to the next handler. Use it in any site
// block that edge systems reach over HTTPS.
//
// Caddyfile:
//
//	certlocker_acme {
//		finalize_wait    25s
//		duplicate_limit  5
//		duplicate_window 168h
//		warm_every       1m
//	}
type Handler struct {
	// FinalizeWait bounds how long a finalize waits for the upstream CA;
	// past it the edge gets the order in status processing with
	// Retry-After while the workflow carries on, and the order turns valid
	// with the certificate when it is done (a retried finalize with the
	// same CSR waits for the same workflow). Keep it below the edge
	// clients' timeouts. Default: 25s.
	FinalizeWait caddy.Duration `json:"finalize_wait,omitempty"`

	// DuplicateLimit caps new certificates for exactly the same names per
	// token within DuplicateWindow, below the upstream CA's duplicate-
	// certificate limit; past it edges get rateLimited with Retry-After.
	// A fresh re-pull (same key) is not counted; -1 turns pacing off.
	// Default: the CA catalog's duplicate-certificate limit for the
	// token's ACME client's CA (Let's Encrypt: 5 per 168h), else none.
	DuplicateLimit int `json:"duplicate_limit,omitempty"`
	// DuplicateWindow is the window of DuplicateLimit. Default: 168h.
	DuplicateWindow caddy.Duration `json:"duplicate_window,omitempty"`
	// WarmEvery is how often the gateway checks that every active token's
	// names have valid upstream authorizations, starting a
	// pre-authorization workflow where they are missing or about to
	// expire (see Gateway.Warm). Each pass also settles processing orders
	// whose workflow has ended (see Gateway.CompleteProcessing). Default:
	// 1m; negative turns warming off (the settling and pruning go on,
	// every minute).
	WarmEvery caddy.Duration `json:"warm_every,omitempty"`

	gw     *Gateway
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.certlocker_acme",
		New: func() caddy.Module { return new(Handler) },
	}
}

// app is what the certlocker app offers the gateway (asserted, not
// imported, because the app imports this package).
type app interface {
	Store() storage.Store
	Workflows() *workflow.Engine
	Node() string
}

// Provision builds the gateway over the certlocker app's store and engine.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	v, err := ctx.AppIfConfigured("certlocker")
	if err != nil {
		return fmt.Errorf("certlocker_acme needs the certlocker app: %w", err)
	}
	a, ok := v.(app)
	if !ok {
		return errors.New("certlocker_acme: the certlocker app offers no store or workflow engine")
	}
	opts := Options{Store: a.Store(), Engine: a.Workflows(), Node: a.Node(), Logger: h.logger,
		FinalizeWait: time.Duration(h.FinalizeWait), DuplicateLimit: h.DuplicateLimit, DuplicateWindow: time.Duration(h.DuplicateWindow)}
	if r, ok := v.(interface{ IssuerRegistry() *issuers.Service }); ok && r.IssuerRegistry() != nil {
		opts.Clients = r.IssuerRegistry()
	}
	if h.gw, err = New(opts); err != nil {
		return err
	}
	// warming off (negative) keeps the housekeeping: settling processing
	// orders nobody polls, pruning
	every := time.Duration(h.WarmEvery)
	if every == 0 {
		every = time.Minute
	}
	go h.gw.KeepWarm(ctx, every)
	return nil
}

// Cleanup stops the gateway's background work.
func (h *Handler) Cleanup() error {
	if h.gw != nil {
		h.gw.Close()
	}
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if h.FinalizeWait < 0 || h.DuplicateWindow < 0 {
		return errors.New("finalize_wait and duplicate_window must not be negative")
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if Handles(r.URL.Path) {
		h.gw.ServeHTTP(w, r)
		return nil
	}
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "finalize_wait":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("finalize_wait: %v", err)
			}
			h.FinalizeWait = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "duplicate_limit":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < -1 || n == 0 {
				return d.Errf("duplicate_limit must be a positive number, or -1 for no pacing")
			}
			h.DuplicateLimit = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "warm_every":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("warm_every: %v", err)
			}
			h.WarmEvery = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "duplicate_window":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("duplicate_window: %v", err)
			}
			h.DuplicateWindow = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective: %s", d.Val())
		}
	}
	return nil
}

func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
