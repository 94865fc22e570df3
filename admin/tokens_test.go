package admin

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/storage"
)

func TestTokensAPI(t *testing.T) {
	dir := t.TempDir()
	api, app := testAPI(t, `{"storage":{"path":"`+filepath.Join(dir, "c.db")+`"},"node_id":"api-node",
		"issuers":[{"name":"pebble","directory_url":"https://pebble.invalid/dir","agree_terms":true}]}`)
	ctx := t.Context()
	iss := struct{ ID string }{}
	if rec := serve(t, api, http.MethodGet, "/certlocker/issuers", ""); rec.Code == 200 {
		var list struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &list)
		if len(list.Items) == 1 {
			iss.ID = list.Items[0].ID
		}
	}
	if iss.ID == "" {
		t.Fatal("the declared ACME client is not listed")
	}
	var secrets []string // every secret shown, never to be seen again
	call := func(method, path, body string) (int, map[string]any, string) {
		t.Helper()
		rec := serve(t, api, method, path, body)
		var m map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &m)
		for _, s := range secrets {
			if strings.Contains(rec.Body.String(), s) {
				t.Fatalf("%s %s revealed a secret: %s", method, path, rec.Body.String())
			}
		}
		return rec.Code, m, rec.Body.String()
	}

	bad := []struct{ name, body, field string }{
		{"empty", `{}`, "names"},
		{"unknown field", `{"names":["a.example.com"],"colour":"blue"}`, "colour"},
		{"no issuer", `{"names":["a.example.com"]}`, "issuer_id"},
		{"unknown issuer", `{"names":["a.example.com"],"issuer_id":"iss_nope"}`, "issuer_id"},
		{"bad name", `{"names":["a_b c"],"issuer_id":"` + iss.ID + `"}`, "names[0]"},
		{"unknown certificate", `{"certificate_id":"crt_nope"}`, "certificate_id"},
		{"max accounts", `{"names":["a.example.com"],"issuer_id":"` + iss.ID + `","max_accounts":-1}`, "max_accounts"},
		{"names type", `{"names":"a.example.com","issuer_id":"` + iss.ID + `"}`, "names"},
	}
	for _, c := range bad {
		t.Run("bad/"+c.name, func(t *testing.T) {
			status, m, raw := call(http.MethodPost, "/certlocker/tokens", c.body)
			if status != 400 || !strings.HasPrefix(m["field"].(string), c.field) {
				t.Fatalf("status %d, body %s; want 400 on %s", status, raw, c.field)
			}
		})
	}

	// a token's DNS provider must exist (and be the caller's)
	if status, m, raw := call(http.MethodPost, "/certlocker/tokens",
		`{"names":["a.example.com","*.apps.example.com"],"issuer_id":"`+iss.ID+`","challenges":{"*.apps.example.com":{"challenge":"dns-01","dns_provider_id":"dns_x"}},"group":"edge"}`); status != 400 || m["field"] != "names[1]" {
		t.Fatalf("token with an unknown DNS provider: %d %s", status, raw)
	}
	prov, err := app.DNS().Create(ctx, "test", dnsproviders.Config{Name: "dns-apps", Type: "cloudflare", Zones: []string{"apps.example.com"},
		Credentials: json.RawMessage(`{"api_token":"cf-test-token-0123456789"}`), Group: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	status, m, raw := call(http.MethodPost, "/certlocker/tokens",
		`{"names":["a.example.com","*.apps.example.com"],"issuer_id":"`+iss.ID+`","challenges":{"*.apps.example.com":{"challenge":"dns-01","dns_provider_id":"`+prov.ID+`"}},"group":"edge"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, raw)
	}
	for _, k := range []string{"id", "type", "names", "state", "eab_key_id", "eab_hmac_key", "directory_path"} {
		if m[k] == nil || m[k] == "" {
			t.Fatalf("create response lacks %s: %s", k, raw)
		}
	}
	id := m["id"].(string)
	if !strings.HasPrefix(id, "ctk_") || m["type"] != "CERTIFICATE" || m["state"] != "active" || m["eab_key_id"] != id ||
		!strings.HasPrefix(m["directory_path"].(string), "/rest/acme/t/") {
		t.Fatalf("create response %s", raw)
	}
	mac := m["eab_hmac_key"].(string)
	urlSecret := strings.TrimSuffix(strings.TrimPrefix(m["directory_path"].(string), "/rest/acme/t/"), "/directory")
	if !strings.Contains(m["clients"].(map[string]any)["lego"].(string), mac) {
		t.Fatal("the create response's recipes should carry the MAC key")
	}
	secrets = append(secrets, mac, urlSecret)

	for _, p := range []string{"/certlocker/tokens/" + id, "/certlocker/tokens", "/certlocker/tokens?group=edge&state=active"} {
		if status, _, raw := call(http.MethodGet, p, ""); status != 200 || !strings.Contains(raw, id) {
			t.Fatalf("GET %s: %d %s", p, status, raw)
		}
	}
	for _, p := range []string{"/certlocker/tokens?state=revoked", "/certlocker/tokens?group=other", "/certlocker/tokens?certificate_id=crt_x"} {
		if status, _, raw := call(http.MethodGet, p, ""); status != 200 || strings.Contains(raw, id) {
			t.Fatalf("GET %s: %d %s", p, status, raw)
		}
	}
	if status, m, _ := call(http.MethodGet, "/certlocker/tokens?state=sleeping", ""); status != 400 || m["field"] != "state" {
		t.Fatalf("bad state filter: %d", status)
	}
	if status, m, _ := call(http.MethodGet, "/certlocker/tokens?colour=blue", ""); status != 400 || m["field"] != "colour" {
		t.Fatalf("unknown filter: %d", status)
	}
	if status, m, raw := call(http.MethodPatch, "/certlocker/tokens/"+id, `{"description":"edge pair","max_accounts":3}`); status != 200 ||
		m["description"] != "edge pair" || m["max_accounts"].(float64) != 3 {
		t.Fatalf("patch: %d %s", status, raw)
	}
	if status, m, _ := call(http.MethodPatch, "/certlocker/tokens/"+id, `{"min_rsa_bits":1024}`); status != 400 || m["field"] != "min_rsa_bits" {
		t.Fatalf("bad patch: %d", status)
	}
	if status, _, raw := call(http.MethodGet, "/certlocker/tokens/"+id+"/accounts", ""); status != 200 || !strings.Contains(raw, `"items": []`) {
		t.Fatalf("accounts: %d %s", status, raw)
	}

	status, m, raw = call(http.MethodPost, "/certlocker/tokens/"+id+"/actions/rotate", `{"grace":"1h"}`)
	if status != 200 || m["eab_hmac_key"] == nil || m["eab_hmac_key"] == mac || m["previous_secrets_valid_until"] == nil {
		t.Fatalf("rotate: %d %s", status, raw)
	}
	secrets = append(secrets, m["eab_hmac_key"].(string))
	if status, _, _ := call(http.MethodPost, "/certlocker/tokens/"+id+"/actions/fly", ""); status != 404 {
		t.Fatalf("unknown action: %d", status)
	}
	if status, m, raw := call(http.MethodPost, "/certlocker/tokens/"+id+"/actions/revoke", ""); status != 200 || m["state"] != "revoked" {
		t.Fatalf("revoke: %d %s", status, raw)
	}
	if status, _, _ := call(http.MethodPost, "/certlocker/tokens/"+id+"/actions/revoke", ""); status != 400 {
		t.Fatalf("revoke again: %d", status)
	}
	if status, _, raw := call(http.MethodGet, "/certlocker/tokens?state=revoked", ""); status != 200 || !strings.Contains(raw, id) {
		t.Fatalf("revoked list: %d %s", status, raw)
	}
	entries, _, err := app.AuditLog(ctx, storage.AuditFilter{Target: id}, storage.Page{})
	if err != nil || len(entries) != 4 {
		t.Fatalf("audit: %v, %d entries", err, len(entries))
	}
	for _, e := range entries {
		for _, s := range secrets {
			if strings.Contains(string(e.Details), s) {
				t.Fatalf("audit %s carries a secret", e.Action)
			}
		}
		if !strings.HasPrefix(e.Actor, "admin-api@") {
			t.Fatalf("audit actor %q", e.Actor)
		}
	}
	if status, _, _ := call(http.MethodDelete, "/certlocker/tokens/"+id, ""); status != 204 {
		t.Fatalf("delete: %d", status)
	}
	if status, _, _ := call(http.MethodGet, "/certlocker/tokens/"+id, ""); status != 404 {
		t.Fatalf("get deleted: %d", status)
	}
	if status, _, _ := call(http.MethodDelete, "/certlocker/tokens/"+id, ""); status != 404 {
		t.Fatalf("delete again: %d", status)
	}
}
