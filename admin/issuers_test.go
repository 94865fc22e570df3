package admin

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

type response struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

func call(t *testing.T, api *API, method, path, body string) response {
	t.Helper()
	rec := serve(t, api, method, path, body)
	r := response{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
	_ = json.Unmarshal(rec.Body.Bytes(), &r.json)
	return r
}

// pebbleRootPEM is the certificate of Pebble's TLS endpoint: to the app, a
// private root given as custom roots.
func pebbleRootPEM(t *testing.T, p *acmetest.Pebble) string { return string(p.WFECertPEM()) }

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestIssuersAPI(t *testing.T) {
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true})
	roots := pebbleRootPEM(t, p)
	dir := t.TempDir()
	rootsFile := filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(rootsFile, []byte(roots), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgMAC := p.NewExternalAccountKey("cfg-kid")
	t.Setenv("TEST_EAB_MAC", cfgMAC)
	t.Setenv(certlocker.EnvEncryptionKey, "")
	api, app := testAPI(t, mustJSON(map[string]any{
		"storage": map[string]any{"path": filepath.Join(dir, "c.db")},
		"node_id": "n1",
		"issuers": []map[string]any{{
			"name": "declared", "directory_url": p.DirectoryURL(), "contacts": []string{"cfg@example.com"},
			"eab": map[string]string{"key_id": "cfg-kid", "mac_key": "{env.TEST_EAB_MAC}"}, "agree_terms": true,
			"trusted_roots_pem_files": []string{rootsFile},
		}},
	}))
	reg := app.IssuerRegistry()
	cfgIssuers, err := reg.List(t.Context(), storage.IssuerFilter{ManagedBy: storage.ManagedByConfig})
	if err != nil || len(cfgIssuers) != 1 || cfgIssuers[0].Name != "declared" {
		t.Fatalf("config-declared issuer: %v %v", cfgIssuers, err)
	}
	declared := cfgIssuers[0]

	t.Run("catalog", func(t *testing.T) {
		r := call(t, api, http.MethodGet, "/certlocker/catalog", "")
		if items, _ := r.json["items"].([]any); r.status != 200 || len(items) < 16 {
			t.Fatalf("catalog: %d, %d items", r.status, len(items))
		}
		if r := call(t, api, http.MethodGet, "/certlocker/catalog/harica", ""); r.status != 200 || r.json["directory_url"] != "https://acme.harica.gr/{account}/directory" {
			t.Fatalf("harica: %d %s", r.status, r.body)
		}
		if r := call(t, api, http.MethodGet, "/certlocker/catalog/nope", ""); r.status != 404 {
			t.Fatalf("unknown entry: %d", r.status)
		}
	})

	mac := p.NewExternalAccountKey("api-kid")
	create := map[string]any{"name": "pebble", "directory_url": p.DirectoryURL(), "contacts": []string{"ops@example.com"},
		"eab_key_id": "api-kid", "eab_mac_key": mac, "custom_roots_pem": roots, "agree_terms": true, "group": "web"}
	var id string
	t.Run("create", func(t *testing.T) {
		r := call(t, api, http.MethodPost, "/certlocker/issuers", mustJSON(create))
		if r.status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		id, _ = r.json["id"].(string)
		if r.header.Get("Location") != "/certlocker/issuers/"+id || r.json["status"] != "valid" || r.json["eab_mac_key_set"] != true ||
			r.json["managed_by"] != "api" || r.json["terms_agreed"] == nil {
			t.Fatalf("created issuer: %s", r.body)
		}
		if strings.Contains(r.body, mac) || strings.Contains(r.body, "PRIVATE KEY") {
			t.Fatal("the response holds a secret")
		}
	})

	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "https://" + closed.Addr().String() + "/directory"
	closed.Close()
	with := func(k string, v any) string {
		m := map[string]any{}
		for kk, vv := range create {
			m[kk] = vv
		}
		m["name"] = "other"
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return mustJSON(m)
	}
	t.Run("refusals", func(t *testing.T) {
		_, auditsBefore, _ := app.AuditLog(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
		cases := map[string]struct {
			body, field string
			status      int
			problem     bool
		}{
			"invalid url":     {with("directory_url", "ftp://x/dir"), "directory_url", 400, false},
			"unreachable":     {with("directory_url", deadURL), "directory_url", 422, false},
			"wrong eab mac":   {with("eab_mac_key", "d3JvbmctbWFjLWtleS13cm9uZy1tYWMta2V5"), "", 422, true},
			"duplicate name":  {strings.Replace(with("group", "x"), `"other"`, `"pebble"`, 1), "name", 409, false},
			"unknown catalog": {with("catalog_id", "acme-corp"), "catalog_id", 400, false},
			"eab missing":     {with("eab_key_id", nil), "eab_key_id", 400, false},
			"unknown field":   {`{"name":"x","colour":"blue"}`, "colour", 400, false},
			"terms":           {with("agree_terms", false), "agree_terms", 400, false},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				r := call(t, api, http.MethodPost, "/certlocker/issuers", c.body)
				if r.status != c.status || r.json["field"] != nil && r.json["field"] != c.field || (c.field != "" && r.json["field"] != c.field) {
					t.Fatalf("%d %s, want %d field %q", r.status, r.body, c.status, c.field)
				}
				if msg, _ := r.json["error"].(string); msg == "" {
					t.Fatalf("no error message: %s", r.body)
				}
				if c.problem {
					prob, _ := r.json["problem"].(map[string]any)
					if typ, _ := prob["type"].(string); !strings.HasPrefix(typ, "urn:ietf:params:acme:error:") {
						t.Fatalf("the CA's problem is missing: %s", r.body)
					}
				}
				if strings.Contains(r.body, mac) {
					t.Fatal("the response holds the MAC key")
				}
			})
		}
		list, _ := reg.List(t.Context(), storage.IssuerFilter{})
		_, auditsAfter, _ := app.AuditLog(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
		if len(list) != 2 || len(auditsAfter) != len(auditsBefore) {
			t.Fatalf("refusals left %d issuers, audit %d -> %d", len(list), len(auditsBefore), len(auditsAfter))
		}
	})

	t.Run("read", func(t *testing.T) {
		r := call(t, api, http.MethodGet, "/certlocker/issuers", "")
		if items, _ := r.json["items"].([]any); r.status != 200 || len(items) != 2 {
			t.Fatalf("list: %s", r.body)
		}
		if r := call(t, api, http.MethodGet, "/certlocker/issuers?managed_by=config", ""); len(r.json["items"].([]any)) != 1 {
			t.Fatalf("filtered list: %s", r.body)
		}
		if r := call(t, api, http.MethodGet, "/certlocker/issuers?managed_by=someone", ""); r.status != 400 {
			t.Fatalf("bad filter: %d", r.status)
		}
		if r := call(t, api, http.MethodGet, "/certlocker/issuers/"+id, ""); r.status != 200 || r.json["name"] != "pebble" {
			t.Fatalf("get: %s", r.body)
		}
		if r := call(t, api, http.MethodGet, "/certlocker/issuers/iss_missing", ""); r.status != 404 {
			t.Fatalf("get missing: %d", r.status)
		}
	})

	t.Run("patch", func(t *testing.T) {
		r := call(t, api, http.MethodPatch, "/certlocker/issuers/"+id, `{"contacts":["pki@example.com"],"group":"edge"}`)
		if r.status != 200 || r.json["group"] != "edge" || !strings.Contains(r.body, "mailto:pki@example.com") {
			t.Fatalf("patch: %s", r.body)
		}
		if r := call(t, api, http.MethodPatch, "/certlocker/issuers/"+id, `{"directory_url":"https://x/"}`); r.status != 400 || r.json["field"] != "directory_url" {
			t.Fatalf("patch directory: %s", r.body)
		}
		if r := call(t, api, http.MethodPatch, "/certlocker/issuers/"+id, `{"group":"a","version":1}`); r.status != 409 {
			t.Fatalf("stale version: %s", r.body)
		}
		if r := call(t, api, http.MethodPatch, "/certlocker/issuers/"+declared.ID, `{"group":"x"}`); r.status != 409 || !strings.Contains(r.body, "config") {
			t.Fatalf("patch of a config issuer: %s", r.body)
		}
	})

	t.Run("actions", func(t *testing.T) {
		r := call(t, api, http.MethodPost, "/certlocker/issuers/"+declared.ID+"/actions/test", "")
		if r.status != 200 || r.json["ok"] != true {
			t.Fatalf("test (registers the declared issuer): %s", r.body)
		}
		if iss, _ := r.json["issuer"].(map[string]any); iss["status"] != "valid" || iss["account_url"] == nil {
			t.Fatalf("declared issuer after test: %s", r.body)
		}
		if r := call(t, api, http.MethodPost, "/certlocker/issuers/"+id+"/actions/test", ""); r.status != 200 || r.json["ok"] != true {
			t.Fatalf("test: %s", r.body)
		}
		r = call(t, api, http.MethodPost, "/certlocker/issuers/"+id+"/actions/refresh", "")
		if meta, _ := r.json["meta"].(map[string]any); r.status != 200 || meta["external_account_required"] != true || meta["ari"] != true {
			t.Fatalf("refresh: %s", r.body)
		}
		r = call(t, api, http.MethodPost, "/certlocker/issuers/"+id+"/actions/rollover", `{"account_key_type":"p384"}`)
		if r.status != 200 || r.json["account_key_type"] != "p384" || r.json["key_rolled_at"] == nil {
			t.Fatalf("rollover: %s", r.body)
		}
		if r := call(t, api, http.MethodPost, "/certlocker/issuers/"+declared.ID+"/actions/deactivate", ""); r.status != 409 {
			t.Fatalf("deactivating a config issuer: %s", r.body)
		}
		if r := call(t, api, http.MethodPost, "/certlocker/issuers/"+id+"/actions/deactivate", ""); r.status != 200 || r.json["status"] != "deactivated" {
			t.Fatalf("deactivate: %s", r.body)
		}
		if r := call(t, api, http.MethodPost, "/certlocker/issuers/"+id+"/actions/rollover", ""); r.status != 409 {
			t.Fatalf("rollover of a deactivated issuer: %s", r.body)
		}
		if r := call(t, api, http.MethodPost, "/certlocker/issuers/"+id+"/actions/explode", ""); r.status != 404 {
			t.Fatalf("unknown action: %d", r.status)
		}
		if r := call(t, api, http.MethodGet, "/certlocker/issuers/"+id+"/actions/test", ""); r.status != 405 {
			t.Fatalf("GET on an action: %d", r.status)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if r := call(t, api, http.MethodDelete, "/certlocker/issuers/"+declared.ID, ""); r.status != 409 {
			t.Fatalf("delete of a config issuer: %s", r.body)
		}
		if r := call(t, api, http.MethodDelete, "/certlocker/issuers/"+id, ""); r.status != 204 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		if r := call(t, api, http.MethodGet, "/certlocker/issuers/"+id, ""); r.status != 404 {
			t.Fatalf("after delete: %d", r.status)
		}
	})

	t.Run("audit", func(t *testing.T) {
		want := []string{"issuer.create", "issuer.update", "issuer.register", "issuer.test", "issuer.refresh", "issuer.rollover", "issuer.deactivate", "issuer.delete"}
		for _, action := range want {
			entries, _, err := app.AuditLog(t.Context(), storage.AuditFilter{Action: action}, storage.Page{})
			if err != nil || len(entries) == 0 {
				t.Errorf("no %s audit entry (%v)", action, err)
			}
			for _, e := range entries {
				if strings.Contains(string(e.Details), mac) || strings.Contains(string(e.Details), cfgMAC) {
					t.Errorf("%s audit details hold a MAC key", action)
				}
			}
		}
	})
}

func TestIssuerConfigMACMustBePlaceholder(t *testing.T) {
	t.Setenv(certlocker.EnvEncryptionKey, "")
	dir := t.TempDir()
	raw := mustJSON(map[string]any{
		"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
		"issuers": []map[string]any{{"name": "x", "catalog": "google", "eab": map[string]string{"key_id": "k", "mac_key": "bGl0ZXJhbC1zZWNyZXQ"}}},
	})
	_, err := caddy.ProvisionContext(&caddy.Config{AppsRaw: caddy.ModuleMap{"certlocker": json.RawMessage(raw)}})
	if err == nil {
		ctx, _ := caddy.ProvisionContext(&caddy.Config{AppsRaw: caddy.ModuleMap{"certlocker": json.RawMessage(raw)}})
		_, err = ctx.App("certlocker")
	}
	if err == nil || !strings.Contains(err.Error(), "must be a placeholder") || strings.Contains(err.Error(), "bGl0ZXJhbC1zZWNyZXQ") {
		t.Fatalf("literal MAC key in config: %v", err)
	}
}
