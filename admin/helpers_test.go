package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
)

// testAPI provisions the certlocker app from JSON the way Caddy does,
// starts it (the admin API serves the running app) and the admin API
// beside it.
func testAPI(t testing.TB, appJSON string) (*API, *certlocker.App) {
	t.Helper()
	return provisionAPI(t, &caddy.Config{}, appJSON)
}

// provisionAPI is testAPI with the rest of the Caddy config (logging) from
// cfg.
func provisionAPI(t testing.TB, cfg *caddy.Config, appJSON string) (*API, *certlocker.App) {
	t.Helper()
	cfg.AppsRaw = caddy.ModuleMap{"certlocker": json.RawMessage(appJSON)}
	ctx, err := caddy.ProvisionContext(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := ctx.App("certlocker")
	if err != nil {
		t.Fatal(err)
	}
	app := v.(*certlocker.App)
	t.Cleanup(func() { _ = app.Cleanup() })
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Stop() })
	api := new(API)
	if err := api.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return api, app
}

// serve sends one request through the admin API's route; a body is sent
// as JSON.
func serve(t *testing.T, api *API, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	if err := api.Routes()[0].Handler.ServeHTTP(rec, req); err != nil {
		t.Fatal(err)
	}
	return rec
}

// callAdmin sends a JSON request to Caddy's real admin endpoint at addr and
// returns the status and body.
func callAdmin(t *testing.T, addr, method, path string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// useTestDNS points the app's DNS provider clients at the test's own DNS
// server (for propagation checks and as every zone's nameserver) and at
// the Cloudflare API stand-in; more adjusts the options further.
func useTestDNS(app *certlocker.App, d *acmetest.DNSServer, cf *acmetest.Cloudflare, more ...func(*dnsproviders.Options)) {
	dnsPort, _ := strconv.Atoi(d.Addr()[strings.LastIndex(d.Addr(), ":")+1:])
	app.DNS().Configure(func(o *dnsproviders.Options) {
		o.HTTPClient, o.Resolvers, o.NameserverPort = cf.HTTPClient(), []string{d.Addr()}, dnsPort
		for _, f := range more {
			f(o)
		}
	})
}
