package admin

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/logging" // the file log writer and JSON encoder

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
)

// TestSecretsStayOutOfLogs runs the product as an operator does (caddy.Load,
// the real admin endpoint) with every log at debug level written to a file,
// through API calls that carry an EAB MAC key (a wrong one, then the right
// one), Cloudflare tokens (accepted, then refused), a TSIG key, and webhook
// URLs whose path is the credential (one answering 500, one dropping the
// connection). No secret appears in any log entry, field or response after
// creation, nor in GET /config/.
func TestSecretsStayOutOfLogs(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv(certlocker.EnvEncryptionKey, "")

	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true, VAAlwaysValid: true})
	mac := p.NewExternalAccountKey("kid-1")
	wrongMAC := base64.RawURLEncoding.EncodeToString(randomBytes(t, 32))
	d := acmetest.NewDNSServer(t, "example.test")
	cf := acmetest.NewCloudflare(t, d)
	cfToken := "cf-" + hexToken(t)
	revokedToken := "cf-revoked-" + hexToken(t)
	cf.AddToken(cfToken, acmetest.PermZoneRead("example.test"), acmetest.PermDNSEdit("example.test"))
	tsigKey := base64.StdEncoding.EncodeToString(randomBytes(t, 32))

	// webhook receivers: the URL path is the credential
	hookToken, slackToken, hookSecret := hexToken(t), hexToken(t), hexToken(t)
	var once [2]sync.Once
	received := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hooks/" + hookToken:
			once[0].Do(func() { close(received[0]) })
			http.Error(w, "down for maintenance", http.StatusInternalServerError)
		case "/services/T0/B0/" + slackToken:
			once[1].Do(func() { close(received[1]) })
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close() // the client sees the connection drop
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(hooks.Close)
	t.Setenv("TEST_HOOK_URL", hooks.URL+"/hooks/"+hookToken)
	t.Setenv("TEST_HOOK_SECRET", hookSecret)
	t.Setenv("TEST_SLACK_URL", hooks.URL+"/services/T0/B0/"+slackToken)
	secrets := map[string]string{"EAB MAC key": mac, "wrong EAB MAC key": wrongMAC, "Cloudflare token": cfToken,
		"revoked Cloudflare token": revokedToken, "TSIG key": tsigKey, "webhook URL token": hookToken,
		"Slack URL token": slackToken, "webhook secret": hookSecret}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	logFile := filepath.Join(dir, "debug.log")
	cfg := mustJSON(map[string]any{
		"admin": map[string]any{"listen": adminAddr, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"capture": map[string]any{
			"writer":  map[string]any{"output": "file", "filename": logFile, "roll": false},
			"encoder": map[string]any{"format": "json"}, "level": "DEBUG"}}},
		"apps": map[string]any{"certlocker": map[string]any{
			"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
			"notifiers": []any{
				map[string]any{"notifier": "webhook", "url": "{env.TEST_HOOK_URL}", "secret": "{env.TEST_HOOK_SECRET}", "max_attempts": 1},
				map[string]any{"notifier": "webhook", "format": "slack", "url": "{env.TEST_SLACK_URL}", "max_attempts": 1},
			},
		}},
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
	if app == nil {
		t.Fatal("the certlocker app is not running")
	}
	useTestDNS(app, d, cf)

	var responses []string
	admin := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		status, b := callAdmin(t, adminAddr, method, path, strings.NewReader(body))
		responses = append(responses, method+" "+path+": "+string(b))
		var v map[string]any
		_ = json.Unmarshal(b, &v)
		return status, v
	}

	// ACME client: a wrong MAC key is refused by the CA, the right one registers
	roots := string(p.WFECertPEM())
	issuer := map[string]any{"name": "pebble", "directory_url": p.DirectoryURL(), "contacts": []string{"ops@example.com"},
		"eab_key_id": "kid-1", "eab_mac_key": wrongMAC, "custom_roots_pem": roots, "agree_terms": true}
	if status, v := admin(http.MethodPost, "/certlocker/issuers", mustJSON(issuer)); status != http.StatusUnprocessableEntity {
		t.Fatalf("wrong MAC key: %d %v", status, v)
	}
	issuer["eab_mac_key"] = mac
	status, v := admin(http.MethodPost, "/certlocker/issuers", mustJSON(issuer))
	if status != http.StatusCreated {
		t.Fatalf("issuer: %d %v", status, v)
	}
	issuerID := v["id"].(string)
	if status, v := admin(http.MethodPost, "/certlocker/issuers/"+issuerID+"/actions/test", ""); status != 200 || v["ok"] != true {
		t.Fatalf("issuer test: %d %v", status, v)
	}

	// DNS provider clients: Cloudflare (verified, refused, restored) and RFC 2136
	status, v = admin(http.MethodPost, "/certlocker/dns-providers", mustJSON(map[string]any{"name": "cf", "type": "cloudflare",
		"zones": []string{"example.test"}, "credentials": map[string]string{"api_token": cfToken}}))
	if status != http.StatusCreated {
		t.Fatalf("cloudflare: %d %v", status, v)
	}
	cfID := v["id"].(string)
	for _, tok := range []string{revokedToken, cfToken} {
		if status, v := admin(http.MethodPatch, "/certlocker/dns-providers/"+cfID, mustJSON(map[string]any{
			"credentials": map[string]string{"api_token": tok}})); status != 200 {
			t.Fatalf("patch token: %d %v", status, v)
		}
		status, v := admin(http.MethodPost, "/certlocker/dns-providers/"+cfID+"/actions/verify", "")
		if status != 200 || v["ok"] != (tok == cfToken) {
			t.Fatalf("verify: %d %v", status, v)
		}
	}
	if status, v := admin(http.MethodPost, "/certlocker/dns-providers", mustJSON(map[string]any{"name": "bind", "type": "rfc2136",
		"zones": []string{"example.test"}, "credentials": map[string]string{"server": d.Addr(), "key_name": "certlocker.",
			"key_alg": "hmac-rot13", "key": tsigKey}})); status != 400 || v["field"] != "credentials.key_alg" {
		t.Fatalf("rfc2136 with a bad algorithm: %d %v", status, v)
	}
	status, v = admin(http.MethodPost, "/certlocker/dns-providers", mustJSON(map[string]any{"name": "bind", "type": "rfc2136",
		"zones": []string{"example.test"}, "credentials": map[string]string{"server": d.Addr(), "key_name": "certlocker.",
			"key_alg": "hmac-sha256", "key": tsigKey}}))
	if status != http.StatusCreated {
		t.Fatalf("rfc2136: %d %v", status, v)
	}
	bindID := v["id"].(string)
	if status, v := admin(http.MethodPost, "/certlocker/dns-providers/"+bindID+"/actions/verify", ""); status != 200 {
		t.Fatalf("verify rfc2136: %d %v", status, v)
	}

	// an order: dns-01 through Cloudflare and http-01, to its end
	status, v = admin(http.MethodPost, "/certlocker/workflows", mustJSON(map[string]any{"issuer_id": issuerID,
		"identifiers": []any{map[string]any{"value": "*.example.test", "dns_provider_id": "cf"}, map[string]any{"value": "www.example.test"}}}))
	if status != http.StatusCreated {
		t.Fatalf("workflow: %d %v", status, v)
	}
	// the provider client named "cf" is kept by its ID
	if ids, _ := v["identifiers"].([]any); len(ids) != 2 || ids[0].(map[string]any)["dns_provider_id"] != cfID {
		t.Fatalf("workflow identifiers: %v", v["identifiers"])
	}
	wfID := v["id"].(string)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+adminAddr+"/certlocker/workflows/"+wfID+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	responses = append(responses, "GET events: "+string(events))
	if !strings.Contains(string(events), `event: end`+"\n"+`data: {"state":"issued"}`) {
		t.Fatalf("the order did not issue: %s", events)
	}
	<-received[0]
	<-received[1]

	for _, path := range []string{"/certlocker/issuers", "/certlocker/issuers/" + issuerID, "/certlocker/dns-providers",
		"/certlocker/dns-providers/" + cfID, "/certlocker/dns-providers/" + bindID, "/certlocker/workflows/" + wfID,
		"/certlocker/audit?limit=1000", "/certlocker/certificates", "/config/"} {
		if status, v := admin(http.MethodGet, path, ""); status != 200 {
			t.Fatalf("GET %s: %d %v", path, status, v)
		}
	}
	// stop everything: the webhook workers finish what they were sending
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true

	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n, debug, hookFailures, dnsEntries, adminEntries int
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
		if entry["msg"] == "webhook delivery failed" {
			hookFailures++
		}
		if l, _ := entry["logger"].(string); strings.Contains(l, ".dns") {
			dnsEntries++
		}
		if entry["logger"] == "admin.api.certlocker" {
			adminEntries++
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
	if debug == 0 || hookFailures < 2 || dnsEntries == 0 || adminEntries == 0 {
		t.Fatalf("the log did not capture the paths: %d entries, %d debug, %d webhook failures, %d from the DNS store, %d from the admin API",
			n, debug, hookFailures, dnsEntries, adminEntries)
	}
	for _, r := range responses {
		for what, s := range secrets {
			if strings.Contains(r, s) {
				t.Errorf("a response holds the %s: %s", what, r)
			}
		}
	}
	t.Logf("%d log entries (%d debug), %d responses checked", n, debug, len(responses))
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// hexToken is a random credential-like string (letters and digits).
func hexToken(t *testing.T) string {
	return strings.ToLower(base64.RawURLEncoding.EncodeToString(randomBytes(t, 24)))
}
