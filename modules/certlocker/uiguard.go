package certlocker

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// UIModuleID is the operator UI's handler (package admin).
const UIModuleID = "http.handlers.certlocker_ui"

// identityTrusting is what the UI handler says about a forward-auth
// identity header it believes from trusted proxies.
type identityTrusting interface{ TrustsIdentityHeader() bool }

// checkUIListeners refuses a config that serves certlocker_ui on a
// listener that is not loopback with no authentication in front of it:
// the UI would act as an unauthenticated admin for anyone who can reach
// it (it refuses such requests one by one too, but the config is wrong).
// It runs in Start, when every app of the config is provisioned.
//
// Authentication in front means, in the handler chain before the UI: a
// Caddy authentication handler (basic_auth, or any module whose ID starts
// with http.handlers.auth, such as caddy-security's), or a forward_auth
// (reverse_proxy with a rewrite and response handling); or the UI's own
// identity_header with trusted_proxies. An earlier route counts only if
// it matches every request (no matcher).
func (a *App) checkUIListeners() error {
	v, err := a.ctx.AppIfConfigured("http")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return nil // the http app's own error is reported where it loads
	}
	httpApp, ok := v.(*caddyhttp.App)
	if !ok {
		return nil
	}
	for name, srv := range httpApp.Servers {
		public := publicListeners(srv.Listen)
		if len(public) == 0 || !unguardedUI(srv.Routes, false) {
			continue
		}
		return fmt.Errorf("http server %q listens on %s, which is not loopback, and serves certlocker_ui without authentication in front of it: "+
			"add basic_auth, forward_auth or another Caddy authentication before certlocker_ui in that site (or identity_header with trusted_proxies "+
			"for an identity proxy), or bind the site to 127.0.0.1 for local use only", name, strings.Join(public, ", "))
	}
	return nil
}

// publicListeners returns the listen addresses that are not loopback (or a
// unix socket); an empty list means Caddy's defaults, on every interface.
func publicListeners(listen []string) []string {
	if len(listen) == 0 {
		return []string{":443", ":80"}
	}
	var out []string
	for _, l := range listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil {
			out = append(out, l)
			continue
		}
		if na.IsUnixNetwork() || na.IsFdNetwork() {
			continue
		}
		host := strings.Trim(na.Host, "[]")
		if strings.EqualFold(host, "localhost") {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
			continue
		}
		out = append(out, l)
	}
	return out
}

// unguardedUI reports whether routes (given whether authentication ran
// already) reach certlocker_ui without authentication before it.
func unguardedUI(routes caddyhttp.RouteList, authed bool) bool {
	for _, rt := range routes {
		inRoute := authed
		for _, h := range rt.Handlers {
			switch {
			case isAuthentication(h):
				inRoute = true
			case caddy.GetModuleID(h) == UIModuleID:
				if it, ok := h.(identityTrusting); !inRoute && !(ok && it.TrustsIdentityHeader()) {
					return true
				}
			}
			if sub, ok := h.(*caddyhttp.Subroute); ok && unguardedUI(sub.Routes, inRoute) {
				return true
			}
		}
		// an authentication every request passes guards the later routes
		if inRoute && len(rt.MatcherSets) == 0 {
			authed = true
		}
	}
	return false
}

func isAuthentication(h caddyhttp.MiddlewareHandler) bool {
	if strings.HasPrefix(caddy.GetModuleID(h), "http.handlers.auth") {
		return true // caddyauth (basic_auth), caddy-security's handlers
	}
	// forward_auth: a reverse_proxy that rewrites the request to the
	// auth service and handles its answer
	rp, ok := h.(*reverseproxy.Handler)
	return ok && rp.Rewrite != nil && len(rp.HandleResponse) > 0
}
