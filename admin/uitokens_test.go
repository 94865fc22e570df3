package admin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// tokenFixture is the UI fixture with one token per group, made from the
// group's certificate, whose secrets join the ones never to be shown.
func newTokenFixture(t *testing.T) *uiFixture {
	t.Helper()
	f := newUIFixture(t)
	for _, g := range []string{"A", "B"} {
		tok, creds, err := f.app.Tokens().Create(t.Context(), "test", gateway.CreateRequest{CertificateID: f.ids[g]["certificate"],
			IssuerID: f.ids[g]["issuer"], Name: "edge-team-" + strings.ToLower(g)})
		if err != nil {
			t.Fatal(err)
		}
		f.ids[g]["token"] = tok.ID
		f.names[g] = append(f.names[g], "edge-team-"+strings.ToLower(g))
		f.secrets = append(f.secrets, creds.EABHMACKey, urlSecretOf(t, creds.DirectoryPath))
	}
	return f
}

// urlSecretOf is the secret in a per-token directory path.
func urlSecretOf(t *testing.T, dirPath string) string {
	t.Helper()
	s := strings.TrimSuffix(strings.TrimPrefix(dirPath, gateway.TokenPathPrefix), "/directory")
	if len(s) < 20 || strings.Contains(s, "/") {
		t.Fatalf("directory path %q has no URL secret", dirPath)
	}
	return s
}

// tokenMutations are the token changes the UI offers, pages and JSON API,
// on group g's token.
func (f *uiFixture) tokenMutations(g string) []struct{ method, path, body string } {
	id := f.ids[g]
	return []struct{ method, path, body string }{
		{"POST", "/tokens", url.Values{"certificate_id": {id["certificate"]}, "issuer_id": {id["issuer"]}}.Encode()},
		{"POST", "/tokens/" + id["token"] + "/rotate", ""},
		{"POST", "/tokens/" + id["token"] + "/revoke", ""},
		{"POST", "/api/tokens", `{"certificate_id":"` + id["certificate"] + `","issuer_id":"` + id["issuer"] + `"}`},
		{"POST", "/api/tokens/" + id["token"] + "/actions/rotate", ""},
		{"POST", "/api/tokens/" + id["token"] + "/actions/revoke", ""},
		{"PATCH", "/api/tokens/" + id["token"], `{"description":"changed"}`},
		{"DELETE", "/api/tokens/" + id["token"], ""},
	}
}

func TestUITokensViewerCannotMutate(t *testing.T) {
	f := newTokenFixture(t)
	for _, g := range []string{"A", "B"} {
		for _, m := range f.tokenMutations(g) {
			q := as("vic")
			q.form = !strings.HasPrefix(m.path, "/api/")
			rec := f.do(t, q, m.method, m.path, m.body)
			if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "viewers cannot change anything") {
				t.Errorf("viewer %s %s: %d %s", m.method, m.path, rec.Code, rec.Body)
			}
		}
	}
	if es := f.auditBy(t, "vic"); len(es) > 0 {
		t.Fatalf("the viewer's requests changed something: %+v", es[0])
	}
	// the viewer sees both groups' tokens, and no control that changes one
	for _, p := range []string{"/tokens", "/tokens/" + f.ids["A"]["token"], "/tokens/" + f.ids["B"]["token"],
		"/inventory?cert=" + f.ids["A"]["certificate"]} {
		rec := f.do(t, as("vic"), "GET", p, "")
		body := rec.Body.String()
		if rec.Code != 200 {
			t.Fatalf("viewer GET %s: %d %s", p, rec.Code, body)
		}
		if p == "/tokens" && (!strings.Contains(body, f.ids["A"]["token"]) || !strings.Contains(body, f.ids["B"]["token"])) {
			t.Errorf("viewer GET /tokens does not list both groups' tokens")
		}
		for _, control := range []string{`method="post"`, "/rotate", "/revoke", `id="create-token"`} {
			if strings.Contains(body, control) {
				t.Errorf("the viewer's page %s offers %q", p, control)
			}
		}
	}
}

func TestUITokensGroupScope(t *testing.T) {
	f := newTokenFixture(t)
	a, b := f.ids["A"], f.ids["B"]
	leaks := append(f.names["B"], b["token"], b["certificate"], b["issuer"])
	t.Run("lists show only the group", func(t *testing.T) {
		for _, p := range []string{"/tokens", "/tokens?group=B", "/tokens?certificate=" + b["certificate"], "/tokens?state=active",
			"/api/tokens", "/api/tokens?group=B", "/api/tokens?certificate_id=" + b["certificate"], "/inventory?cert=" + a["certificate"]} {
			rec := f.do(t, as("alice"), "GET", p, "")
			body := rec.Body.String()
			if rec.Code != 200 {
				t.Errorf("GET %s: %d %s", p, rec.Code, body)
				continue
			}
			for _, leak := range leaks {
				if strings.Contains(body, leak) && !strings.Contains(p, leak) { // a filter echoes what she typed
					t.Errorf("GET %s shows group B's %q", p, leak)
				}
			}
			if !strings.Contains(p, "B") && !strings.Contains(p, b["certificate"]) && !strings.Contains(body, a["token"]) {
				t.Errorf("GET %s does not show group A's token", p)
			}
		}
	})
	t.Run("group B's token is not found", func(t *testing.T) {
		for _, p := range []string{"/tokens/" + b["token"], "/api/tokens/" + b["token"], "/api/tokens/" + b["token"] + "/accounts"} {
			if rec := f.do(t, as("alice"), "GET", p, ""); rec.Code != http.StatusNotFound {
				t.Errorf("GET %s: %d %s, want 404", p, rec.Code, rec.Body)
			}
		}
	})
	t.Run("group B's token cannot be touched", func(t *testing.T) {
		for _, m := range f.tokenMutations("B") {
			q := as("alice")
			q.form = !strings.HasPrefix(m.path, "/api/")
			rec := f.do(t, q, m.method, m.path, m.body)
			want := http.StatusNotFound
			if strings.HasSuffix(m.path, "/tokens") {
				want = http.StatusBadRequest // B's certificate and ACME client are not hers
			}
			if rec.Code != want {
				t.Errorf("%s %s: %d %s, want %d", m.method, m.path, rec.Code, rec.Body, want)
			}
			for _, leak := range leaks[:len(f.names["B"])] {
				if strings.Contains(rec.Body.String(), leak) {
					t.Errorf("%s %s answers with group B's %q", m.method, m.path, leak)
				}
			}
		}
		// nor through her own group: B's certificate, ACME client or DNS
		// provider in a token of group A
		for name, body := range map[string]string{
			"B's certificate": `{"certificate_id":"` + b["certificate"] + `","issuer_id":"` + a["issuer"] + `","group":"A"}`,
			"B's ACME client": `{"names":["x.team-a.test"],"issuer_id":"` + b["issuer"] + `","group":"A"}`,
			"B's DNS provider": `{"names":["x.team-a.test"],"issuer_id":"` + a["issuer"] + `","group":"A","challenge":"dns-01","dns_provider_id":"` +
				b["dns"] + `"}`,
			"group B": `{"names":["x.team-a.test"],"issuer_id":"` + a["issuer"] + `","group":"B"}`,
		} {
			rec := f.do(t, as("alice"), "POST", "/api/tokens", body)
			if rec.Code != http.StatusBadRequest {
				t.Errorf("token with %s: %d %s", name, rec.Code, rec.Body)
			}
		}
		if rec := f.do(t, as("alice"), "PATCH", "/api/tokens/"+a["token"], `{"group":"B"}`); rec.Code != 400 {
			t.Errorf("moving a token to group B: %d %s", rec.Code, rec.Body)
		}
		tok, err := f.app.Tokens().Get(t.Context(), b["token"])
		if err != nil || tok.Status != gateway.StateActive || tok.Description != "" {
			t.Fatalf("group B's token after alice: %+v %v", tok, err)
		}
		if es := f.auditBy(t, "alice", b["token"]); len(es) > 0 {
			t.Fatalf("alice changed group B: %+v", es[0])
		}
		list, _ := f.app.Tokens().List(t.Context(), gateway.ListFilter{})
		if len(list) != 2 {
			t.Fatalf("alice's refused requests made tokens: %d", len(list))
		}
	})
	t.Run("her own group's token she can act on", func(t *testing.T) {
		q := as("alice")
		q.form = true
		rec := f.do(t, q, "POST", "/tokens/"+a["token"]+"/revoke", "")
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/tokens/"+a["token"]+"?flash=token+revoked" {
			t.Fatalf("revoke A's token: %d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		es, _, _ := f.app.AuditLog(t.Context(), storage.AuditFilter{Target: a["token"], Action: "token.revoke"}, storage.Page{})
		if len(es) != 1 || es[0].Actor != "ui:alice@203.0.113.7" {
			t.Fatalf("audit of the revoke: %+v", es)
		}
		if rec := f.do(t, as("alice"), "GET", "/tokens/"+a["token"], ""); !strings.Contains(rec.Body.String(), `badge-revoked`) ||
			strings.Contains(rec.Body.String(), "/revoke") {
			t.Fatalf("the revoked token's page: %s", rec.Body)
		}
	})
}

// oneTime reads the credentials off a one-time page.
var (
	reMAC = regexp.MustCompile(`id="eab-hmac-key"[^>]*value="([A-Za-z0-9_-]{40,})"`)
	reDir = regexp.MustCompile(`id="directory-url"[^>]*value="[^"]*(/rest/acme/t/[A-Za-z0-9_-]+/directory)"`)
	reKID = regexp.MustCompile(`id="eab-kid"[^>]*value="(ctk_[0-9A-Za-z]+)"`)
)

// TestUITokenSecretsOnce: a token made from a certificate through the
// form shows its EAB MAC key and URL secret in the POST's own answer (not
// a redirect, nothing in the URL, not cacheable), with the client
// snippets filled in; no page or JSON shows them afterwards, for anyone.
// Rotation works the same way.
func TestUITokenSecretsOnce(t *testing.T) {
	f := newTokenFixture(t)
	a := f.ids["A"]
	q := as("alice")
	q.form = true
	create := func(form url.Values) (kid, mac, secret string) {
		t.Helper()
		rec := f.do(t, q, "POST", "/tokens", form.Encode())
		body := rec.Body.String()
		if rec.Code != http.StatusOK || rec.Header().Get("Location") != "" {
			t.Fatalf("create: %d %v %s", rec.Code, rec.Header(), body)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("the one-time page's Cache-Control is %q", cc)
		}
		m1, m2, m3 := reKID.FindStringSubmatch(body), reMAC.FindStringSubmatch(body), reDir.FindStringSubmatch(body)
		if m1 == nil || m2 == nil || m3 == nil {
			t.Fatalf("the one-time page lacks the credentials:\n%s", body)
		}
		kid, mac, secret = m1[1], m2[1], urlSecretOf(t, m3[1])
		for _, want := range []string{"--eab-kid " + kid + " --eab-hmac-key " + mac, "--kid " + kid + " --hmac " + mac,
			"eab-hmac-key " + mac, m3[1], "--eab-key " + mac, "eab " + kid + " " + mac, "shown once"} {
			if !strings.Contains(body, want) {
				t.Errorf("the one-time page lacks %q", want)
			}
		}
		return kid, mac, secret
	}
	kid, mac, secret := create(url.Values{"certificate_id": {a["certificate"]}, "issuer_id": {a["issuer"]}})
	tok, err := f.app.Tokens().Get(t.Context(), kid)
	if err != nil || tok.CertificateID != a["certificate"] || tok.Group != "A" || strings.Join(tok.Names, ",") != "cert.team-a.test" {
		t.Fatalf("the token made from the certificate: %+v %v", tok, err)
	}
	f.secrets = append(f.secrets, mac, secret)
	// directly from names, ACME client and challenge settings
	kid2, mac2, secret2 := create(url.Values{"names": {"a.team-a.test\n*.team-a.test dns-01"}, "issuer_id": {a["issuer"]},
		"challenge": {"http-01"}, "dns_provider_id": {a["dns"]}, "group": {"A"}, "name": {"pair"}, "max_accounts": {"3"}})
	tok2, err := f.app.Tokens().Get(t.Context(), kid2)
	if err != nil || tok2.Spec.MaxAccounts != 3 || len(tok2.Spec.Identifiers) != 2 || tok2.Spec.Identifiers[1].Challenge != "dns-01" ||
		tok2.Spec.Identifiers[1].DNSProviderID != a["dns"] || tok2.Spec.Identifiers[0].Challenge != "http-01" {
		t.Fatalf("the token made from names: %+v %v", tok2, err)
	}
	f.secrets = append(f.secrets, mac2, secret2)
	// rotation shows the new secrets once, the same way
	rec := f.do(t, q, "POST", "/tokens/"+kid+"/rotate", url.Values{"grace": {"1h"}}.Encode())
	m := reMAC.FindStringSubmatch(rec.Body.String())
	d := reDir.FindStringSubmatch(rec.Body.String())
	if rec.Code != 200 || m == nil || d == nil || m[1] == mac {
		t.Fatalf("rotate: %d %s", rec.Code, rec.Body)
	}
	f.secrets = append(f.secrets, m[1], urlSecretOf(t, d[1]))
	// a bad form loses nothing and says what is wrong
	rec = f.do(t, q, "POST", "/tokens", url.Values{"names": {"ok.team-a.test"}, "group": {"A"}, "description": {"kept"}}.Encode())
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "issuer_id is required") || !strings.Contains(rec.Body.String(), "ok.team-a.test") ||
		!strings.Contains(rec.Body.String(), "kept") {
		t.Fatalf("bad form: %d %s", rec.Code, rec.Body)
	}

	var paths []string
	for _, g := range []string{"A", "B"} {
		id := f.ids[g]
		paths = append(paths, "/tokens/"+id["token"], "/api/tokens/"+id["token"], "/api/tokens/"+id["token"]+"/accounts",
			"/inventory?cert="+id["certificate"], "/tokens?certificate="+id["certificate"])
	}
	for _, id := range []string{kid, kid2} {
		paths = append(paths, "/tokens/"+id, "/api/tokens/"+id, "/api/tokens/"+id+"/accounts", "/audit?target="+id)
	}
	paths = append(paths, "/tokens", "/tokens?state=active", "/api/tokens", "/workflows", "/inventory", "/audit", "/api/audit")
	for _, user := range []string{"root", "alice", "vic"} {
		for _, p := range paths {
			rec := f.do(t, as(user), "GET", p, "")
			for _, s := range f.secrets {
				if strings.Contains(rec.Body.String(), s) || strings.Contains(rec.Header().Get("Location"), s) {
					t.Errorf("%s GET %s shows a secret", user, p)
				}
			}
		}
	}
	// the audit log holds no secret either
	es, _, _ := f.app.AuditLog(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
	raw, _ := json.Marshal(es)
	for _, s := range f.secrets {
		if strings.Contains(string(raw), s) {
			t.Fatal("an audit entry holds a secret")
		}
	}
	// the token page afterwards shows the snippets with placeholders
	rec = f.do(t, as("alice"), "GET", "/tokens/"+kid, "")
	if !strings.Contains(rec.Body.String(), "&lt;eab_hmac_key&gt;") || strings.Contains(rec.Body.String(), `id="eab-hmac-key"`) {
		t.Fatalf("the token page after creation: %s", rec.Body)
	}
}

// TestUITokensCSRF: every token mutation without the CSRF token is refused
// and changes nothing.
func TestUITokensCSRF(t *testing.T) {
	f := newTokenFixture(t)
	for _, m := range f.tokenMutations("A") {
		for name, q := range map[string]uiRequest{
			"no token":     {user: "alice", cookie: true},
			"wrong token":  {user: "alice", cookie: true, csrf: "wrong-" + testCSRF, form: !strings.HasPrefix(m.path, "/api/")},
			"no cookie":    {user: "alice", csrf: testCSRF},
			"cross-site":   {user: "alice", cookie: true, csrf: testCSRF, header: map[string]string{"Sec-Fetch-Site": "cross-site"}},
			"other origin": {user: "root", cookie: true, csrf: testCSRF, header: map[string]string{"Origin": "https://evil.example"}},
		} {
			if rec := f.do(t, q, m.method, m.path, m.body); rec.Code != http.StatusForbidden {
				t.Errorf("%s %s, %s: %d %s", m.method, m.path, name, rec.Code, rec.Body)
			}
		}
	}
	if es := f.auditBy(t, "alice"); len(es) > 0 {
		t.Fatalf("a refused request changed something: %+v", es[0])
	}
	if es := f.auditBy(t, "root"); len(es) > 0 {
		t.Fatalf("a refused request changed something: %+v", es[0])
	}
}

// TestUITokensList: filters, pagination and the empty states.
func TestUITokensList(t *testing.T) {
	f := newUIFixture(t)
	a := f.ids["A"]
	rec := f.do(t, as("alice"), "GET", "/tokens", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "No certificate token yet") || !strings.Contains(rec.Body.String(), `id="create-token"`) {
		t.Fatalf("empty tokens page: %d %s", rec.Code, rec.Body)
	}
	// the viewer's empty state says who can make one
	rec = f.do(t, as("vic"), "GET", "/tokens", "")
	if !strings.Contains(rec.Body.String(), "Ask an operator") || strings.Contains(rec.Body.String(), `id="create-token"`) {
		t.Fatalf("viewer's empty state: %s", rec.Body)
	}
	var ids []string
	for i := 0; i < pageSize+3; i++ {
		tok, _, err := f.app.Tokens().Create(t.Context(), "test", gateway.CreateRequest{Names: []string{"n" + string(rune('a'+i%26)) + ".team-a.test"},
			IssuerID: a["issuer"], Group: "A"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tok.ID)
	}
	if _, err := f.app.Tokens().Revoke(t.Context(), "test", ids[0]); err != nil {
		t.Fatal(err)
	}
	rec = f.do(t, as("alice"), "GET", "/tokens", "")
	body := rec.Body.String()
	// newest first, one page, a link to the next
	if !strings.Contains(body, ids[len(ids)-1]) || strings.Contains(body, ids[0]) || !strings.Contains(body, "Next page") {
		t.Fatalf("first page: %s", body)
	}
	next := reNext.FindStringSubmatch(body)
	if next == nil {
		t.Fatal("no next-page link")
	}
	rec = f.do(t, as("alice"), "GET", "/tokens"+strings.ReplaceAll(next[1], "&amp;", "&"), "")
	if !strings.Contains(rec.Body.String(), ids[0]) || strings.Contains(rec.Body.String(), ids[len(ids)-1]) {
		t.Fatalf("second page: %s", rec.Body)
	}
	rec = f.do(t, as("alice"), "GET", "/tokens?state=revoked", "")
	if !strings.Contains(rec.Body.String(), ids[0]) || strings.Contains(rec.Body.String(), ids[1]) {
		t.Fatalf("state filter: %s", rec.Body)
	}
	rec = f.do(t, as("alice"), "GET", "/tokens?state=lost", "")
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "unknown state") {
		t.Fatalf("bad state: %d %s", rec.Code, rec.Body)
	}
	rec = f.do(t, as("alice"), "GET", "/tokens?certificate="+a["certificate"], "")
	if !strings.Contains(rec.Body.String(), "No token matches") {
		t.Fatalf("certificate filter: %s", rec.Body)
	}
}

// TestUIGatewayURL: gateway_url must be the https origin where
// certlocker_acme is served; the snippets use it, else this UI's own site.
func TestUIGatewayURL(t *testing.T) {
	for _, bad := range []string{"http://acme.example.com", "https://", "acme.example.com", "https://acme.example.com/rest/acme",
		"https://acme.example.com?x=1"} {
		if err := (&UI{GatewayURL: bad}).Validate(); err == nil || !strings.Contains(err.Error(), "gateway_url") {
			t.Errorf("gateway_url %q: %v", bad, err)
		}
	}
	for _, ok := range []string{"https://acme.example.com", "https://acme.example.com:8443/", "https://127.0.0.1:9443"} {
		if err := (&UI{GatewayURL: ok}).Validate(); err != nil {
			t.Errorf("gateway_url %q: %v", ok, err)
		}
	}
	f := newTokenFixture(t)
	id := f.ids["A"]["token"]
	rec := f.do(t, as("alice"), "GET", "/tokens/"+id, "")
	if !strings.Contains(rec.Body.String(), "--server https://example.com/rest/acme/directory") { // httptest's Host
		t.Fatalf("default gateway URL: %s", rec.Body)
	}
	f.ui.GatewayURL = "https://acme.example.net:8443/"
	rec = f.do(t, as("alice"), "GET", "/tokens/"+id, "")
	if !strings.Contains(rec.Body.String(), "directory https://acme.example.net:8443/rest/acme/t/&lt;url_secret&gt;/directory") {
		t.Fatalf("configured gateway URL: %s", rec.Body)
	}
}
