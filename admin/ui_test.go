package admin

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// uiFixture is a running app with one of each record in groups A and B,
// the UI handler, and the secrets that must never be shown.
type uiFixture struct {
	ui      *UI
	app     *certlocker.App
	ids     map[string]map[string]string // group → kind → ID
	names   map[string][]string          // group → names that identify its records in pages
	secrets []string
	logPath string // every log of the app (uiforms_test.go)
}

func newUIFixture(t *testing.T) *uiFixture {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(certlocker.EnvEncryptionKey, "")
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "https://" + closed.Addr().String() + "/directory" // orders there wait to retry
	closed.Close()
	logPath := filepath.Join(dir, "certlocker.log")
	_, app := testAPILogged(t, mustJSON(map[string]any{
		"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
		"issuers": []any{
			map[string]any{"name": "ca-team-a", "directory_url": deadURL, "agree_terms": true, "group": "A"},
			map[string]any{"name": "ca-team-b", "directory_url": deadURL, "agree_terms": true, "group": "B"},
		},
		"users": []any{
			map[string]any{"id": "root", "role": "admin"},
			map[string]any{"id": "alice", "role": "operator", "groups": []string{"A"}},
			map[string]any{"id": "bob", "role": "operator", "groups": []string{"B"}},
			map[string]any{"id": "vic", "role": "viewer", "groups": []string{"A", "B"}},
		},
	}), logPath)
	f := &uiFixture{app: app, ids: map[string]map[string]string{"A": {}, "B": {}}, names: map[string][]string{}, logPath: logPath}
	ctx := t.Context()
	list, err := app.IssuerRegistry().List(ctx, storage.IssuerFilter{})
	if err != nil || len(list) != 2 {
		t.Fatalf("issuers: %v %v", list, err)
	}
	for _, iss := range list {
		f.ids[iss.Group]["issuer"] = iss.ID
	}
	for _, g := range []string{"A", "B"} {
		lg := strings.ToLower(g)
		token := "cf-secret-token-of-" + lg + "-0123456789abcdef"
		f.secrets = append(f.secrets, token)
		creds, _ := json.Marshal(map[string]string{"api_token": token})
		p, err := app.DNS().Create(ctx, "test", dnsproviders.Config{Name: "dns-team-" + lg, Type: "cloudflare",
			Zones: []string{"team-" + lg + ".test"}, Credentials: creds, Group: g})
		if err != nil {
			t.Fatal(err)
		}
		f.ids[g]["dns"] = p.ID
		wf, err := app.Workflows().Create(ctx, workflow.Request{IssuerID: f.ids[g]["issuer"], Group: g, Trigger: workflow.TriggerManual,
			Identifiers: []storage.Identifier{{Value: "www.team-" + lg + ".test"}}, Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		f.ids[g]["workflow"] = wf.ID
		fx := newCertFixture(t, []string{"cert.team-" + lg + ".test"}, time.Now().Add(20*24*time.Hour))
		f.secrets = append(f.secrets, strings.TrimSpace(strings.Split(fx.key, "\n")[1]))
		c, _, err := app.Certificates().Import(ctx, inventory.ImportRequest{PEM: fx.chain, KeyPEM: fx.key, Group: g}, "test")
		if err != nil {
			t.Fatal(err)
		}
		f.ids[g]["certificate"] = c.ID
		f.names[g] = []string{"ca-team-" + lg, "dns-team-" + lg, "www.team-" + lg + ".test", "cert.team-" + lg + ".test"}
	}
	cctx, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f.ui = new(UI)
	if err := f.ui.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	return f
}

const testCSRF = "test-csrf-token-0123456789abcdefghijklmnop"

// uiRequest is one request to the UI handler.
type uiRequest struct {
	user   string // authenticated user ID ("" for none)
	remote string // client address; default a non-loopback one
	local  string // listener address; default unknown
	csrf   string // the X-CSRF-Token header / form field ("" for none)
	cookie bool   // send the CSRF cookie
	form   bool   // send csrf as a form field instead of the header
	header map[string]string
}

func (f *uiFixture) do(t *testing.T, q uiRequest, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	// a stream the user should not see would otherwise run forever
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	repl := caddy.NewReplacer()
	if q.user != "" {
		repl.Set("http.auth.user.id", q.user)
	}
	ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, repl)
	if q.local != "" {
		addr, _ := net.ResolveTCPAddr("tcp", q.local)
		ctx = context.WithValue(ctx, http.LocalAddrContextKey, net.Addr(addr))
	}
	if q.form {
		v, _ := url.ParseQuery(body)
		if v == nil {
			v = url.Values{}
		}
		v.Set("csrf", q.csrf)
		body = v.Encode()
	}
	req := httptest.NewRequestWithContext(ctx, method, target, strings.NewReader(body))
	req.RemoteAddr = "203.0.113.7:4444"
	if q.remote != "" {
		req.RemoteAddr = q.remote
	}
	switch {
	case q.form:
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	if q.csrf != "" && !q.form {
		req.Header.Set(csrfHeader, q.csrf)
	}
	if q.cookie {
		req.AddCookie(&http.Cookie{Name: csrfCookie, Value: testCSRF})
	}
	for k, v := range q.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	if err := f.ui.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	return rec
}

// as is a signed-in request with a valid CSRF token.
func as(user string) uiRequest { return uiRequest{user: user, csrf: testCSRF, cookie: true} }

// mutations are every change the UI offers, pages and JSON API, on the
// records of group g.
func (f *uiFixture) mutations(g string) []struct{ method, path, body string } {
	id := f.ids[g]
	return []struct{ method, path, body string }{
		{"POST", "/api/workflows", `{"issuer_id":"` + id["issuer"] + `","group":"` + g + `","identifiers":[{"value":"new.example.test"}]}`},
		{"POST", "/api/workflows/" + id["workflow"] + "/actions/cancel", ""},
		{"POST", "/api/workflows/" + id["workflow"] + "/actions/retry", ""},
		{"PATCH", "/api/issuers/" + id["issuer"], `{"name":"renamed"}`},
		{"DELETE", "/api/issuers/" + id["issuer"], ""},
		{"POST", "/api/issuers/" + id["issuer"] + "/actions/refresh", ""},
		{"PATCH", "/api/dns-providers/" + id["dns"], `{"name":"renamed"}`},
		{"DELETE", "/api/dns-providers/" + id["dns"], ""},
		{"POST", "/api/dns-providers/" + id["dns"] + "/actions/verify", ""},
		{"DELETE", "/api/certificates/" + id["certificate"], ""},
		{"POST", "/workflows/" + id["workflow"] + "/cancel", ""},
		{"POST", "/issuers/" + id["issuer"] + "/refresh", ""},
		{"POST", "/dns-providers/" + id["dns"] + "/verify", ""},
	}
}

// auditBy returns the audit entries of changes (every mutation writes
// one) made by the UI user or naming one of the targets.
func (f *uiFixture) auditBy(t *testing.T, user string, targets ...string) []*storage.AuditEntry {
	t.Helper()
	es, _, err := f.app.AuditLog(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	var out []*storage.AuditEntry
	for _, e := range es {
		if e.Result != storage.AuditOK {
			continue // a refusal, audited too, changed nothing
		}
		if strings.HasPrefix(e.Actor, "ui:"+user+"@") || (strings.HasPrefix(e.Actor, "ui:") && slices.Contains(targets, e.Target)) {
			out = append(out, e)
		}
	}
	return out
}

func TestUIViewerCannotMutate(t *testing.T) {
	f := newUIFixture(t)
	for _, g := range []string{"A", "B"} {
		for _, m := range f.mutations(g) {
			for _, form := range []bool{false, true} {
				q := as("vic")
				q.form = form && !strings.HasPrefix(m.path, "/api/")
				rec := f.do(t, q, m.method, m.path, m.body)
				if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "viewers cannot change anything") {
					t.Errorf("viewer %s %s: %d %s", m.method, m.path, rec.Code, rec.Body)
				}
			}
		}
	}
	if es := f.auditBy(t, "vic"); len(es) > 0 {
		t.Fatalf("the viewer's requests changed something: %+v", es[0])
	}
	// the viewer still sees both groups
	for _, p := range []string{"/workflows", "/inventory", "/issuers", "/dns-providers"} {
		rec := f.do(t, as("vic"), "GET", p, "")
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "team-a") || !strings.Contains(rec.Body.String(), "team-b") {
			t.Errorf("viewer GET %s: %d, want both groups", p, rec.Code)
		}
		if strings.Contains(rec.Body.String(), `action="/workflows/`+f.ids["A"]["workflow"]+`/cancel"`) {
			t.Errorf("the viewer's page %s offers a mutation", p)
		}
	}
}

func TestUIGroupScope(t *testing.T) {
	f := newUIFixture(t)
	a, b := f.ids["A"], f.ids["B"]
	t.Run("lists show only the group", func(t *testing.T) {
		for _, p := range []string{"/workflows", "/inventory", "/issuers", "/dns-providers", "/workflows/new",
			"/api/workflows", "/api/issuers", "/api/dns-providers", "/api/certificates", "/api/certificates/expiry",
			"/api/workflows?group=B", "/api/issuers?group=B", "/api/dns-providers?group=B", "/api/certificates?group=B",
			"/workflows?group=B", "/inventory?group=B"} {
			rec := f.do(t, as("alice"), "GET", p, "")
			body := rec.Body.String()
			if rec.Code != 200 {
				t.Errorf("GET %s: %d %s", p, rec.Code, body)
				continue
			}
			for _, leak := range append(f.names["B"], b["issuer"], b["dns"], b["workflow"], b["certificate"]) {
				if strings.Contains(body, leak) {
					t.Errorf("GET %s shows group B's %q", p, leak)
				}
			}
			if !strings.Contains(p, "group=B") && !strings.Contains(p, "expiry") && !strings.Contains(body, "team-a") {
				t.Errorf("GET %s does not show group A's records", p)
			}
		}
		// the expiry counts are group A's one certificate
		rec := f.do(t, as("alice"), "GET", "/api/certificates/expiry", "")
		var rep inventory.ExpiryReport
		_ = json.Unmarshal(rec.Body.Bytes(), &rep)
		if rep.Totals.Total != 1 {
			t.Errorf("alice's expiry totals: %+v", rep.Totals)
		}
	})
	t.Run("group B's records are not found", func(t *testing.T) {
		for _, p := range []string{"/api/workflows/" + b["workflow"], "/api/workflows/" + b["workflow"] + "/events",
			"/api/issuers/" + b["issuer"], "/api/dns-providers/" + b["dns"], "/api/dns-providers/dns-team-b",
			"/api/dns-providers/" + b["dns"] + "/records", "/api/certificates/" + b["certificate"],
			"/api/certificates/" + b["certificate"] + "/pem", "/workflows/" + b["workflow"], "/inventory?cert=" + b["certificate"]} {
			if rec := f.do(t, as("alice"), "GET", p, ""); rec.Code != http.StatusNotFound {
				t.Errorf("GET %s: %d %s, want 404", p, rec.Code, rec.Body)
			}
		}
	})
	t.Run("group B's records cannot be touched", func(t *testing.T) {
		for _, m := range f.mutations("B") {
			rec := f.do(t, as("alice"), m.method, m.path, m.body)
			want := http.StatusNotFound
			if m.path == "/api/workflows" {
				want = http.StatusBadRequest // the group is not hers
			}
			if rec.Code != want {
				t.Errorf("%s %s: %d %s, want %d", m.method, m.path, rec.Code, rec.Body, want)
			}
		}
		// an order on her own group's ACME client cannot land in group B
		rec := f.do(t, as("alice"), "POST", "/api/workflows", `{"issuer_id":"`+a["issuer"]+`","group":"B","identifiers":[{"value":"x.team-a.test"}]}`)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"field": "group"`) {
			t.Errorf("order into group B: %d %s", rec.Code, rec.Body)
		}
		if rec := f.do(t, as("alice"), "PATCH", "/api/dns-providers/"+a["dns"], `{"group":"B"}`); rec.Code != 400 {
			t.Errorf("moving a provider to group B: %d %s", rec.Code, rec.Body)
		}
		if rec := f.do(t, as("alice"), "PATCH", "/api/issuers/"+a["issuer"], `{"group":"B"}`); rec.Code != 409 && rec.Code != 400 {
			t.Errorf("moving an issuer to group B: %d %s", rec.Code, rec.Body)
		}
		if es := f.auditBy(t, "alice", b["issuer"], b["dns"], b["workflow"], b["certificate"]); len(es) > 0 {
			t.Fatalf("alice changed group B: %+v", es[0])
		}
		// admin-only API areas
		for _, p := range []string{"/api/actions/rekey", "/api/migrations", "/api/dns-providers/actions/cleanup"} {
			if rec := f.do(t, as("alice"), "POST", p, "{}"); rec.Code != http.StatusForbidden {
				t.Errorf("POST %s: %d, want 403", p, rec.Code)
			}
		}
		// the audit log she reads is her group's and her own (her refused
		// attempts on group B's records included)
		rec = f.do(t, as("alice"), "GET", "/api/audit?limit=500", "")
		var log struct {
			Items []auditEntry `json:"items"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &log); rec.Code != 200 || err != nil || len(log.Items) == 0 {
			t.Fatalf("GET /api/audit as an operator: %d %s", rec.Code, rec.Body)
		}
		for _, e := range log.Items {
			if e.Group != "A" && !strings.HasPrefix(e.Actor, "ui:alice@") {
				t.Errorf("alice reads an entry of group %q by %s: %s %s", e.Group, e.Actor, e.Action, e.Target)
			}
		}
		if rec := f.do(t, as("alice"), "GET", "/audit", ""); rec.Code != 200 {
			t.Errorf("GET /audit as an operator: %d", rec.Code)
		}
	})
	t.Run("her own group's records she can act on", func(t *testing.T) {
		rec := f.do(t, as("alice"), "POST", "/api/workflows/"+a["workflow"]+"/actions/cancel", "")
		if rec.Code != 200 {
			t.Fatalf("cancel A's workflow: %d %s", rec.Code, rec.Body)
		}
		es, _, _ := f.app.AuditLog(t.Context(), storage.AuditFilter{Target: a["workflow"], Action: "workflow.cancelled"}, storage.Page{})
		if len(es) != 1 || es[0].Actor != "ui:alice@203.0.113.7" {
			t.Fatalf("audit of the cancel: %+v", es)
		}
		rec = f.do(t, as("alice"), "POST", "/api/workflows", `{"issuer_id":"`+a["issuer"]+`","group":"A","identifiers":[{"value":"y.team-a.test"}]}`)
		if rec.Code != 201 {
			t.Fatalf("order in group A: %d %s", rec.Code, rec.Body)
		}
		// the form posts the same order and lands on its page
		q := as("alice")
		q.form = true
		rec = f.do(t, q, "POST", "/workflows", url.Values{"issuer_id": {a["issuer"]}, "group": {"A"},
			"identifiers": {"z.team-a.test http-01"}}.Encode())
		if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/workflows/wf_") {
			t.Fatalf("new order form: %d %s %s", rec.Code, rec.Header(), rec.Body)
		}
	})
	t.Run("admins see every group", func(t *testing.T) {
		rec := f.do(t, as("root"), "GET", "/workflows", "")
		if !strings.Contains(rec.Body.String(), "www.team-a.test") || !strings.Contains(rec.Body.String(), "www.team-b.test") {
			t.Fatalf("admin's workflows page: %d %s", rec.Code, rec.Body)
		}
	})
}

func TestUICSRF(t *testing.T) {
	f := newUIFixture(t)
	wf := f.ids["A"]["workflow"]
	path := "/api/workflows/" + wf + "/actions/cancel"
	cases := map[string]uiRequest{
		"no token, no cookie":  {user: "alice"},
		"cookie, no token":     {user: "alice", cookie: true},
		"token, no cookie":     {user: "alice", csrf: testCSRF},
		"wrong token":          {user: "alice", cookie: true, csrf: strings.ToUpper(testCSRF)},
		"cross-site request":   {user: "alice", cookie: true, csrf: testCSRF, header: map[string]string{"Sec-Fetch-Site": "cross-site"}},
		"other origin":         {user: "alice", cookie: true, csrf: testCSRF, header: map[string]string{"Origin": "https://evil.example"}},
		"form, wrong token":    {user: "alice", cookie: true, csrf: "nope", form: true},
		"local, no token":      {remote: "127.0.0.1:5555"},
		"local, wrong token":   {remote: "127.0.0.1:5555", cookie: true, csrf: "nope"},
		"viewer, right token":  {user: "vic", cookie: true, csrf: testCSRF},
		"unknown user":         {user: "mallory", cookie: true, csrf: testCSRF},
		"no auth, not on host": {cookie: true, csrf: testCSRF},
	}
	for name, q := range cases {
		t.Run(name, func(t *testing.T) {
			p := path
			if q.form {
				p = "/workflows/" + wf + "/cancel"
			}
			if rec := f.do(t, q, "POST", p, ""); rec.Code != http.StatusForbidden {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
		})
	}
	if got, _ := f.app.Workflows().Get(t.Context(), wf); got.State == storage.StateCancelled {
		t.Fatal("a refused request cancelled the workflow")
	}
	// a GET hands out the cookie: Secure, HttpOnly, SameSite=Strict, and
	// the page carries the same token for its forms
	rec := f.do(t, uiRequest{user: "alice"}, "GET", "/workflows/"+wf, "")
	res := rec.Result()
	var ck *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == csrfCookie {
			ck = c
		}
	}
	if ck == nil || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
		t.Fatalf("CSRF cookie: %+v", ck)
	}
	if !strings.Contains(rec.Body.String(), `name="csrf" value="`+ck.Value+`"`) {
		t.Fatal("the page's forms do not carry the token")
	}
	csp := rec.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(rec.Body.String(), "<script>") {
		t.Fatalf("CSP %q / inline script", csp)
	}
	// with the token (header or form), the same request works
	q := as("alice")
	q.form = true
	rec = f.do(t, q, "POST", "/workflows/"+wf+"/cancel", "")
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("cancel with the token: %d %s", rec.Code, rec.Body)
	}
	if got, _ := f.app.Workflows().Get(t.Context(), wf); got.State != storage.StateCancelled {
		t.Fatalf("the workflow is %s", got.State)
	}
}

func TestUIAuthentication(t *testing.T) {
	f := newUIFixture(t)
	cases := map[string]struct {
		q      uiRequest
		status int
		want   string
	}{
		"loopback without auth is the local admin": {uiRequest{remote: "127.0.0.1:5555", local: "127.0.0.1:2080"}, 200, "No authentication is in front of this UI"},
		"IPv6 loopback":                           {uiRequest{remote: "[::1]:5555", local: "[::1]:2080"}, 200, "No authentication is in front"},
		"remote client without auth":              {uiRequest{remote: "198.51.100.4:5555", local: "127.0.0.1:2080"}, 403, "only clients on this machine"},
		"public listener without auth":            {uiRequest{remote: "127.0.0.1:5555", local: "192.0.2.10:443"}, 403, "non-loopback address without authentication"},
		"authenticated user without a role":       {uiRequest{user: "mallory"}, 403, "has no CertLocker role"},
		"authenticated operator":                  {uiRequest{user: "alice", local: "192.0.2.10:443"}, 200, "Signed in as <strong id=\"user\">alice</strong>"},
		"forward-auth header is not trusted here": {uiRequest{header: map[string]string{"Remote-User": "root"}, local: "192.0.2.10:443"}, 403, "without authentication"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rec := f.do(t, c.q, "GET", "/workflows", "")
			if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.want) {
				t.Fatalf("%d, want %d with %q:\n%s", rec.Code, c.status, c.want, rec.Body)
			}
			if c.status == 200 && c.q.user != "" && strings.Contains(rec.Body.String(), "No authentication") {
				t.Fatal("banner shown to an authenticated user")
			}
		})
	}
	// a trusted proxy's header names the user; from anywhere else it is ignored
	cctx, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f.ui = &UI{IdentityHeader: "Remote-User", TrustedProxies: []string{"10.0.0.0/8"}}
	if err := f.ui.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	if err := f.ui.Validate(); err != nil {
		t.Fatal(err)
	}
	rec := f.do(t, uiRequest{remote: "10.1.2.3:999", local: "192.0.2.10:443", header: map[string]string{"Remote-User": "alice"}}, "GET", "/workflows", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), ">alice<") {
		t.Fatalf("trusted proxy: %d %s", rec.Code, rec.Body)
	}
	rec = f.do(t, uiRequest{remote: "198.51.100.4:999", local: "192.0.2.10:443", header: map[string]string{"Remote-User": "root"}}, "GET", "/workflows", "")
	if rec.Code != 403 {
		t.Fatalf("header from an untrusted client: %d", rec.Code)
	}
}

// TestUINoSecrets: no DNS credential or private key appears in any page or
// JSON answer, for any role.
func TestUINoSecrets(t *testing.T) {
	f := newUIFixture(t)
	var paths []string
	for _, g := range []string{"A", "B"} {
		id := f.ids[g]
		paths = append(paths, "/workflows/"+id["workflow"], "/inventory?cert="+id["certificate"], "/api/workflows/"+id["workflow"],
			"/api/issuers/"+id["issuer"], "/api/dns-providers/"+id["dns"], "/api/certificates/"+id["certificate"],
			"/api/certificates/"+id["certificate"]+"/pem?format=chain")
	}
	paths = append(paths, "/workflows", "/workflows/new", "/inventory", "/issuers", "/dns-providers", "/audit",
		"/api/workflows", "/api/issuers", "/api/dns-providers", "/api/certificates", "/api/audit")
	for _, user := range []string{"root", "alice", "vic"} {
		for _, p := range paths {
			rec := f.do(t, as(user), "GET", p, "")
			for _, s := range f.secrets {
				if strings.Contains(rec.Body.String(), s) {
					t.Errorf("%s GET %s shows a secret", user, p)
				}
			}
		}
	}
	// a private key leaves only through an explicit export, which the
	// default policy allows to admins only
	rec := f.do(t, as("alice"), "GET", "/api/certificates/"+f.ids["A"]["certificate"]+"/pem?format=bundle", "")
	if rec.Code != http.StatusForbidden {
		t.Fatalf("operator key export: %d %s", rec.Code, rec.Body)
	}
}
