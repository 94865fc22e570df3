package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth" // basic_auth
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"         // the gateway site's certificate storage
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
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
// and the certlocker_ui handler, against in-process Pebble (with external
// account binding) and the Cloudflare API stand-in: sign in, see the empty
// workflows list, create the ACME client through its form (catalog picker,
// EAB fields) and see its directory meta, create a Cloudflare DNS provider
// through its form and press Verify, preview a mixed dns-01/http-01 order
// and place it through the new-order form and watch its timeline reach
// issued live, watch another order appear and issue on the open list, open
// the inventory drawer, import a certificate through the import form, and
// find the audit entries. Then create a token from the issued certificate
// in its drawer, read the one-time EAB credentials off the page, pull a
// certificate with them through the gateway (certlocker_acme, same Caddy)
// with the real lego, and see the pull on the token's page and in the
// audit log; no secret on any later page, JSON answer or in Caddy's log.
// With CERTLOCKER_SCREENSHOTS=1 it saves a screenshot of every screen under
// docs/screenshots/.
func TestUIScreens(t *testing.T) {
	needChromium(t)
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv(certlocker.EnvEncryptionKey, "")

	p := acmetest.NewPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true, RequireEAB: true,
		Profiles: map[string]acmetest.Profile{"tlsserver": {Description: "TLS server certificates, 90 days"},
			"shortlived": {Description: "Six-day certificates", Validity: 6 * 24 * time.Hour}}})
	eabKID := "kid-browser"
	eabMAC := p.NewExternalAccountKey(eabKID)
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
	// the ACME gateway, in the same Caddy, over HTTPS from Caddy's internal CA
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gwAddr := gln.Addr().String()
	gln.Close()
	logFile := filepath.Join(dir, "caddy.log")
	cfg := mustJSON(map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "caddy")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"writer":  map[string]any{"output": "file", "filename": logFile, "roll": false},
			"encoder": map[string]any{"format": "json"}, "level": "DEBUG"}}},
		"apps": map[string]any{
			"certlocker": map[string]any{
				"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
				"users": []any{map[string]any{"id": user, "role": "admin"}},
			},
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"tls": map[string]any{
				"automation":   map[string]any{"policies": []any{map[string]any{"subjects": []string{"127.0.0.1"}, "issuers": []any{map[string]any{"module": "internal"}}}}},
				"certificates": map[string]any{"automate": []string{"127.0.0.1"}},
			},
			"http": map[string]any{"servers": map[string]any{"ui": map[string]any{
				"listen":          []string{addr},
				"automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "authentication", "providers": map[string]any{"http_basic": map[string]any{
						"accounts": []any{map[string]any{"username": user, "password": string(hash)}}}}},
					map[string]any{"handler": "certlocker_ui", "gateway_url": "https://" + gwAddr},
				}}},
			}, "gw": map[string]any{
				"listen":                  []string{gwAddr},
				"tls_connection_policies": []any{map[string]any{}},
				"automatic_https":         map[string]any{"disable_redirects": true},
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "certlocker_acme"},
					map[string]any{"handler": "static_response", "status_code": 404},
				}}},
			}}},
		},
	})
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	app := certlocker.Current()
	useTestDNS(app, d, cf)
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
		// a page that was still loading when its node was found replaces
		// its document once loaded, which invalidates the node: read again
		for try := 0; err != nil && strings.Contains(err.Error(), "No node with given id") && try < 3; try++ {
			s, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
		}
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

	// the ACME client, through its form: the catalog picker (a custom
	// directory here: Pebble), the EAB fields, the contact
	run(chromedp.Navigate(base+"/issuers"), chromedp.WaitVisible(chromedp.CSS(".empty")),
		chromedp.Click(chromedp.CSS("#new-issuer"), chromedp.NodeVisible), chromedp.WaitVisible(chromedp.CSS("#issuer-form")))
	if !strings.Contains(text("#catalog"), "Let's Encrypt") || !strings.Contains(text("#catalog"), "ZeroSSL") {
		t.Fatal("the catalog picker lacks the catalog's CAs")
	}
	// picking a CA opens its guidance
	run(chromedp.Click(chromedp.CSS("#catalog-google"), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`.card[data-catalog="google"] details[open] li`)))
	shot(t, ctx, "issuer-new")
	checkScreen(t, ctx, "issuer-new")
	run(chromedp.Click(chromedp.CSS("#catalog-custom"), chromedp.NodeVisible),
		chromedp.SendKeys(chromedp.CSS("#name"), "pebble"),
		chromedp.SendKeys(chromedp.CSS("#directory_url"), p.DirectoryURL()),
		chromedp.SetValue(chromedp.CSS("#custom_roots_pem"), string(p.WFECertPEM())),
		chromedp.SendKeys(chromedp.CSS("#eab_key_id"), eabKID),
		chromedp.SendKeys(chromedp.CSS("#eab_mac_key"), eabMAC),
		chromedp.SendKeys(chromedp.CSS("#contacts"), "ops@example.com"),
		chromedp.SendKeys(chromedp.CSS("#profile"), "tlsserver"),
		chromedp.Click(chromedp.CSS("#agree_terms")))
	run(chromedp.Click(chromedp.CSS(`#issuer-form button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS("#issuer-status")))
	if got := text("#issuer-status"); got != "valid" {
		t.Fatalf("the new ACME client is %q", got)
	}
	meta := text("#directory-meta")
	for _, want := range []string{"pebble.letsencrypt.org", "required"} {
		if !strings.Contains(meta, want) {
			t.Fatalf("the directory meta lacks %q:\n%s", want, meta)
		}
	}
	if !strings.Contains(text("#profiles"), "shortlived") {
		t.Fatal("the CA's profiles are not shown")
	}
	shot(t, ctx, "issuer")
	checkScreen(t, ctx, "issuer")
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.Contains(loc, "/issuers/iss_") {
		t.Fatalf("after the ACME client form: %s %v", loc, err)
	}
	issuerID := loc[strings.Index(loc, "/issuers/")+len("/issuers/") : strings.Index(loc, "?")]
	run(chromedp.Navigate(base+"/issuers"), chromedp.WaitVisible(chromedp.CSS("#issuers")))
	if !strings.Contains(text("#issuers"), "pebble") {
		t.Fatal("the ACME client is not listed")
	}
	shot(t, ctx, "issuers")
	checkScreen(t, ctx, "issuers")

	// the Cloudflare DNS provider, through its form; then Verify on its page
	run(chromedp.Navigate(base+"/dns-providers"), chromedp.WaitVisible(chromedp.CSS(".empty")),
		chromedp.Click(chromedp.CSS("#new-dns"), chromedp.NodeVisible), chromedp.WaitVisible(chromedp.CSS("#dns-form")),
		chromedp.SendKeys(chromedp.CSS("#name"), "cloudflare"),
		chromedp.SendKeys(chromedp.CSS("#zones"), "example.test"),
		chromedp.SendKeys(chromedp.CSS("#api_token"), cfToken))
	shot(t, ctx, "dns-provider-new")
	checkScreen(t, ctx, "dns-provider-new")
	run(chromedp.Click(chromedp.CSS(`#dns-form button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS("#dns-status")))
	if got := text("#dns-status"); got != "unverified" {
		t.Fatalf("the new DNS provider is %q", got)
	}
	// the verification's result replaces "Not verified yet" on the page
	run(chromedp.Click(chromedp.CSS("#verify"), chromedp.NodeVisible), chromedp.WaitVisible(chromedp.CSS("div#verification")))
	if got := text(".flash"); got != "verified" {
		t.Fatalf("verify: %q", got)
	}
	if got := text("#dns-status"); got != "verified" {
		t.Fatalf("after Verify the provider is %q", got)
	}
	if v := text("#verification"); !strings.Contains(v, "Verified") || !strings.Contains(v, "can publish and remove challenge records in example.test") {
		t.Fatalf("the verification result:\n%s", v)
	}
	shot(t, ctx, "dns-provider")
	checkScreen(t, ctx, "dns-provider")
	run(chromedp.Navigate(base+"/dns-providers"), chromedp.WaitVisible(chromedp.CSS("#dns-providers")))
	if !strings.Contains(text("#dns-providers"), "verified") {
		t.Fatal("the provider is not listed verified")
	}
	shot(t, ctx, "dns-providers")
	checkScreen(t, ctx, "dns-providers")

	// a mixed order through the form: preview it, then place it; its
	// timeline runs live to issued
	run(chromedp.Navigate(base+"/workflows/new"), chromedp.WaitVisible(chromedp.CSS("#new-order")),
		chromedp.SendKeys(chromedp.CSS("#identifiers"), "*.example.test dns-01\nwww.example.test http-01"),
		chromedp.Click(chromedp.CSS("#preview-button")), chromedp.WaitVisible(chromedp.CSS("#preview")))
	pv := text("#preview")
	for _, want := range []string{"Publish TXT _acme-challenge.example.test in zone example.test through cloudflare", "http://www.example.test/.well-known/acme-challenge/"} {
		if !strings.Contains(pv, want) {
			t.Fatalf("the preview lacks %q:\n%s", want, pv)
		}
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#preview-problems").length`)); err != nil || n != 0 {
		t.Fatalf("the preview sees problems: %d %v\n%s", n, err, pv)
	}
	if !strings.Contains(text("#issuer-info"), "Custom ACME directory") {
		t.Fatal("the issuer picker does not show the client's CA")
	}
	run(chromedp.ScrollIntoView(chromedp.CSS("#issuer_id")))
	shot(t, ctx, "new-order")
	checkScreen(t, ctx, "new-order")
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("preview").scrollIntoView({block: "start"}); true`)); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, "new-order-preview")
	run(chromedp.Click(chromedp.CSS(`#place-order`)), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	loc, err = chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.Contains(loc, "/workflows/wf_") {
		t.Fatalf("after the form: %s %v", loc, err)
	}
	waitFor(t, ctx, app, "#wf-state.badge-issued")
	if !strings.Contains(text("#timeline"), "issued") {
		t.Fatal("the timeline does not show the issuance")
	}
	shot(t, ctx, "workflow-detail")
	checkScreen(t, ctx, "workflow-detail")

	// the list is live: an order placed elsewhere (a script on the UI's
	// JSON API) appears and issues without a reload
	api := uiClient{t: t, base: base, authz: authz}
	api.csrf()
	run(chromedp.Navigate(base+"/workflows"), chromedp.WaitVisible(chromedp.CSS("#workflows")),
		chromedp.WaitVisible(chromedp.CSS("#live-status")))
	st, v := api.call("POST", "/api/workflows", mustJSON(map[string]any{"issuer_id": issuerID,
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

	// import a certificate made elsewhere, with its key, through the form
	fx := newCertFixture(t, []string{"legacy.example.test"}, time.Now().Add(60*24*time.Hour))
	run(chromedp.Navigate(base+"/inventory"), chromedp.Click(chromedp.CSS("#import"), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS("#import-form")),
		chromedp.SetValue(chromedp.CSS("#pem"), fx.chain), chromedp.SetValue(chromedp.CSS("#key_pem"), "not a key"))
	run(chromedp.Click(chromedp.CSS(`#import-form button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(".error")))
	if got := text(".error"); !strings.Contains(got, "Private key: not PEM") {
		t.Fatalf("a bad key: %q", got)
	}
	// the error is shown, the chain kept, the key field empty: keys are never written back
	if got, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#key_pem"))); err != nil || got != "" {
		t.Fatalf("the key field after an error: %q %v", got, err)
	}
	shot(t, ctx, "import")
	checkScreen(t, ctx, "import")
	run(chromedp.SetValue(chromedp.CSS("#key_pem"), fx.key))
	run(chromedp.Click(chromedp.CSS(`#import-form button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS("#drawer")))
	if got := text(".flash"); got != "certificate imported" || !strings.Contains(text("#drawer"), "legacy.example.test") {
		t.Fatalf("after the import: %q", got)
	}

	// roll the account key over from the client's page: the box must be
	// ticked first
	run(chromedp.Navigate(base+"/issuers/"+issuerID), chromedp.WaitVisible(chromedp.CSS("#rollover-form")),
		chromedp.SetValue(chromedp.CSS("#rollover-key"), "p384"),
		chromedp.Click(chromedp.CSS("#rollover-confirm")),
		chromedp.Click(chromedp.CSS("#rollover-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(".flash"); got != "account key rolled over" || !strings.Contains(text("#issuer-facts"), "p384") {
		t.Fatalf("after the rollover: %q\n%s", got, text("#issuer-facts"))
	}

	// the audit log has the UI user's changes, with where they came from
	run(chromedp.Navigate(base+"/audit?actor=ui:"+user+"@127.0.0.1"), chromedp.WaitVisible(chromedp.CSS("#audit")))
	audit := text("#audit")
	for _, want := range []string{"issuer.create", "dns_provider.create", "dns_provider.verify", "workflow.create", "certificate.import", "issuer.rollover"} {
		if !strings.Contains(audit, want) {
			t.Fatalf("the audit log lacks %s:\n%s", want, audit)
		}
	}
	shot(t, ctx, "audit")
	checkScreen(t, ctx, "audit")

	// no secret reached the browser, on any screen, or the logs
	keyLine := strings.TrimSpace(strings.Split(fx.key, "\n")[1])
	var html string
	for _, page := range []string{"/issuers", "/issuers/" + issuerID, "/dns-providers", "/workflows/new", "/inventory", "/audit"} {
		run(chromedp.Navigate(base + page))
		html, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
		if err != nil || strings.Contains(html, cfToken) || strings.Contains(html, eabMAC) || strings.Contains(html, keyLine) {
			t.Fatalf("%s shows a secret (%v)", page, err)
		}
	}
	formLogs, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(formLogs), "dns provider verified") {
		t.Fatalf("the log capture: %v", err)
	}
	for _, s := range []string{cfToken, eabMAC, keyLine} {
		if strings.Contains(string(formLogs), s) {
			t.Fatal("the logs hold a secret")
		}
	}

	// a token from the issued certificate, made in its inventory drawer,
	// and a real client (lego) pulling a certificate with its one-time
	// credentials from the gateway served by the same Caddy
	lego := acmetest.NeedProgram(t, "lego", "lego")
	wf2, err := app.Workflows().Get(t.Context(), second)
	if err != nil || wf2.CertificateID == "" {
		t.Fatalf("the API order's certificate: %v %+v", err, wf2)
	}
	run(chromedp.Navigate(base+"/tokens"), chromedp.WaitVisible(chromedp.CSS(".empty")))
	if !strings.Contains(text(".empty"), "No certificate token yet") {
		t.Fatal("no empty state on the tokens list")
	}
	run(chromedp.Navigate(base+"/inventory"), chromedp.WaitVisible(chromedp.CSS("#certificates")),
		chromedp.Click(chromedp.CSS(`a.open-drawer[href$="cert=`+wf2.CertificateID+`"]`)), chromedp.WaitVisible(chromedp.CSS("#drawer")),
		chromedp.Click(chromedp.CSS(`#drawer-create-token button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS("#secrets")))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.HasSuffix(loc, "/tokens") {
		t.Fatalf("the one-time page is at %s; want the POST's own answer at /tokens", loc)
	}
	value := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(sel), chromedp.NodeVisible))
		if err != nil || v == "" {
			t.Fatalf("reading %s: %q %v", sel, v, err)
		}
		return v
	}
	kid, mac, tokenURL := value("#eab-kid"), value("#eab-hmac-key"), value("#directory-url")
	urlSecret := urlSecretOf(t, strings.TrimPrefix(tokenURL, "https://"+gwAddr))
	if got := text("#sn-lego"); !strings.Contains(got, "--server https://"+gwAddr+"/rest/acme/directory --eab --kid "+kid+" --hmac "+mac) {
		t.Fatalf("the lego snippet: %s", got)
	}
	// the copy button copies the MAC key (the page's own script, no inline code)
	run(chromedp.Click(chromedp.CSS(`button.copy[data-copy=eab-hmac-key]`)),
		chromedp.WaitVisible(chromedp.CSS(`button.copy[data-copy=eab-hmac-key][data-copied]`)))
	if got := text(`button.copy[data-copy=eab-hmac-key]`); got != "Copied" {
		t.Fatalf("the copy button says %q", got)
	}
	secrets := []string{mac, urlSecret, cfToken}

	gwRoot := filepath.Join(dir, "caddy", "pki", "authorities", "local", "root.crt")
	waitTLS(t, gwAddr, gwRoot)
	ldir := t.TempDir()
	out := acmetest.RunProgram(t, []string{"LEGO_CA_CERTIFICATES=" + gwRoot}, lego, "--server", "https://"+gwAddr+"/rest/acme/directory",
		"--eab", "--kid", kid, "--hmac", mac, "--email", "ops@example.com", "--accept-tos", "--path", ldir,
		"--http", "--http.port", "127.0.0.1:0", "--key-type", "ec256", "--domains", "api.example.test", "run")
	certs := filepath.Join(ldir, "certificates")
	checkEdgeCert(t, p, filepath.Join(certs, "api.example.test.crt"), filepath.Join(certs, "api.example.test.key"), "api.example.test")
	for _, s := range secrets[:2] {
		if strings.Contains(out, s) {
			t.Fatal("lego printed the token's secret: the test's own check of its output")
		}
	}

	// the token's page shows the bound account and the pull, with its
	// gateway workflow issued; no secret on it
	run(chromedp.Navigate(base+"/tokens/"+kid), chromedp.WaitVisible(chromedp.CSS("#pulls")))
	pulls := text("#pulls")
	for _, want := range []string{"account_bound", "order", "finalize", "api.example.test", "127.0.0.1", "issued"} {
		if !strings.Contains(pulls, want) {
			t.Fatalf("the token's recent pulls lack %q:\n%s", want, pulls)
		}
	}
	_ = text("#accounts tbody tr") // one bound account
	if got := text("#token-id"); got != kid {
		t.Fatalf("the token page's ID: %q", got)
	}
	shot(t, ctx, "token-detail")
	checkScreen(t, ctx, "token-detail")
	run(chromedp.ScrollIntoView(chromedp.CSS("#accounts")))
	shot(t, ctx, "token-pulls")
	pages := []string{html}
	html, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	pages = append(pages, html)
	run(chromedp.Navigate(base+"/tokens"), chromedp.WaitVisible(chromedp.CSS("#tokens")))
	if row := text("#tok-" + kid); !strings.Contains(row, "api.example.test") || strings.Contains(row, "never") {
		t.Fatalf("the tokens list: %s", text("#tokens"))
	}
	shot(t, ctx, "tokens")
	checkScreen(t, ctx, "tokens")
	html, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	pages = append(pages, html)

	// the audit log has the token's creation by the UI user and its uses
	// at the gateway, with the source address
	run(chromedp.Navigate(base+"/audit?target="+kid), chromedp.WaitVisible(chromedp.CSS("#audit")))
	audit = text("#audit")
	for _, want := range []string{"token.create", "ui:" + user + "@127.0.0.1", "token.account_bound", "token.order", "token.finalize", "acme@127.0.0.1"} {
		if !strings.Contains(audit, want) {
			t.Fatalf("the audit log lacks %s:\n%s", want, audit)
		}
	}
	html, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	pages = append(pages, html)
	// the token now links the certificate its pull made (the gateway's
	// inventory certificate, holding no key): its drawer lists the token
	tok, err := app.Tokens().Get(t.Context(), kid)
	if err != nil || tok.CertificateID == "" {
		t.Fatalf("the token after the pull: %v %+v", err, tok)
	}
	run(chromedp.Navigate(base+"/inventory?cert="+tok.CertificateID), chromedp.WaitVisible(chromedp.CSS("#drawer")))
	if !strings.Contains(text("#drawer"), kid) {
		t.Fatal("the drawer does not list the certificate's token")
	}
	html, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	pages = append(pages, html)
	for i, pg := range pages {
		for _, s := range secrets {
			if strings.Contains(pg, s) {
				t.Fatalf("page %d after the one-time page shows a secret", i)
			}
		}
	}
	for _, path := range []string{"/api/tokens", "/api/tokens/" + kid, "/api/tokens/" + kid + "/accounts", "/api/audit?target=" + kid} {
		st, v := api.call("GET", path, "")
		raw, _ := json.Marshal(v)
		for _, s := range secrets {
			if st != 200 || strings.Contains(string(raw), s) {
				t.Fatalf("GET %s: %d, or it shows a secret", path, st)
			}
		}
	}
	logs, err := os.ReadFile(logFile)
	if err != nil || len(logs) == 0 {
		t.Fatalf("reading Caddy's log: %v", err)
	}
	for _, s := range secrets {
		if strings.Contains(string(logs), s) {
			t.Fatal("Caddy's log holds a secret")
		}
	}
	if !strings.Contains(string(logs), kid) {
		t.Fatal("Caddy's log does not mention the token at all: is the log file the right one?")
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
		{"/tokens", "#tokens", "tokens"},
		{"/tokens/" + kid, "#pulls", "token-detail"},
		{"/issuers/" + issuerID, "#issuer-status", "issuer"},
	} {
		checkPhone(t, ctx, base+s.path, s.sel, s.name)
	}
}

// waitTLS waits (polling a real server, up to a minute) until addr serves
// a certificate from the CA in rootFile, once Caddy's internal CA has made
// it.
func waitTLS(t *testing.T, addr, rootFile string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		pool := x509.NewCertPool()
		if b, err := os.ReadFile(rootFile); err == nil && pool.AppendCertsFromPEM(b) {
			if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool}); err == nil {
				conn.Close()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway at %s has no certificate after a minute", addr)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(100 * time.Millisecond): // polling a real server, bounded by the deadline
		}
	}
}

// checkEdgeCert asserts the client's certificate carries its own key and
// chains to Pebble's root for name.
func checkEdgeCert(t *testing.T, p *acmetest.Pebble, chainFile, keyFile, name string) {
	t.Helper()
	chainPEM, err := os.ReadFile(chainFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || len(chain) < 2 {
		t.Fatalf("the client stored %d certificates and key %v", len(chain), kb != nil)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		t.Fatalf("parsing the client's key: %v", err)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		t.Fatal("the certificate does not carry the client's own key")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: p.RootPool(), Intermediates: inter, DNSName: name}); err != nil {
		t.Fatalf("the certificate does not chain to Pebble's root: %v", err)
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
