package admin

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth" // basic_auth
	_ "github.com/caddyserver/caddy/v2/modules/logging"             // the file log writer and JSON encoder
	"golang.org/x/crypto/bcrypt"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

// TestUISecretsStayOutOfLogs drives the UI as an operator does (caddy.Load,
// basic_auth in front, access logs on, every log at debug level written to
// a file): JSON API and form posts that carry an EAB MAC key (wrong, then
// right) and Cloudflare tokens (accepted, refused), a form post refused
// for its missing CSRF token, and a viewer's refused post. No secret
// appears in any log line, audit entry or response.
func TestUISecretsStayOutOfLogs(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv(certlocker.EnvEncryptionKey, "")

	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true, VAAlwaysValid: true})
	mac := p.NewExternalAccountKey("kid-ui")
	wrongMAC := base64.RawURLEncoding.EncodeToString(randomBytes(t, 32))
	formMAC := base64.RawURLEncoding.EncodeToString(randomBytes(t, 32))
	d := acmetest.NewDNSServer(t, "example.test")
	cf := acmetest.NewCloudflare(t, d)
	cfToken, revokedToken, formToken := "cf-ui-"+hexToken(t), "cf-ui-revoked-"+hexToken(t), "cf-ui-form-"+hexToken(t)
	cf.AddToken(cfToken, acmetest.PermZoneRead("example.test"), acmetest.PermDNSEdit("example.test"))
	const password, viewerPassword = "pw of the ops user 0123", "pw of the viewer 4567"
	secrets := map[string]string{"EAB MAC key": mac, "wrong EAB MAC key": wrongMAC, "form EAB MAC key": formMAC,
		"Cloudflare token": cfToken, "revoked Cloudflare token": revokedToken, "form Cloudflare token": formToken,
		"password": password, "viewer password": viewerPassword}
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logFile := filepath.Join(dir, "debug.log")
	cfg := mustJSON(map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"capture": map[string]any{
			"writer":  map[string]any{"output": "file", "filename": logFile, "roll": false},
			"encoder": map[string]any{"format": "json"}, "level": "DEBUG"}}},
		"apps": map[string]any{
			"certlocker": map[string]any{"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
				"users": []any{map[string]any{"id": "ops", "role": "admin"}, map[string]any{"id": "vic", "role": "viewer", "groups": []string{"A"}}}},
			"http": map[string]any{"servers": map[string]any{"ui": map[string]any{
				"listen": []string{addr}, "automatic_https": map[string]any{"disable": true},
				"logs": map[string]any{}, // access logs, at their most detailed
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "authentication", "providers": map[string]any{"http_basic": map[string]any{
						"accounts": []any{map[string]any{"username": "ops", "password": hash(password)},
							map[string]any{"username": "vic", "password": hash(viewerPassword)}}}}},
					map[string]any{"handler": "certlocker_ui"},
				}}},
			}}},
		},
	})
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = caddy.Stop()
		}
	})
	app := certlocker.Current()
	useTestDNS(app, d, cf)

	var responses []string
	type client struct{ user, pw, csrf string }
	signIn := func(user, pw string) *client {
		c := &client{user: user, pw: pw}
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/workflows", nil)
		req.SetBasicAuth(user, pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c.csrf = resp.Header.Get(csrfHeader)
		if resp.StatusCode != 200 || c.csrf == "" {
			t.Fatalf("signing in as %s: %d", user, resp.StatusCode)
		}
		return c
	}
	do := func(c *client, method, path, contentType, body string, withCSRF bool) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, strings.NewReader(body))
		req.SetBasicAuth(c.user, c.pw)
		req.AddCookie(&http.Cookie{Name: csrfCookie, Value: c.csrf})
		if withCSRF {
			req.Header.Set(csrfHeader, c.csrf)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		responses = append(responses, method+" "+path+": "+string(b))
		var v map[string]any
		_ = json.Unmarshal(b, &v)
		return resp.StatusCode, v
	}
	api := func(c *client, method, path string, body any) (int, map[string]any) {
		t.Helper()
		return do(c, method, path, "application/json", mustJSON(body), true)
	}
	form := func(c *client, path string, v url.Values, withCSRF bool) int {
		t.Helper()
		v = maps.Clone(v)
		if withCSRF {
			v.Set(csrfField, c.csrf)
		}
		status, _ := do(c, "POST", path, "application/x-www-form-urlencoded", v.Encode(), false)
		return status
	}
	ops, vic := signIn("ops", password), signIn("vic", viewerPassword)

	// ACME client through the UI's JSON API: the wrong MAC key is refused
	// by the CA, the right one registers
	roots := string(p.WFECertPEM())
	issuer := map[string]any{"name": "pebble", "directory_url": p.DirectoryURL(), "contacts": []string{"ops@example.com"},
		"eab_key_id": "kid-ui", "eab_mac_key": wrongMAC, "custom_roots_pem": roots, "agree_terms": true}
	if status, v := api(ops, "POST", "/api/issuers", issuer); status != http.StatusUnprocessableEntity {
		t.Fatalf("wrong MAC key: %d %v", status, v)
	}
	issuer["eab_mac_key"] = mac
	if status, v := api(ops, "POST", "/api/issuers", issuer); status != http.StatusCreated {
		t.Fatalf("issuer: %d %v", status, v)
	}
	// DNS provider client: created, token refused at verify, restored
	status, v := api(ops, "POST", "/api/dns-providers", map[string]any{"name": "cf", "type": "cloudflare",
		"zones": []string{"example.test"}, "credentials": map[string]string{"api_token": cfToken}})
	if status != http.StatusCreated {
		t.Fatalf("cloudflare: %d %v", status, v)
	}
	cfID := v["id"].(string)
	for _, tok := range []string{revokedToken, cfToken} {
		if status, v := api(ops, "PATCH", "/api/dns-providers/"+cfID, map[string]any{"credentials": map[string]string{"api_token": tok}}); status != 200 {
			t.Fatalf("patch token: %d %v", status, v)
		}
		if status, v := api(ops, "POST", "/api/dns-providers/"+cfID+"/actions/verify", nil); status != 200 || v["ok"] != (tok == cfToken) {
			t.Fatalf("verify: %d %v", status, v)
		}
	}
	// the forms for ACME clients and DNS providers (whatever they answer),
	// one refused for its missing CSRF token, one refused to a viewer
	issuerForm := url.Values{"name": {"form-ca"}, "directory_url": {p.DirectoryURL()}, "eab_key_id": {"kid-ui"},
		"eab_mac_key": {formMAC}, "agree_terms": {"on"}}
	dnsForm := url.Values{"name": {"cf-form"}, "type": {"cloudflare"}, "zones": {"example.test"}, "api_token": {formToken},
		"credentials.api_token": {formToken}}
	for _, f := range []struct {
		path string
		v    url.Values
	}{{"/issuers", issuerForm}, {"/issuers/new", issuerForm}, {"/dns-providers", dnsForm}, {"/dns-providers/new", dnsForm}} {
		form(ops, f.path, f.v, true)
		if status := form(ops, f.path, f.v, false); status != http.StatusForbidden {
			t.Errorf("form post to %s without the CSRF token: %d", f.path, status)
		}
		if status := form(vic, f.path, f.v, true); status != http.StatusForbidden {
			t.Errorf("viewer's form post to %s: %d", f.path, status)
		}
	}
	// a secret sent where a field is invalid
	if status, _ := api(ops, "POST", "/api/dns-providers", map[string]any{"name": "bad name!", "type": "cloudflare",
		"zones": []string{"example.test"}, "credentials": map[string]string{"api_token": formToken}}); status != 400 {
		t.Fatalf("bad DNS provider: %d", status)
	}

	entries, _, err := app.AuditLog(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	refusals := 0
	for _, e := range entries {
		b, _ := json.Marshal(e)
		for what, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("an audit entry holds the %s: %s", what, b)
			}
		}
		if e.Result == storage.AuditRefused {
			refusals++
		}
	}
	if refusals < 8 {
		t.Fatalf("%d refusals audited, want the wrong MAC key, the CSRF-less and the viewer's posts", refusals)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true

	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n, debug, access, ui int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		var entry map[string]any
		if err := json.Unmarshal(line, &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		n++
		if entry["level"] == "debug" {
			debug++
		}
		logger, _ := entry["logger"].(string)
		if strings.HasPrefix(logger, "http.log.access") {
			access++
		}
		if strings.Contains(logger, "certlocker_ui") {
			ui++
		}
		for what, s := range secrets {
			if bytes.Contains(line, []byte(s)) {
				t.Errorf("a log entry holds the %s: %s", what, line)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if debug == 0 || access < 10 || ui == 0 {
		t.Fatalf("the log did not capture the UI paths: %d entries, %d debug, %d access, %d from the UI", n, debug, access, ui)
	}
	for _, r := range responses {
		for what, s := range secrets {
			if strings.Contains(r, s) {
				t.Errorf("a response holds the %s: %s", what, r)
			}
		}
	}
	t.Logf("%d log entries (%d debug, %d access), %d audit entries, %d responses checked", n, debug, access, len(entries), len(responses))
}
