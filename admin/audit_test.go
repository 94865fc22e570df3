package admin

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

// auditCase is one successful request on a mutating route and the audit
// entry it must write.
type auditCase struct {
	method, pattern string
	path            func() string // the request path (IDs of records made by earlier cases)
	body            func() string
	action          string // the entry's action, or its prefix ending in "."
	group           string // the entry's group
	target          func() string
	after           func(m map[string]any) // reads the response (IDs)
}

// TestEveryMutatingRouteIsAudited walks the admin API's route table: every
// mutating method of every route must have a case below whose successful
// request writes an audit entry with the actor, the group of what it
// changed, the client's address as source and result ok; and every
// refused request on any mutating route is audited as refused with the
// same fields. A new route without audit (or without a case here) fails.
func TestEveryMutatingRouteIsAudited(t *testing.T) {
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true})
	dir := t.TempDir()
	rootsFile := filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(rootsFile, p.WFECertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "https://" + closed.Addr().String() + "/directory" // orders there wait to retry
	closed.Close()
	zoneAddr := acmetest.FreeDNSAddr(t)
	t.Setenv(certlocker.EnvEncryptionKey, "")
	api, app := testAPI(t, mustJSON(map[string]any{
		"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
		"issuers": []any{
			map[string]any{"name": "pebble", "directory_url": p.DirectoryURL(), "agree_terms": true, "group": "ops",
				"trusted_roots_pem_files": []string{rootsFile}},
			map[string]any{"name": "dead", "directory_url": deadURL, "agree_terms": true, "group": "ops"},
		},
		"challenge_zones": []any{map[string]any{"zone": "acme.example.net", "listen": []string{zoneAddr}, "ns": []string{"ns1.acme.example.net"}}},
	}))
	ids := map[string]string{}
	for _, it := range call(t, api, http.MethodGet, "/certlocker/issuers", "").json["items"].([]any) {
		m := it.(map[string]any)
		ids[m["name"].(string)] = m["id"].(string)
	}
	fx := newCertFixture(t, []string{"cert.ops.test"}, time.Now().Add(40*24*time.Hour))
	id := func(k string) func() string { return func() string { return ids[k] } }
	fixed := func(s string) func() string { return func() string { return s } }
	keep := func(k string) func(map[string]any) {
		return func(m map[string]any) {
			if v, _ := m["id"].(string); v != "" {
				ids[k] = v
			} else if c, ok := m["certificate"].(map[string]any); ok {
				ids[k], _ = c["id"].(string)
			}
		}
	}
	none := fixed("")
	cases := []auditCase{
		{method: "POST", pattern: "/certlocker/issuers", path: fixed("/certlocker/issuers"),
			body: fixed(mustJSON(map[string]any{"name": "api-ca", "directory_url": p.DirectoryURL(), "agree_terms": true,
				"group": "ops", "custom_roots_pem": string(p.WFECertPEM())})),
			action: "issuer.create", group: "ops", target: id("api-ca"), after: keep("api-ca")},
		{method: "PATCH", pattern: "/certlocker/issuers/{id}", path: func() string { return "/certlocker/issuers/" + ids["api-ca"] },
			body: fixed(`{"contacts":["mailto:ops@example.com"]}`), action: "issuer.", group: "ops", target: id("api-ca")},
		{method: "POST", pattern: "/certlocker/issuers/{id}/actions/{action}",
			path: func() string { return "/certlocker/issuers/" + ids["api-ca"] + "/actions/refresh" },
			body: none, action: "issuer.", group: "ops", target: id("api-ca")},
		{method: "POST", pattern: "/certlocker/dns-providers", path: fixed("/certlocker/dns-providers"),
			body:   fixed(`{"name":"dns-ops","type":"delegated","zones":["acme.example.net"],"nameservers":["` + zoneAddr + `"],"group":"ops"}`),
			action: "dns_provider.create", group: "ops", target: id("dns"), after: keep("dns")},
		{method: "PATCH", pattern: "/certlocker/dns-providers/{id}", path: func() string { return "/certlocker/dns-providers/" + ids["dns"] },
			body: fixed(`{"name":"dns-ops-2"}`), action: "dns_provider.update", group: "ops", target: id("dns")},
		{method: "POST", pattern: "/certlocker/dns-providers/{id}/actions/verify",
			path: func() string { return "/certlocker/dns-providers/" + ids["dns"] + "/actions/verify" },
			body: none, action: "dns_provider.verify", group: "ops", target: id("dns")},
		{method: "POST", pattern: "/certlocker/dns-providers/actions/cleanup", path: fixed("/certlocker/dns-providers/actions/cleanup"),
			body: none, action: "dns_provider.cleanup", target: none},
		{method: "POST", pattern: "/certlocker/acme-dns/registrations", path: fixed("/certlocker/acme-dns/registrations"),
			body: fixed(`{"zone":"acme.example.net"}`), action: "acme_dns.register", target: func() string { return ids["acme-dns"] },
			after: func(m map[string]any) { ids["acme-dns"], _ = m["username"].(string) }},
		{method: "POST", pattern: "/certlocker/certificates", path: fixed("/certlocker/certificates"),
			body:   fixed(mustJSON(map[string]any{"pem": fx.chain, "key_pem": fx.key, "group": "ops"})),
			action: "certificate.import", group: "ops", target: id("cert"), after: keep("cert")},
		{method: "POST", pattern: "/certlocker/certificates/{id}/pkcs12", path: func() string { return "/certlocker/certificates/" + ids["cert"] + "/pkcs12" },
			body: fixed(`{"password":"a long export password"}`), action: "certificate.export", group: "ops", target: id("cert")},
		{method: "POST", pattern: "/certlocker/actions/refresh-certificates", path: fixed("/certlocker/actions/refresh-certificates"),
			body: none, action: "certificate.refresh", target: none},
		{method: "POST", pattern: "/certlocker/tokens", path: fixed("/certlocker/tokens"),
			body: func() string {
				return `{"names":["edge.ops.test"],"issuer_id":"` + ids["pebble"] + `","group":"ops"}`
			}, action: "token.create", group: "ops", target: id("token"), after: keep("token")},
		{method: "PATCH", pattern: "/certlocker/tokens/{id}", path: func() string { return "/certlocker/tokens/" + ids["token"] },
			body: fixed(`{"description":"the ops edge"}`), action: "token.", group: "ops", target: id("token")},
		{method: "POST", pattern: "/certlocker/tokens/{id}/actions/{action}", path: func() string { return "/certlocker/tokens/" + ids["token"] + "/actions/rotate" },
			body: none, action: "token.", group: "ops", target: id("token")},
		{method: "DELETE", pattern: "/certlocker/tokens/{id}", path: func() string { return "/certlocker/tokens/" + ids["token"] },
			body: none, action: "token.delete", group: "ops", target: id("token")},
		{method: "POST", pattern: "/certlocker/workflows", path: fixed("/certlocker/workflows"),
			body: func() string {
				return `{"issuer_id":"` + ids["dead"] + `","group":"ops","identifiers":[{"value":"www.ops.test"}]}`
			}, action: "workflow.create", group: "ops", target: id("wf"), after: keep("wf")},
		{method: "POST", pattern: "/certlocker/workflows/{id}/actions/{action}", path: func() string { return "/certlocker/workflows/" + ids["wf"] + "/actions/cancel" },
			body: none, action: "workflow.", group: "ops", target: id("wf")},
		{method: "POST", pattern: "/certlocker/migrations", path: fixed("/certlocker/migrations"),
			body: func() string {
				return `{"from_issuer_id":"` + ids["dead"] + `","to_issuer_id":"` + ids["pebble"] + `","group":"ops"}`
			}, action: "workflow.migrate", group: "ops", target: id("pebble")},
		{method: "POST", pattern: "/certlocker/actions/rekey", path: fixed("/certlocker/actions/rekey"),
			body: none, action: "storage.rekey", target: fixed("n1")},
		{method: "DELETE", pattern: "/certlocker/certificates/{id}", path: func() string { return "/certlocker/certificates/" + ids["cert"] },
			body: none, action: "certificate.delete", group: "ops", target: id("cert")},
		{method: "DELETE", pattern: "/certlocker/dns-providers/{id}", path: func() string { return "/certlocker/dns-providers/" + ids["dns"] },
			body: none, action: "dns_provider.delete", group: "ops", target: id("dns")},
		{method: "DELETE", pattern: "/certlocker/issuers/{id}", path: func() string { return "/certlocker/issuers/" + ids["api-ca"] },
			body: none, action: "issuer.delete", group: "ops", target: id("api-ca")},
	}

	// the route table and the cases cover each other
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.method+" "+c.pattern] = true
	}
	var mutatingRoutes []string
	for _, r := range api.routes {
		for _, m := range r.Mutating() {
			key := m + " " + r.Pattern
			mutatingRoutes = append(mutatingRoutes, key)
			if !covered[key] {
				t.Errorf("%s changes something but has no audit case here: add one", key)
			}
		}
	}
	for key := range covered {
		if !slices.Contains(mutatingRoutes, key) {
			t.Errorf("case %s names no mutating route", key)
		}
	}
	if len(mutatingRoutes) < 20 {
		t.Fatalf("only %d mutating routes in the table: %v", len(mutatingRoutes), mutatingRoutes)
	}

	newest := ""
	since := func() []*storage.AuditEntry { // the entries after the last call, oldest first
		t.Helper()
		es, _, err := app.AuditLog(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		var out []*storage.AuditEntry
		for _, e := range es {
			if e.ID <= newest {
				break
			}
			out = append([]*storage.AuditEntry{e}, out...)
		}
		if len(out) > 0 {
			newest = out[len(out)-1].ID
		}
		return out
	}
	since()
	for _, c := range cases {
		t.Run("ok/"+c.method+" "+c.pattern, func(t *testing.T) {
			r := call(t, api, c.method, c.path(), c.body())
			if r.status < 200 || r.status > 299 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if c.after != nil {
				c.after(r.json)
			}
			entries := since()
			var found *storage.AuditEntry
			for _, e := range entries {
				if e.Action == c.action || (strings.HasSuffix(c.action, ".") && strings.HasPrefix(e.Action, c.action)) {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("no %s audit entry; the request wrote %d: %v", c.action, len(entries), actions(entries))
			}
			if !strings.HasPrefix(found.Actor, "admin-api@") || found.Source != "192.0.2.1" || found.Result != storage.AuditOK ||
				found.Group != c.group || found.Target != c.target() || found.Node != "n1" {
				t.Fatalf("entry %s: actor %q source %q result %q group %q target %q node %q; want group %q target %q",
					found.Action, found.Actor, found.Source, found.Result, found.Group, found.Target, found.Node, c.group, c.target())
			}
		})
	}

	// refused: every mutating route, with IDs that do not exist and a body
	// that is not JSON, is refused and audited as refused; rekey and the
	// certificate refresh take no input and cannot be refused here (the
	// UI refuses them to non-admins: see TestUIRefusalsAudited)
	noInput := []string{"POST /certlocker/actions/rekey", "POST /certlocker/actions/refresh-certificates"}
	param := regexp.MustCompile(`\{[a-z]+\}`)
	for _, key := range mutatingRoutes {
		if slices.Contains(noInput, key) {
			continue
		}
		method, pattern, _ := strings.Cut(key, " ")
		t.Run("refused/"+key, func(t *testing.T) {
			path := param.ReplaceAllStringFunc(pattern, func(p string) string {
				if p == "{action}" {
					return "frobnicate"
				}
				return "nope_0123"
			})
			if strings.HasSuffix(pattern, "/actions/{action}") {
				// a real record, an unknown action
				switch {
				case strings.Contains(pattern, "issuers"):
					path = strings.Replace(path, "nope_0123", ids["pebble"], 1)
				case strings.Contains(pattern, "workflows"):
					path = strings.Replace(path, "nope_0123", ids["wf"], 1)
				}
			}
			r := call(t, api, method, path, "{not json")
			if r.status < 400 || r.status > 499 {
				t.Fatalf("%d %s, want a refusal", r.status, r.body)
			}
			entries := since()
			var found *storage.AuditEntry
			for _, e := range entries {
				if e.Result == storage.AuditRefused {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("the refusal (%d %s) is not audited: %v", r.status, r.body, actions(entries))
			}
			var d struct {
				Status int    `json:"status"`
				Error  string `json:"error"`
			}
			_ = json.Unmarshal(found.Details, &d)
			if !strings.HasPrefix(found.Actor, "admin-api@") || found.Source != "192.0.2.1" || d.Status != r.status || d.Error == "" ||
				!strings.HasPrefix(found.Action, method+" /") {
				t.Fatalf("refusal entry %+v, details %s", found, found.Details)
			}
		})
	}
}

func actions(es []*storage.AuditEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Action+"("+e.Result+")")
	}
	return out
}
