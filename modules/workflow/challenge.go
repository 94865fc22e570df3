package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	caddy.RegisterModule(ChallengeHandler{})
	httpcaddyfile.RegisterHandlerDirective("certlocker_challenge", parseChallengeHandler)
	httpcaddyfile.RegisterDirectiveOrder("certlocker_challenge", httpcaddyfile.Before, "redir")
}

// ChallengeHandler answers HTTP-01 challenges for every pending workflow,
// from storage, so any CertLocker node behind the same name can answer.
// Requests for other paths, or for tokens it does not know, go to the next
// handler. Module ID: http.handlers.certlocker_challenge.
//
// Caddyfile: `certlocker_challenge` inside a site block (no arguments).
type ChallengeHandler struct {
	store  storage.Store
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ChallengeHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.certlocker_challenge",
		New: func() caddy.Module { return new(ChallengeHandler) },
	}
}

// storeProvider is what the certlocker app offers (asserted, not imported,
// because the app imports this package).
type storeProvider interface{ Store() storage.Store }

// Provision finds the certlocker app's store.
func (h *ChallengeHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	v, err := ctx.AppIfConfigured("certlocker")
	if err != nil {
		return fmt.Errorf("certlocker_challenge needs the certlocker app: %w", err)
	}
	sp, ok := v.(storeProvider)
	if !ok {
		return errors.New("certlocker_challenge: the certlocker app offers no store")
	}
	h.store = sp.Store()
	return nil
}

const challengePrefix = "/.well-known/acme-challenge/"

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *ChallengeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if ServeChallenge(h.store, h.logger, w, r) {
		return nil
	}
	return next.ServeHTTP(w, r)
}

// ServeChallenge answers r if it is an HTTP-01 request for a pending
// workflow and reports whether it did.
func ServeChallenge(store storage.Store, logger *zap.Logger, w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	token, ok := strings.CutPrefix(r.URL.Path, challengePrefix)
	if !ok || token == "" || strings.Contains(token, "/") {
		return false
	}
	raw, err := store.ACME().Get(r.Context(), HTTP01Bucket, token)
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) && logger != nil {
			logger.Error("looking up http-01 challenge", zap.Error(err))
		}
		return false
	}
	var e http01Entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]") // an IPv6 literal without a port
	same := strings.EqualFold(strings.TrimSuffix(host, "."), e.Identifier)
	if ip, want := net.ParseIP(host), net.ParseIP(e.Identifier); ip != nil && want != nil {
		same = ip.Equal(want)
	}
	if !same {
		return false // the token belongs to another name
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(e.KeyAuth))
	if logger != nil {
		if ce := logger.Check(zap.DebugLevel, "served http-01 challenge"); ce != nil {
			ce.Write(zap.String("identifier", e.Identifier), zap.String("workflow_id", e.WorkflowID))
		}
	}
	return true
}

func parseChallengeHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next()
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	return new(ChallengeHandler), nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ChallengeHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*ChallengeHandler)(nil)
)
