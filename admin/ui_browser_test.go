package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth" // basic_auth
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/storage"
)

// chromiumPath is Debian's chromium, installed by .ci/run.
const chromiumPath = "/usr/bin/chromium"

// needChromium skips a browser test where chromium is missing, and fails
// it in CI, where .ci/run installs it.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is missing at %s: .ci/run installs it (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("skipping the browser test: no chromium at %s (apt-get install chromium; in CI this fails)", chromiumPath)
	}
}

// TestUIScreens drives headless chromium through Caddy's real basic_auth
// and the certlocker_ui handler, against in-process Pebble and the
// Cloudflare API stand-in: sign in, see the empty workflows list, verify a
// Cloudflare DNS provider, place a mixed dns-01/http-01 order through the
// new-order form and watch its timeline reach issued live, watch another
// order appear and issue on the open list, open the inventory drawer, and
// find the audit entries. With CERTLOCKER_SCREENSHOTS=1 it saves a
// screenshot of every screen under docs/screenshots/.
func TestUIScreens(t *testing.T) {
	needChromium(t)
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv(certlocker.EnvEncryptionKey, "")

	p := acmetest.NewPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true})
	d := acmetest.NewDNSServer(t, "example.test")
	cf := acmetest.NewCloudflare(t, d)
	cfToken := "cf-browser-" + hexToken(t)
	cf.AddToken(cfToken, acmetest.PermZoneRead("example.test"), acmetest.PermDNSEdit("example.test"))

	const user, password = "ops", "correct horse battery staple"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	base := "http://" + addr
	cfg := mustJSON(map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"apps": map[string]any{
			"certlocker": map[string]any{
				"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
				"users": []any{map[string]any{"id": user, "role": "admin"}},
			},
			"http": map[string]any{"servers": map[string]any{"ui": map[string]any{
				"listen":          []string{addr},
				"automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "authentication", "providers": map[string]any{"http_basic": map[string]any{
						"accounts": []any{map[string]any{"username": user, "password": string(hash)}}}}},
					map[string]any{"handler": "certlocker_ui"},
				}}},
			}}},
		},
	})
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	app := certlocker.Current()
	dnsPort, _ := strconv.Atoi(d.Addr()[strings.LastIndex(d.Addr(), ":")+1:])
	app.DNS().Configure(func(o *dnsproviders.Options) {
		o.HTTPClient, o.Resolvers, o.NameserverPort = cf.HTTPClient(), []string{d.Addr()}, dnsPort
	})
	authz := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))

	// without the password, Caddy's basic_auth answers 401
	if resp, err := http.Get(base + "/workflows"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without credentials: %v %v", resp, err)
	}

	ctx, cancel := browser(t)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser on ctx
		t.Fatalf("starting chromium: %v", err)
	}
	run := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
			t.Fatalf("%v; the page:\n%s", err, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return s
	}
	// sign in: the browser sends the credentials with every request, as
	// after a basic-auth prompt
	run(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": authz}})
		return err
	}), chromedp.EmulateViewport(1280, 900))

	run(chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(".empty")))
	if got := text("#user"); got != user {
		t.Fatalf("signed in as %q", got)
	}
	if !strings.Contains(text(".empty"), "No certificate orders yet") {
		t.Fatal("no empty state on the workflows list")
	}
	shot(t, ctx, "workflows-empty")
	checkScreen(t, ctx, "workflows-empty")

	// an ACME client and a Cloudflare DNS provider through the UI's JSON
	// API, as a script signed in through basic_auth does
	api := uiClient{t: t, base: base, authz: authz}
	api.csrf()
	st, v := api.call("POST", "/api/issuers", mustJSON(map[string]any{"name": "pebble", "directory_url": p.DirectoryURL(),
		"contacts": []string{"ops@example.com"}, "custom_roots_pem": string(p.WFECertPEM()), "agree_terms": true}))
	if st != http.StatusCreated {
		t.Fatalf("create the ACME client: %d %v", st, v)
	}
	issuerID := v["id"].(string)
	st, v = api.call("POST", "/api/dns-providers", mustJSON(map[string]any{"name": "cloudflare", "type": "cloudflare",
		"zones": []string{"example.test"}, "credentials": map[string]string{"api_token": cfToken}}))
	if st != http.StatusCreated {
		t.Fatalf("create the DNS provider: %d %v", st, v)
	}

	run(chromedp.Navigate(base+"/issuers"), chromedp.WaitVisible(chromedp.CSS("#issuers")))
	if !strings.Contains(text("#issuers"), "pebble") {
		t.Fatal("the ACME client is not listed")
	}
	shot(t, ctx, "issuers")
	checkScreen(t, ctx, "issuers")

	// Verify, from the DNS providers screen
	run(chromedp.Navigate(base+"/dns-providers"), chromedp.WaitVisible(chromedp.CSS("#dns-providers")))
	run(chromedp.Click(chromedp.CSS(`#dns-providers button[type=submit]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(".flash"); got != "verified" {
		t.Fatalf("verify: %q", got)
	}
	if !strings.Contains(text("#dns-providers"), "verified") {
		t.Fatal("the provider is not shown verified")
	}
	shot(t, ctx, "dns-providers")
	checkScreen(t, ctx, "dns-providers")

	// a mixed order through the form; its timeline runs live to issued
	run(chromedp.Navigate(base+"/workflows/new"), chromedp.WaitVisible(chromedp.CSS("#new-order")),
		chromedp.SendKeys(chromedp.CSS("#identifiers"), "*.example.test dns-01\nwww.example.test http-01"))
	shot(t, ctx, "new-order")
	checkScreen(t, ctx, "new-order")
	run(chromedp.Click(chromedp.CSS(`#new-order button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.Contains(loc, "/workflows/wf_") {
		t.Fatalf("after the form: %s %v", loc, err)
	}
	waitFor(t, ctx, app, "#wf-state.badge-issued")
	if !strings.Contains(text("#timeline"), "issued") {
		t.Fatal("the timeline does not show the issuance")
	}
	shot(t, ctx, "workflow-detail")
	checkScreen(t, ctx, "workflow-detail")

	// the list is live: an order placed elsewhere appears and issues
	// without a reload
	run(chromedp.Navigate(base+"/workflows"), chromedp.WaitVisible(chromedp.CSS("#workflows")),
		chromedp.WaitVisible(chromedp.CSS("#live-status")))
	st, v = api.call("POST", "/api/workflows", mustJSON(map[string]any{"issuer_id": issuerID,
		"identifiers": []any{map[string]any{"value": "api.example.test", "challenge": "http-01"}}}))
	if st != http.StatusCreated {
		t.Fatalf("order through the API: %d %v", st, v)
	}
	second := v["id"].(string)
	waitFor(t, ctx, app, "#wf-"+second+" span.badge-issued")
	shot(t, ctx, "workflows")
	checkScreen(t, ctx, "workflows")

	// the inventory and its drawer
	run(chromedp.Navigate(base+"/inventory"), chromedp.WaitVisible(chromedp.CSS("#certificates")))
	if got := text("#n-90"); got != "2" {
		t.Fatalf("certificates expiring within 90 days: %q", got)
	}
	shot(t, ctx, "inventory")
	checkScreen(t, ctx, "inventory")
	run(chromedp.Click(chromedp.CSS("a.open-drawer")), chromedp.WaitVisible(chromedp.CSS("#drawer")))
	drawerURL, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	drawer := text("#drawer")
	for _, want := range []string{"Serial", "Rating breakdown", "Chain", "Workflow"} {
		if !strings.Contains(drawer, want) {
			t.Fatalf("the drawer lacks %q:\n%s", want, drawer)
		}
	}
	shot(t, ctx, "inventory-drawer")
	checkScreen(t, ctx, "inventory-drawer")

	// the audit log has the UI user's changes, with where they came from
	run(chromedp.Navigate(base+"/audit?actor=ui:"+user+"@127.0.0.1"), chromedp.WaitVisible(chromedp.CSS("#audit")))
	audit := text("#audit")
	for _, want := range []string{"issuer.create", "dns_provider.create", "dns_provider.verify", "workflow.create"} {
		if !strings.Contains(audit, want) {
			t.Fatalf("the audit log lacks %s:\n%s", want, audit)
		}
	}
	shot(t, ctx, "audit")
	checkScreen(t, ctx, "audit")

	// no secret reached the browser
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil || strings.Contains(html, cfToken) {
		t.Fatalf("the audit page shows the DNS token (%v)", err)
	}

	// every screen at phone width
	for _, s := range []struct{ path, sel, name string }{
		{"/workflows", "#workflows", "workflows"},
		{strings.TrimPrefix(loc, base), "#timeline", "workflow-detail"},
		{"/workflows/new", "#new-order", "new-order"},
		{"/issuers", "#issuers", "issuers"},
		{"/dns-providers", "#dns-providers", "dns-providers"},
		{"/inventory", "#certificates", "inventory"},
		{strings.TrimPrefix(drawerURL, base), "#drawer", "inventory-drawer"},
		{"/audit", "#audit", "audit"},
	} {
		checkPhone(t, ctx, base+s.path, s.sel, s.name)
	}
}

// waitFor waits up to a minute for sel to show; on failure it reports the
// workflows' states and the page.
func waitFor(t *testing.T, ctx context.Context, app *certlocker.App, sel string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(sel))); err == nil {
		return
	}
	ws, _, _ := app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	for _, w := range ws {
		t.Logf("workflow %s: %s (%s)", w.ID, w.State, w.Status)
	}
	html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main").outerHTML`))
	t.Fatalf("%s did not show; the page:\n%s", sel, html)
}

// browser starts headless chromium with the flags that work on this
// network (DESIGN.md) and a fresh profile.
func browser(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	return ctx, func() { cancelTimeout(); cancelCtx(); cancelAlloc() }
}

// shot saves a screenshot of the viewport as docs/screenshots/<name>.png
// when CERTLOCKER_SCREENSHOTS=1.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("CERTLOCKER_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	out := filepath.Join("..", "docs", "screenshots", name+".png")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// uiClient calls the UI's JSON API through Caddy with basic auth and the
// CSRF cookie and token.
type uiClient struct {
	t           *testing.T
	base, authz string
	token       string
}

func (c *uiClient) csrf() {
	c.t.Helper()
	req, _ := http.NewRequestWithContext(c.t.Context(), "GET", c.base+"/api/workflows", nil)
	req.Header.Set("Authorization", c.authz)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	c.token = resp.Header.Get(csrfHeader)
	if resp.StatusCode != 200 || c.token == "" {
		c.t.Fatalf("GET /api/workflows: %d, token %q", resp.StatusCode, c.token)
	}
}

func (c *uiClient) call(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequestWithContext(c.t.Context(), method, c.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", c.authz)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(csrfHeader, c.token)
	req.AddCookie(&http.Cookie{Name: csrfCookie, Value: c.token})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	_ = json.Unmarshal(b, &v)
	return resp.StatusCode, v
}
