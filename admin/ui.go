package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/admin/ui"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	caddy.RegisterModule(UI{})
	httpcaddyfile.RegisterHandlerDirective("certlocker_ui", parseUICaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("certlocker_ui", httpcaddyfile.Before, "file_server")
}

// UI is the operator web UI and its JSON API (http.handlers.certlocker_ui).
// Serve it at the root of a site, behind Caddy authentication (basic_auth,
// forward_auth, caddy-security): the user is {http.auth.user.id}, with the
// role and groups the certlocker app's `users` give that ID. The JSON API
// is under /api/ with the admin API's resource paths (/api/workflows,
// /api/issuers, ...), scoped to the user's groups and role. Without any
// authentication in front, the UI answers only loopback clients on a
// loopback listener, as a local admin, and says so in a banner.
//
// Caddy's admin endpoint (/certlocker/ there) stays the local operator API:
// it is unrestricted and must never be exposed.
type UI struct {
	// IdentityHeader is a request header that names the user, set by a
	// forward-auth identity proxy (e.g. "Remote-User"), for setups where
	// the proxy does not run inside Caddy. It is honoured only from
	// TrustedProxies. Default: none ({http.auth.user.id} only).
	IdentityHeader string `json:"identity_header,omitempty"`

	// TrustedProxies are the client addresses or CIDR ranges whose
	// IdentityHeader is believed. Required with IdentityHeader.
	TrustedProxies []string `json:"trusted_proxies,omitempty"`

	// GatewayURL is the public base URL (https://host[:port]) where
	// certlocker_acme serves the ACME gateway, used in the Tokens screen's
	// client snippets. Default: this UI's own site (https://{host}).
	GatewayURL string `json:"gateway_url,omitempty"`

	trusted []netip.Prefix
	api     *API
	assets  http.Handler
	pages   *pageSet
	live    *liveHub
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (UI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.certlocker_ui",
		New: func() caddy.Module { return new(UI) },
	}
}

// Provision parses the templates and builds the JSON API's routes (the
// admin API's handlers, mounted under /api/).
func (u *UI) Provision(ctx caddy.Context) error {
	u.logger = ctx.Logger()
	for i, s := range u.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("trusted_proxies[%d]: %q is not an address or CIDR range", i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		u.trusted = append(u.trusted, p.Masked())
	}
	u.api = new(API)
	u.api.logger = u.logger
	u.api.mux = http.NewServeMux()
	for _, register := range routeSets {
		register(u.api)
	}
	u.api.mux.HandleFunc("/certlocker/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, u.logger, &Error{Status: http.StatusNotFound, Message: "no such endpoint: /api/" + strings.TrimPrefix(r.URL.Path, "/certlocker/")})
	})
	sub, err := fs.Sub(ui.Assets, "assets")
	if err != nil {
		return fmt.Errorf("loading the UI's assets: %w", err)
	}
	u.assets = http.StripPrefix("/assets/", http.FileServerFS(sub))
	u.live = new(liveHub)
	u.pages, err = parsePages()
	if err != nil {
		return fmt.Errorf("parsing the UI's templates: %w", err)
	}
	return nil
}

// Validate checks the trusted-header settings.
func (u *UI) Validate() error {
	if u.IdentityHeader != "" && len(u.TrustedProxies) == 0 {
		return errors.New("identity_header needs trusted_proxies: the header is believed only from the proxy that sets it")
	}
	if u.IdentityHeader == "" && len(u.TrustedProxies) > 0 {
		return errors.New("trusted_proxies is set without identity_header")
	}
	if u.GatewayURL != "" {
		gu, err := url.Parse(u.GatewayURL)
		if err != nil || gu.Scheme != "https" || gu.Host == "" || (gu.Path != "" && gu.Path != "/") || gu.RawQuery != "" {
			return fmt.Errorf("gateway_url %q must be https://host[:port], where certlocker_acme is served", u.GatewayURL)
		}
	}
	return nil
}

// TrustsIdentityHeader reports whether a forward-auth identity header is
// believed from trusted proxies: the app then counts the UI as behind
// authentication when it checks the listeners (certlocker.App.Start).
func (u *UI) TrustsIdentityHeader() bool { return u.IdentityHeader != "" && len(u.TrustedProxies) > 0 }

// session is who is asking, as the UI acts for them.
type session struct {
	User certlocker.User
	// Local is true for the unauthenticated loopback admin.
	Local bool
	// Addr is the client's IP address (for the audit log).
	Addr string
	CSRF string
}

// actor names the session in the audit log: ui:<user>@<address>.
func (s *session) actor() string { return "ui:" + s.User.ID + "@" + s.Addr }

type sessionKey struct{}

func sessionOf(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

// CSRF: a random token in a __Host- cookie (Secure, SameSite=Strict,
// HttpOnly), which every mutation must echo in the form field "csrf" or
// the X-CSRF-Token header.
const (
	csrfCookie = "__Host-certlocker-csrf"
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// ServeHTTP implements caddyhttp.MiddlewareHandler; the UI answers every
// request it is given.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	setSecurityHeaders(w)
	if strings.HasPrefix(r.URL.Path, "/assets/") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("Cache-Control", "no-cache")
		u.assets.ServeHTTP(w, r)
		return nil
	}
	app := certlocker.Current()
	if app == nil {
		u.pages.problem(w, http.StatusServiceUnavailable, "CertLocker is not running",
			`The certlocker app is starting, or not configured: add "certlocker" to the global options.`)
		return nil
	}
	s, status, msg := u.identify(r, app)
	if s == nil {
		u.auditRefused(r, app, "ui:"+u.claimedUser(r)+"@"+clientAddr(r.RemoteAddr).String(), msg)
		u.pages.problem(w, status, "Access refused", msg)
		return nil
	}
	s.CSRF = csrfToken(w, r)
	if mutating(r.Method) {
		if !s.User.CanMutate() {
			msg := "viewers cannot change anything: ask an admin for the operator role"
			u.auditRefused(r, app, s.actor(), msg)
			u.refuse(w, r, http.StatusForbidden, msg)
			return nil
		}
		if !checkCSRF(r, s.CSRF) {
			msg := "missing or wrong CSRF token: reload the page and try again"
			u.auditRefused(r, app, s.actor(), msg)
			u.refuse(w, r, http.StatusForbidden, msg)
			return nil
		}
	}
	ctx := context.WithValue(r.Context(), sessionKey{}, s)
	if !s.User.Unrestricted() {
		ctx = storage.WithGroups(ctx, s.User.Groups)
		ctx = storage.WithAuditReader(ctx, "ui:"+s.User.ID)
	}
	r = r.WithContext(ctx)
	if strings.HasPrefix(r.URL.Path, "/api/") {
		u.serveAPI(w, r, s)
		return nil
	}
	u.servePage(w, r, app, s)
	return nil
}

// identify finds the user: Caddy's authenticated user ID, else the
// trusted proxy's header, else (only on loopback) the local admin. It
// returns nil with a status and message when the request is refused.
func (u *UI) identify(r *http.Request, app *certlocker.App) (*session, int, string) {
	client := clientAddr(r.RemoteAddr)
	id := ""
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		id, _ = repl.GetString("http.auth.user.id")
	}
	if id == "" && u.IdentityHeader != "" && u.trustedProxy(client) {
		id = r.Header.Get(u.IdentityHeader)
	}
	if id != "" {
		user, ok := app.LookupUser(id)
		if !ok {
			return nil, http.StatusForbidden, fmt.Sprintf("You are signed in as %q, who has no CertLocker role: an admin adds "+
				"`user %s admin|operator|viewer [groups ...]` to the certlocker global option.", id, id)
		}
		return &session{User: user, Addr: client.String()}, 0, ""
	}
	if !isLoopback(localAddr(r)) {
		return nil, http.StatusForbidden, "This UI is served on a non-loopback address without authentication, so it refuses every request: " +
			"put basic_auth, forward_auth or another Caddy authentication in front of certlocker_ui."
	}
	if !client.IsLoopback() {
		return nil, http.StatusForbidden, "Without authentication, the UI answers only clients on this machine (loopback)."
	}
	return &session{User: certlocker.User{ID: "local", Role: certlocker.RoleAdmin}, Local: true, Addr: client.String()}, 0, ""
}

// claimedUser is the user ID a refused request came with, for the audit
// log ("anonymous" without one).
func (u *UI) claimedUser(r *http.Request) string {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if id, _ := repl.GetString("http.auth.user.id"); id != "" {
			return id
		}
	}
	return "anonymous"
}

// auditRefused records a mutating request the UI refused before it
// reached a service (no identity, a viewer, a bad CSRF token). Like the
// API's own refusals, the action is the method and the route's pattern
// ("POST /workflows/{id}/actions/{action}"), the target the record's ID,
// and the raw path goes in the details.
func (u *UI) auditRefused(r *http.Request, app *certlocker.App, actor, reason string) {
	if !mutating(r.Method) {
		return
	}
	pattern, target := u.routeOf(r)
	d, _ := json.Marshal(map[string]any{"status": http.StatusForbidden, "error": reason, "path": r.URL.Path})
	e := &storage.AuditEntry{Actor: actor, Action: r.Method + " " + pattern, Target: target, Source: clientAddr(r.RemoteAddr).String(),
		Result: storage.AuditRefused, Details: d}
	if target != "" {
		e.Group = app.GroupOf(target)
	}
	if err := app.AuditEntry(context.WithoutCancel(r.Context()), e); err != nil {
		u.logger.Warn("auditing a refused request", zap.String("method", r.Method), zap.String("uri", r.URL.Path), zap.Error(err))
	}
}

// uiRoutes are the patterns of the UI's own form posts, for naming a
// refused one in the audit log; anything else is "/{path...}".
var uiRoutes = func() *http.ServeMux {
	m := http.NewServeMux()
	for _, p := range []string{"/workflows", "/workflows/{id}/{action}", "/issuers", "/issuers/{id}/{action}",
		"/dns-providers", "/dns-providers/{id}/{action}", "/tokens", "/tokens/{id}/{action}",
		"/inventory/import", "/inventory/{id}/export", "/{path...}"} {
		m.HandleFunc(p, http.NotFound)
	}
	return m
}()

// routeOf returns the pattern of the route r is for, as the admin API
// names its routes in the audit log ("/issuers/{id}" for the UI's
// /api/issuers/{id}), and the {id} in r's path.
func (u *UI) routeOf(r *http.Request) (pattern, id string) {
	path := r.URL.Path
	probe := &http.Request{Method: r.Method, Host: r.Host, URL: &url.URL{Path: path}}
	mux := uiRoutes
	if rest, ok := strings.CutPrefix(path, "/api/"); ok && u.api != nil && u.api.mux != nil {
		path = "/certlocker/" + rest
		probe.URL.Path, mux = path, u.api.mux
	}
	_, pattern = mux.Handler(probe)
	if pattern == "" || pattern == "/certlocker/" || pattern == "/{path...}" {
		return "/{path...}", ""
	}
	ps, vs := strings.Split(pattern, "/"), strings.Split(path, "/")
	for i, p := range ps {
		if p == "{id}" && i < len(vs) {
			id = vs[i]
		}
	}
	if mux != uiRoutes {
		pattern = apiPath(pattern)
	}
	return pattern, id
}

func (u *UI) trustedProxy(a netip.Addr) bool {
	for _, p := range u.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func clientAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		a, _ := netip.ParseAddr(remote)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

func localAddr(r *http.Request) netip.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return clientAddr(a.String())
	}
	return netip.Addr{}
}

// isLoopback: an unknown listener (tests without a server) counts as
// loopback only if it is unknown; a real server always sets it.
func isLoopback(a netip.Addr) bool { return !a.IsValid() || a.IsLoopback() }

func mutating(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// csrfToken returns the request's CSRF token, setting a new cookie if it
// has none.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		w.Header().Set(csrfHeader, c.Value)
		return c.Value
	}
	if mutating(r.Method) {
		return "" // a mutation without the cookie fails the check
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode})
	w.Header().Set(csrfHeader, tok)
	return tok
}

// checkCSRF reports whether a mutation carries the session's token and,
// when the browser says where it comes from, comes from this site.
func checkCSRF(r *http.Request, token string) bool {
	if token == "" {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		host := o[strings.Index(o, "://")+3:]
		if !strings.Contains(o, "://") || !strings.EqualFold(host, r.Host) {
			return false
		}
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
			// an upload form (inventory import): bounded like every body
			r.Body = http.MaxBytesReader(nil, r.Body, MaxBodyBytes)
			if err := r.ParseMultipartForm(MaxBodyBytes); err == nil {
				got = r.PostForm.Get(csrfField)
			}
		} else if err := r.ParseForm(); err == nil {
			got = r.PostForm.Get(csrfField)
		}
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// setSecurityHeaders: a strict CSP (scripts and styles only from the
// UI's own files), no framing, no referrer, no sniffing.
func setSecurityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// refuse answers a refused request as JSON under /api/, as a page
// elsewhere.
func (u *UI) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeError(w, u.logger, &Error{Status: status, Message: msg})
		return
	}
	u.pages.problem(w, status, "Not allowed", msg)
}

// adminOnlyAPI are JSON API paths (after /api/) only admins may use: they
// act across groups or on the whole node.
// The audit log is not among them: everyone reads it, scoped to their
// groups and their own actions (see listAudit).
var adminOnlyAPI = []string{"actions/", "migrations", "dns-providers/actions/"}

// serveAPI serves /api/... through the admin API's handlers, with the
// user's scope in the context and the user as the audit actor.
func (u *UI) serveAPI(w http.ResponseWriter, r *http.Request, s *session) {
	rest := strings.TrimPrefix(r.URL.Path, "/api/")
	if !s.User.Unrestricted() {
		for _, p := range adminOnlyAPI {
			if strings.HasPrefix(rest, p) {
				msg := "only admins may use /api/" + p
				if app := certlocker.Current(); app != nil {
					u.auditRefused(r, app, s.actor(), msg)
				}
				writeError(w, u.logger, &Error{Status: http.StatusForbidden, Message: msg})
				return
			}
		}
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/certlocker/" + rest
	r2.URL.RawPath = ""
	u.api.mux.ServeHTTP(w, r2)
}

// callAPI runs one admin API request for a form post and returns the
// recorded response.
func (u *UI) callAPI(r *http.Request, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(r.Context(), method, "/certlocker/"+path, strings.NewReader(body))
	req.RemoteAddr = r.RemoteAddr
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	u.api.mux.ServeHTTP(rec, req)
	return rec
}

// parseUICaddyfile sets up the handler from Caddyfile tokens:
//
//	certlocker_ui {
//		identity_header <header>
//		trusted_proxies <cidr>...
//		gateway_url     https://<host>[:<port>]
//	}
func parseUICaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	u := new(UI)
	if err := u.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return u, nil
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (u *UI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "identity_header":
			if !d.NextArg() {
				return d.ArgErr()
			}
			u.IdentityHeader = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "trusted_proxies":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			u.TrustedProxies = append(u.TrustedProxies, args...)
		case "gateway_url":
			if !d.NextArg() {
				return d.ArgErr()
			}
			u.GatewayURL = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized certlocker_ui option: %s", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*UI)(nil)
	_ caddy.Validator             = (*UI)(nil)
	_ caddyhttp.MiddlewareHandler = (*UI)(nil)
	_ caddyfile.Unmarshaler       = (*UI)(nil)
)
