package admin

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
)

const testToken = "admin-test-cf-token-0123456789abcdefghijkl"

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (a *API) call(t *testing.T, method, path, body string) reply {
	t.Helper()
	w := serve(t, a, method, path, body)
	r := reply{status: w.Code, header: w.Header(), raw: w.Body.String()}
	_ = json.Unmarshal(w.Body.Bytes(), &r.body)
	if strings.Contains(r.raw, testToken) {
		t.Fatalf("%s %s revealed the token: %s", method, path, r.raw)
	}
	return r
}

func TestDNSProvidersAPI(t *testing.T) {
	dir := t.TempDir()
	api, app := testAPI(t, `{"storage":{"path":"`+filepath.Join(dir, "c.db")+`"},"node_id":"api-node"}`)
	d := acmetest.NewDNSServer(t, "example.test")
	cf := acmetest.NewCloudflare(t, d)
	cf.AddToken(testToken, acmetest.PermZoneRead("example.test"), acmetest.PermDNSEdit("example.test"))
	useTestDNS(app, d, cf)

	bad := []struct {
		name, body, field, want string
		status                  int
	}{
		{"unknown field", `{"name":"cf","colour":"blue"}`, "colour", `unknown field "colour"`, 400},
		{"bad zone", `{"name":"cf","type":"cloudflare","zones":["a b"],"credentials":{"api_token":"` + testToken + `"}}`,
			"zones[0]", "not a valid domain name", 400},
		{"no token", `{"name":"cf","type":"cloudflare","zones":["example.test"],"credentials":{}}`,
			"credentials.api_token", "api_token is required", 400},
		{"bad duration", `{"name":"cf","type":"cloudflare","ttl":"soon"}`, "ttl", `ttl must be a duration such as "2m" or "90s"`, 400},
		{"ttl not whole seconds", `{"name":"cf","type":"cloudflare","zones":["example.test"],"ttl":"90500ms","credentials":{"api_token":"` + testToken + `"}}`,
			"ttl", "ttl must be a whole number of seconds", 400},
		{"not JSON", `{"name":`, "", "reading request body", 400},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := api.call(t, http.MethodPost, "/certlocker/dns-providers", tc.body)
			msg, _ := r.body["error"].(string)
			field, _ := r.body["field"].(string)
			if r.status != tc.status || field != tc.field || !strings.Contains(msg, tc.want) {
				t.Fatalf("got %d %s; want %d field %q message %q", r.status, r.raw, tc.status, tc.field, tc.want)
			}
		})
	}
	if r := api.call(t, http.MethodGet, "/certlocker/dns-providers", ""); r.status != 200 || len(r.body["items"].([]any)) != 0 {
		t.Fatalf("bad input saved something: %s", r.raw)
	}

	r := api.call(t, http.MethodPost, "/certlocker/dns-providers",
		`{"name":"cf-main","type":"cloudflare","zones":["example.test"],"group":"web","ttl":"2m",
		  "credentials":{"api_token":"`+testToken+`"}}`)
	if r.status != http.StatusCreated || r.body["status"] != "unverified" || r.body["ttl"] != "2m0s" {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	id := r.body["id"].(string)
	if r.header.Get("Location") != "/certlocker/dns-providers/"+id {
		t.Fatalf("location %q", r.header.Get("Location"))
	}
	if r := api.call(t, http.MethodGet, "/certlocker/dns-providers/cf-main", ""); r.status != 200 || r.body["id"] != id {
		t.Fatalf("get by name: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodGet, "/certlocker/dns-providers?group=other", ""); len(r.body["items"].([]any)) != 0 {
		t.Fatalf("group filter: %s", r.raw)
	}

	// verify: against the Cloudflare stand-in and the harness DNS server
	r = api.call(t, http.MethodPost, "/certlocker/dns-providers/"+id+"/actions/verify", "")
	if r.status != 200 || r.body["ok"] != true || r.body["provider"].(map[string]any)["status"] != "verified" {
		t.Fatalf("verify: %d %s", r.status, r.raw)
	}
	version := r.body["provider"].(map[string]any)["version"].(float64)

	// update: stale version, then a new token (unverified again)
	if r := api.call(t, http.MethodPatch, "/certlocker/dns-providers/"+id, `{"version":1,"group":"ops"}`); r.status != http.StatusConflict {
		t.Fatalf("stale update: %d %s", r.status, r.raw)
	}
	r = api.call(t, http.MethodPatch, "/certlocker/dns-providers/"+id,
		`{"version":`+strconv.Itoa(int(version))+`,"group":"ops","credentials":{"api_token":"revoked-token-0123456789"}}`)
	if r.status != 200 || r.body["group"] != "ops" || r.body["status"] != "unverified" {
		t.Fatalf("update: %d %s", r.status, r.raw)
	}
	r = api.call(t, http.MethodPost, "/certlocker/dns-providers/"+id+"/actions/verify", "")
	if r.status != 200 || r.body["ok"] != false || !strings.Contains(r.body["message"].(string), "does not accept the api_token") {
		t.Fatalf("failed verify: %d %s", r.status, r.raw)
	}
	r = api.call(t, http.MethodPatch, "/certlocker/dns-providers/"+id, `{"credentials":{"api_token":"`+testToken+`"}}`)
	if r.status != 200 {
		t.Fatalf("restore token: %d %s", r.status, r.raw)
	}

	// a pending challenge record blocks deletion until cleaned up
	if _, err := app.DNS().Present(t.Context(), id, "wf_1", "_acme-challenge.example.test", "secret-key-auth"); err != nil {
		t.Fatal(err)
	}
	r = api.call(t, http.MethodGet, "/certlocker/dns-providers/"+id+"/records", "")
	items := r.body["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["name"] != "_acme-challenge" || strings.Contains(r.raw, "secret-key-auth") {
		t.Fatalf("records: %s", r.raw)
	}
	if r := api.call(t, http.MethodDelete, "/certlocker/dns-providers/"+id, ""); r.status != http.StatusConflict ||
		!strings.Contains(r.raw, "challenge record(s) to clean up") {
		t.Fatalf("delete in use: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodPost, "/certlocker/dns-providers/actions/cleanup", `{"older_than":"-1s"}`); r.status != 400 ||
		r.body["field"] != "older_than" || !strings.Contains(r.raw, "must not be negative") {
		t.Fatalf("negative age: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodPost, "/certlocker/dns-providers/actions/cleanup", `{"older_than":"soon"}`); r.status != 400 ||
		r.body["field"] != "older_than" || !strings.Contains(r.raw, `older_than must be a duration such as`) {
		t.Fatalf("age not a duration: %d %s", r.status, r.raw)
	}
	r = api.call(t, http.MethodPost, "/certlocker/dns-providers/actions/cleanup", `{"older_than":"1ns"}`)
	if r.status != 200 || r.body["removed"] != float64(1) || len(cf.Records("example.test")) != 0 {
		t.Fatalf("cleanup: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodDelete, "/certlocker/dns-providers/"+id, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodGet, "/certlocker/dns-providers/"+id, ""); r.status != http.StatusNotFound {
		t.Fatalf("get deleted: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodPut, "/certlocker/dns-providers/"+id, "{}"); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", r.status)
	}

	r = api.call(t, http.MethodGet, "/certlocker/audit?limit=100", "")
	var actions []string
	for _, it := range r.body["items"].([]any) {
		if a := it.(map[string]any)["action"].(string); strings.HasPrefix(a, "dns_provider.") {
			actions = append(actions, a)
		}
	}
	want := "dns_provider.delete,dns_provider.cleanup,dns_provider.update,dns_provider.verify,dns_provider.update,dns_provider.verify,dns_provider.create"
	if strings.Join(actions, ",") != want {
		t.Fatalf("audit actions %v, want %s", actions, want)
	}
}

func TestDNSProvidersFromConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TEST_DNS_TOKEN", testToken)
	storage := `"storage":{"path":"` + filepath.Join(dir, "c.db") + `"},"node_id":"cfg-node"`
	api, _ := testAPI(t, `{`+storage+`,"dns_providers":[{"name":"cf","type":"cloudflare","zones":["example.test"],
		"credentials":{"api_token":"{env.TEST_DNS_TOKEN}"}}]}`)
	r := api.call(t, http.MethodGet, "/certlocker/dns-providers/cf", "")
	if r.status != 200 || r.body["managed_by"] != "config" {
		t.Fatalf("config provider: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodPatch, "/certlocker/dns-providers/cf", `{"group":"x"}`); r.status != http.StatusConflict ||
		!strings.Contains(r.raw, "declared in the config") {
		t.Fatalf("patch config provider: %d %s", r.status, r.raw)
	}
	if r := api.call(t, http.MethodDelete, "/certlocker/dns-providers/cf", ""); r.status != http.StatusConflict {
		t.Fatalf("delete config provider: %d %s", r.status, r.raw)
	}
}

// TestConfigTokenNotEchoed loads configs through Caddy's real admin
// endpoint: a token written in the config is refused without the response
// repeating it, and GET /config/ of the running config shows the
// placeholder, never the token.
func TestConfigTokenNotEchoed(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("TEST_DNS_TOKEN", testToken)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	config := func(token string) []byte {
		return []byte(`{"admin":{"listen":"` + adminAddr + `","config":{"persist":false}},"apps":{"certlocker":{
			"storage":{"path":"` + filepath.Join(dir, "c.db") + `"},"node_id":"cfg-node",
			"dns_providers":[{"name":"cf","type":"cloudflare","zones":["example.test"],"credentials":{"api_token":"` + token + `"}}]}}}`)
	}
	if err := caddy.Load(config("{env.TEST_DNS_TOKEN}"), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	admin := func(method, path string, body []byte) (int, string) {
		t.Helper()
		status, b := callAdmin(t, adminAddr, method, path, bytes.NewReader(body))
		if strings.Contains(string(b), testToken) {
			t.Fatalf("%s %s revealed the token: %s", method, path, b)
		}
		return status, string(b)
	}
	if status, body := admin(http.MethodGet, "/config/", nil); status != 200 || !strings.Contains(body, `"{env.TEST_DNS_TOKEN}"`) {
		t.Fatalf("GET /config/: %d %s", status, body)
	}
	if status, body := admin(http.MethodGet, "/certlocker/dns-providers/cf", nil); status != 200 || !strings.Contains(body, `"managed_by": "config"`) {
		t.Fatalf("the loaded config's provider: %d %s", status, body)
	}
	status, body := admin(http.MethodPost, "/load", config(testToken))
	if status != http.StatusBadRequest || !strings.Contains(body, "credentials.api_token must be a placeholder") {
		t.Fatalf("POST /load with a literal token: %d %s", status, body)
	}
	if status, body := admin(http.MethodGet, "/config/", nil); status != 200 || !strings.Contains(body, `"{env.TEST_DNS_TOKEN}"`) {
		t.Fatalf("GET /config/ after the refused load: %d %s", status, body)
	}
}
