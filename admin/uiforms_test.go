package admin

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	cfmodule "github.com/caddy-dns/cloudflare" // an installed dns.providers module, as in cmd/certlocker
	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/logging" // the file log writer
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/storage"
)

// testAPILogged is testAPI with every log of the app (debug level
// included) written to logPath, so tests can look for secrets in them.
func testAPILogged(t *testing.T, appJSON, logPath string) (*API, *certlocker.App) {
	t.Helper()
	logging := &caddy.Logging{Logs: map[string]*caddy.CustomLog{"default": {BaseLog: caddy.BaseLog{
		WriterRaw: json.RawMessage(mustJSON(map[string]any{"output": "file", "filename": logPath, "roll": false})),
		Level:     "DEBUG"}}}}
	return provisionAPI(t, &caddy.Config{Logging: logging}, appJSON)
}

// logUI sends the UI handler's own logs (the admin API's error paths) to
// a file beside the app's, at debug level.
func (f *uiFixture) logUI(t *testing.T) {
	t.Helper()
	fh, err := os.Create(f.logPath + ".ui")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fh.Close() })
	l := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(fh), zap.DebugLevel))
	f.ui.logger, f.ui.api.logger = l, l
}

// logs returns everything the app and the UI logged so far.
func (f *uiFixture) logs(t *testing.T) string {
	t.Helper()
	a, _ := os.ReadFile(f.logPath)
	b, _ := os.ReadFile(f.logPath + ".ui")
	if len(a) == 0 {
		t.Fatal("the app logged nothing: the log capture is broken")
	}
	return string(a) + string(b)
}

// postForm posts a urlencoded form with the CSRF token as q's user.
func (f *uiFixture) postForm(t *testing.T, user, path string, v url.Values) *httptest.ResponseRecorder {
	t.Helper()
	q := as(user)
	q.form = true
	return f.do(t, q, "POST", path, v.Encode())
}

// postMultipart posts a multipart form (files by field name) with the
// CSRF token in the form, as a browser does.
func (f *uiFixture) postMultipart(t *testing.T, user, path string, v url.Values, files map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField(csrfField, testCSRF)
	for k, vals := range v {
		for _, s := range vals {
			_ = mw.WriteField(k, s)
		}
	}
	for field, content := range files {
		fw, _ := mw.CreateFormFile(field, field+".pem")
		_, _ = fw.Write([]byte(content))
	}
	_ = mw.Close()
	q := as(user)
	q.header = map[string]string{"Content-Type": mw.FormDataContentType()}
	req := buf.String()
	return f.do(t, q, "POST", path, req)
}

// everywhere checks that none of secrets appears in the pages and JSON
// answers given, the audit log or the logs.
func (f *uiFixture) everywhere(t *testing.T, paths []string, secrets ...string) {
	t.Helper()
	for _, user := range []string{"root", "alice", "bob", "vic"} {
		for _, p := range paths {
			body := f.do(t, as(user), "GET", p, "").Body.String()
			for _, s := range secrets {
				if strings.Contains(body, s) {
					t.Errorf("%s GET %s shows a secret", user, p)
				}
			}
		}
	}
	es, _, err := f.app.AuditLog(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(es)
	logs := f.logs(t)
	for _, s := range secrets {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the audit log holds a secret")
		}
		if strings.Contains(logs, s) {
			t.Errorf("the logs hold a secret")
		}
	}
}

func location(t *testing.T, rec *httptest.ResponseRecorder, prefix string) string {
	t.Helper()
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, prefix) {
		t.Fatalf("want a redirect to %s…, got %d %q:\n%s", prefix, rec.Code, loc, rec.Body)
	}
	u, _ := url.Parse(loc)
	return u.Path
}

func countIssuers(t *testing.T, app *certlocker.App) int {
	t.Helper()
	ctx := t.Context()
	list, err := app.IssuerRegistry().List(ctx, storage.IssuerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func TestUIIssuerForm(t *testing.T) {
	f := newUIFixture(t)
	f.logUI(t)
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true,
		Profiles: map[string]acmetest.Profile{"tlsserver": {Description: "TLS server certificates"}, "shortlived": {Description: "six days"}}})
	mac := p.NewExternalAccountKey("kid-ui-1")
	valid := url.Values{"name": {"pebble-a"}, "catalog_id": {"custom"}, "directory_url": {p.DirectoryURL()},
		"custom_roots_pem": {string(p.WFECertPEM())}, "eab_key_id": {"kid-ui-1"}, "eab_mac_key": {mac},
		"contacts": {"ops@example.com"}, "account_key_type": {"p256"}, "group": {"A"}, "agree_terms": {"yes"}}
	with := func(k, v string) url.Values {
		out := url.Values{}
		for kk, vv := range valid {
			out[kk] = vv
		}
		if v == "" {
			out.Del(k)
		} else {
			out.Set(k, v)
		}
		return out
	}

	t.Run("the form shows every catalog CA with its guidance", func(t *testing.T) {
		rec := f.do(t, as("alice"), "GET", "/issuers/new", "")
		body := rec.Body.String()
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, body)
		}
		for _, e := range issuers.Catalog() {
			if !strings.Contains(body, `id="catalog-`+e.ID+`"`) || !strings.Contains(body, templateEscape(e.Setup[0])) {
				t.Errorf("the picker lacks %s or its guidance", e.ID)
			}
		}
		for _, want := range []string{`name="eab_key_id"`, `name="eab_mac_key" type="password"`, `name="directory_url"`,
			`name="contacts"`, `name="account_key_type"`, `name="group"`, `name="csrf" value="` + testCSRF + `"`, "Profiles", "Key types"} {
			if !strings.Contains(body, want) {
				t.Errorf("the form lacks %s", want)
			}
		}
		// the B group is not offered to alice
		if strings.Contains(body, `<option>B</option>`) {
			t.Error("alice is offered group B")
		}
	})

	t.Run("viewers get no form and cannot post", func(t *testing.T) {
		if rec := f.do(t, as("vic"), "GET", "/issuers/new", ""); rec.Code != 403 {
			t.Fatalf("viewer GET /issuers/new: %d", rec.Code)
		}
		before := countIssuers(t, f.app)
		if rec := f.postForm(t, "vic", "/issuers", valid); rec.Code != 403 {
			t.Fatalf("viewer POST /issuers: %d", rec.Code)
		}
		if countIssuers(t, f.app) != before {
			t.Fatal("the viewer created an issuer")
		}
		for _, p := range []string{"/issuers", "/issuers/" + f.ids["A"]["issuer"]} {
			if body := f.do(t, as("vic"), "GET", p, "").Body.String(); strings.Contains(body, `method="post"`) || strings.Contains(body, "/issuers/new") {
				t.Errorf("the viewer's %s offers a change", p)
			}
		}
	})

	t.Run("bad input is refused with a clear error and nothing stored", func(t *testing.T) {
		cases := map[string]struct {
			form   url.Values
			status int
			want   string
		}{
			"custom without a directory": {with("directory_url", ""), 400, "needs its directory URL"},
			"plain http directory":       {with("directory_url", "http://"+strings.TrimPrefix(p.DirectoryURL(), "https://")), 400, "must be an https URL"},
			"EAB key ID without MAC key": {with("eab_mac_key", ""), 400, "eab_mac_key is missing"},
			"MAC key that is not base64": {with("eab_mac_key", "not base64 at all!"), 400, "eab_mac_key is not base64url"},
			"unknown EAB key at the CA":  {with("eab_key_id", "kid-nobody"), 422, "refused"},
			"a contact that is no email": {with("contacts", "ops at example"), 400, "is not an email address"},
			"another group":              {with("group", "B"), 400, "group"},
			"CA needing EAB without it": {func() url.Values {
				v := with("eab_key_id", "")
				v.Del("eab_mac_key")
				v.Set("catalog_id", "google")
				v.Del("directory_url")
				return v
			}(), 400, "requires external account binding"},
			"retired CA": {func() url.Values { v := with("catalog_id", "buypass"); v.Del("directory_url"); return v }(), 400, "retired"},
			"no name":    {with("name", ""), 400, "name must be"},
		}
		before := countIssuers(t, f.app)
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				rec := f.postForm(t, "alice", "/issuers", c.form)
				body := rec.Body.String()
				if rec.Code != c.status || !strings.Contains(body, c.want) || !strings.Contains(body, `role="alert"`) {
					t.Fatalf("%d (want %d) without %q:\n%s", rec.Code, c.status, c.want, body)
				}
				if !strings.Contains(body, `id="issuer-form"`) {
					t.Fatal("the form is not shown again")
				}
				if strings.Contains(body, mac) {
					t.Fatal("the page echoes the EAB MAC key")
				}
				if c.form.Get("name") != "" && !strings.Contains(body, `value="`+c.form.Get("name")+`"`) {
					t.Fatal("the form lost the name typed in")
				}
			})
		}
		if got := countIssuers(t, f.app); got != before {
			t.Fatalf("bad input stored issuers: %d → %d", before, got)
		}
	})

	var id string
	t.Run("a valid form registers the account and opens its page", func(t *testing.T) {
		rec := f.postForm(t, "alice", "/issuers", valid)
		id = strings.TrimPrefix(location(t, rec, "/issuers/iss_"), "/issuers/")
		page := f.do(t, as("alice"), "GET", "/issuers/"+id, "")
		body := page.Body.String()
		for _, want := range []string{`id="issuer-status">valid<`, "kid-ui-1", "MAC key set (sealed, never shown)", "pebble.letsencrypt.org",
			"tlsserver", "TLS server certificates", "shortlived", "Terms of service", "External account binding</dt><dd>required",
			`id="rollover-form"`, `id="deactivate-form"`} {
			if !strings.Contains(body, want) {
				t.Errorf("the client's page lacks %q", want)
			}
		}
		// group B's operator neither sees nor touches it
		for _, p := range []string{"/issuers", "/api/issuers", "/workflows/new"} {
			if body := f.do(t, as("bob"), "GET", p, "").Body.String(); strings.Contains(body, id) || strings.Contains(body, "pebble-a") {
				t.Errorf("bob's %s shows group A's new client", p)
			}
		}
		for _, p := range []string{"/issuers/" + id, "/api/issuers/" + id} {
			if rec := f.do(t, as("bob"), "GET", p, ""); rec.Code != 404 {
				t.Errorf("bob GET %s: %d", p, rec.Code)
			}
		}
		for _, action := range []string{"rollover", "deactivate", "refresh", "test"} {
			if rec := f.postForm(t, "bob", "/issuers/"+id+"/"+action, url.Values{"confirm": {"yes"}}); rec.Code != 404 {
				t.Errorf("bob %s on A's client: %d", action, rec.Code)
			}
		}
		if es := f.auditBy(t, "bob"); len(es) > 0 {
			t.Errorf("bob changed something: %+v", es[0])
		}
		if rec := f.do(t, as("alice"), "GET", "/issuers/"+f.ids["B"]["issuer"], ""); rec.Code != 404 {
			t.Errorf("alice GET B's ACME client page: %d", rec.Code)
		}
		f.everywhere(t, []string{"/issuers", "/issuers/" + id, "/api/issuers", "/api/issuers/" + id, "/workflows/new", "/audit", "/api/audit"}, mac)
	})

	t.Run("rollover and deactivate need the confirmation", func(t *testing.T) {
		for _, action := range []string{"rollover", "deactivate"} {
			rec := f.postForm(t, "alice", "/issuers/"+id+"/"+action, url.Values{"account_key_type": {"p384"}})
			if rec.Code != 400 || !strings.Contains(rec.Body.String(), "tick the confirmation box") {
				t.Fatalf("%s without confirmation: %d %s", action, rec.Code, rec.Body)
			}
		}
		iss, _ := f.app.IssuerRegistry().Get(t.Context(), id)
		if !iss.KeyRolledAt.IsZero() || iss.Status != issuers.StatusValid {
			t.Fatalf("an unconfirmed action changed the account: %+v", iss.Status)
		}
		// not for viewers, not on another group's client
		if rec := f.postForm(t, "vic", "/issuers/"+id+"/rollover", url.Values{"confirm": {"yes"}}); rec.Code != 403 {
			t.Fatalf("viewer rollover: %d", rec.Code)
		}
		for _, action := range []string{"rollover", "deactivate", "refresh", "test"} {
			rec := f.postForm(t, "alice", "/issuers/"+f.ids["B"]["issuer"]+"/"+action, url.Values{"confirm": {"yes"}})
			if rec.Code != 404 {
				t.Errorf("alice %s on B's client: %d %s", action, rec.Code, rec.Body)
			}
		}
		rec := f.postForm(t, "alice", "/issuers/"+id+"/rollover", url.Values{"confirm": {"yes"}, "account_key_type": {"p384"}})
		location(t, rec, "/issuers/"+id)
		iss, _ = f.app.IssuerRegistry().Get(t.Context(), id)
		if iss.KeyRolledAt.IsZero() || iss.AccountKeyType != "p384" {
			t.Fatalf("after the rollover: key %s, rolled %v", iss.AccountKeyType, iss.KeyRolledAt)
		}
		rec = f.postForm(t, "alice", "/issuers/"+id+"/deactivate", url.Values{"confirm": {"yes"}})
		location(t, rec, "/issuers/"+id)
		body := f.do(t, as("alice"), "GET", "/issuers/"+id, "").Body.String()
		if !strings.Contains(body, `id="issuer-status">deactivated<`) || strings.Contains(body, `id="rollover-form"`) {
			t.Fatalf("after deactivation:\n%s", body)
		}
		f.everywhere(t, []string{"/issuers/" + id, "/api/issuers/" + id}, mac)
	})
}

// templateEscape is how html/template writes s in a page.
func templateEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "'", "&#39;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "+", "&#43;").Replace(s)
}

func TestUIDNSProviderForm(t *testing.T) {
	f := newUIFixture(t)
	f.logUI(t)
	d := acmetest.NewDNSServer(t, "forms.test", "example.test")
	cf := acmetest.NewCloudflare(t, d, acmetest.WithCloudflareZones("forms.test"))
	token := "cf-ui-form-token-" + hexToken(t)
	cf.AddToken(token, acmetest.PermZoneRead("forms.test"), acmetest.PermDNSEdit("forms.test"))
	useTestDNS(f.app, d, cf, func(o *dnsproviders.Options) {
		o.ConfigureModule = func(_ string, m any) {
			if p, ok := m.(*cfmodule.Provider); ok {
				p.HTTPClient = cf.HTTPClient()
			}
		}
	})
	tsig := "c2VjcmV0LXRzaWcta2V5LWZvci10aGUtdWktZm9ybQ=="
	count := func() int {
		list, err := f.app.DNS().List(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	t.Run("a form for each type", func(t *testing.T) {
		cases := map[string][]string{
			"":                         {`name="api_token" type="password"`, `name="zone_token" type="password"`, `name="account_id"`, `name="zones"`},
			"rfc2136":                  {`name="server"`, `name="key_name"`, `name="key_alg"`, "hmac-sha512", `name="key" type="password"`},
			"delegated":                {"Challenge zones CertLocker serves", "docs/challenge-zone.md"},
			"dns.providers.cloudflare": {`name="cred_api_token" type="password"`, `name="cred_zone_token" type="password"`, `name="module_json"`},
		}
		for typ, wants := range cases {
			rec := f.do(t, as("alice"), "GET", "/dns-providers/new?type="+typ, "")
			for _, w := range append(wants, `id="type-dns.providers.cloudflare"`) {
				if rec.Code != 200 || !strings.Contains(rec.Body.String(), w) {
					t.Errorf("type %q: %d, lacks %s", typ, rec.Code, w)
				}
			}
		}
		if rec := f.do(t, as("alice"), "GET", "/dns-providers/new?type=dns.providers.nope", ""); rec.Code != 404 {
			t.Errorf("a module that is not installed: %d", rec.Code)
		}
		if rec := f.do(t, as("vic"), "GET", "/dns-providers/new", ""); rec.Code != 403 {
			t.Errorf("viewer: %d", rec.Code)
		}
	})

	cfForm := url.Values{"type": {"cloudflare"}, "name": {"cf-forms"}, "zones": {"forms.test"}, "api_token": {token}, "group": {"A"}}
	with := func(base url.Values, kv ...string) url.Values {
		out := url.Values{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				out.Del(kv[i])
			} else {
				out.Set(kv[i], kv[i+1])
			}
		}
		return out
	}
	rfcForm := url.Values{"type": {"rfc2136"}, "name": {"bind-forms"}, "zones": {"forms.test"}, "server": {"127.0.0.1:53"},
		"key_name": {"certlocker."}, "key_alg": {"hmac-sha256"}, "key": {tsig}, "group": {"A"}}

	t.Run("bad input is refused with a clear error and nothing stored", func(t *testing.T) {
		cases := map[string]struct {
			form        url.Values
			want, field string
		}{
			"token with spaces":     {with(cfForm, "api_token", "Bearer "+token), "is not a Cloudflare API token", "api_token"},
			"no token":              {with(cfForm, "api_token", ""), "api_token is required", "api_token"},
			"no zones":              {with(cfForm, "zones", ""), "zones must name at least one zone", "zones"},
			"bad zone":              {with(cfForm, "zones", "forms..test"), "is not a valid domain name", "zones"},
			"another group":         {with(cfForm, "group", "B"), "group", "group"},
			"bad TTL":               {with(cfForm, "ttl", "5s"), "ttl", "ttl"},
			"TSIG not base64":       {with(rfcForm, "key", "not base64 !!"), "must be the TSIG secret in base64", "key"},
			"no server":             {with(rfcForm, "server", ""), "server is required", "server"},
			"bad algorithm":         {with(rfcForm, "key_alg", "hmac-sha3"), "key_alg must be one of", "key_alg"},
			"module with bad token": {url.Values{"type": {"dns.providers.cloudflare"}, "name": {"cfm"}, "zones": {"forms.test"}, "cred_api_token": {"short-" + token[:12]}}, "appears invalid", ""},
			"module extra not JSON": {url.Values{"type": {"dns.providers.cloudflare"}, "name": {"cfm"}, "zones": {"forms.test"}, "cred_api_token": {token}, "module_json": {"{nope"}}, "must be a JSON object", "module_json"},
			"unknown type":          {with(cfForm, "type", "route53"), "no DNS provider type", "type"},
		}
		before := count()
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				rec := f.postForm(t, "alice", "/dns-providers", c.form)
				body := rec.Body.String()
				if rec.Code != 400 || !strings.Contains(body, c.want) || !strings.Contains(body, `role="alert"`) {
					t.Fatalf("%d without %q:\n%s", rec.Code, c.want, body)
				}
				if !strings.Contains(body, `id="dns-form"`) {
					t.Fatal("the form is not shown again")
				}
				if c.field != "" && c.field != "type" && c.field != "group" && !regexp.MustCompile(`name="`+regexp.QuoteMeta(c.field)+`"[^>]*aria-invalid="true"`).MatchString(body) {
					t.Errorf("the field %s is not marked", c.field)
				}
				for _, s := range []string{token, tsig, token[:12]} {
					if strings.Contains(body, s) {
						t.Fatal("the page echoes a secret")
					}
				}
				if c.form.Get("name") != "" && !strings.Contains(body, `value="`+c.form.Get("name")+`"`) {
					t.Fatal("the form lost the name typed in")
				}
			})
		}
		if rec := f.postForm(t, "vic", "/dns-providers", cfForm); rec.Code != 403 {
			t.Fatalf("viewer: %d", rec.Code)
		}
		if got := count(); got != before {
			t.Fatalf("bad input stored providers: %d → %d", before, got)
		}
		// the capture holds the debug-level refusals too, so the secret
		// checks below look at everything logged
		if !strings.Contains(f.logs(t), "admin API request refused") {
			t.Fatal("the debug logs are not captured")
		}
	})

	t.Run("cloudflare: create, then Verify shows the result on its page", func(t *testing.T) {
		rec := f.postForm(t, "alice", "/dns-providers", cfForm)
		path := location(t, rec, "/dns-providers/dns_")
		body := f.do(t, as("alice"), "GET", path, "").Body.String()
		if !strings.Contains(body, `id="dns-status">unverified<`) || !strings.Contains(body, `id="verify"`) {
			t.Fatalf("new provider page:\n%s", body)
		}
		if strings.Contains(f.do(t, as("vic"), "GET", path, "").Body.String(), `id="verify"`) {
			t.Error("the viewer is offered Verify")
		}
		rec = f.postForm(t, "alice", path+"/verify", nil)
		if got := location(t, rec, path); got != path || !strings.Contains(rec.Header().Get("Location"), "flash=verified") {
			t.Fatalf("verify: %s", rec.Header().Get("Location"))
		}
		body = f.do(t, as("alice"), "GET", path, "").Body.String()
		for _, want := range []string{`id="dns-status">verified<`, "<strong>Verified</strong>", "can publish and remove challenge records in forms.test", "<td>forms.test</td>"} {
			if !strings.Contains(body, want) {
				t.Errorf("after verify, the page lacks %q", want)
			}
		}
		// a revoked token: Verify shows the failure, check by check
		cf.RevokeToken(token)
		location(t, f.postForm(t, "alice", path+"/verify", nil), path)
		body = f.do(t, as("alice"), "GET", path, "").Body.String()
		if !strings.Contains(body, "Verification failed") || !strings.Contains(body, `badge-failed">failed<`) {
			t.Errorf("a failed verification is not shown:\n%s", body)
		}
		id := strings.TrimPrefix(path, "/dns-providers/")
		// group B's operator neither sees nor verifies it
		if body := f.do(t, as("bob"), "GET", "/dns-providers", "").Body.String(); strings.Contains(body, "cf-forms") {
			t.Error("bob's list shows group A's provider")
		}
		for _, p := range []string{path, "/api/dns-providers/" + id} {
			if rec := f.do(t, as("bob"), "GET", p, ""); rec.Code != 404 {
				t.Errorf("bob GET %s: %d", p, rec.Code)
			}
		}
		if rec := f.postForm(t, "bob", path+"/verify", nil); rec.Code != 404 {
			t.Errorf("bob verify A's provider: %d", rec.Code)
		}
		f.everywhere(t, []string{path, "/dns-providers", "/api/dns-providers/" + id, "/api/dns-providers", "/workflows/new", "/audit"}, token)
	})

	t.Run("rfc2136 and an installed module", func(t *testing.T) {
		path := location(t, f.postForm(t, "alice", "/dns-providers", rfcForm), "/dns-providers/dns_")
		body := f.do(t, as("alice"), "GET", path, "").Body.String()
		if !strings.Contains(body, "key, key_alg, key_name, server") || strings.Contains(body, tsig) {
			t.Fatalf("rfc2136 page:\n%s", body)
		}
		tok2 := "cfm-" + hexToken(t)
		cf.AddToken(tok2, acmetest.PermZoneRead("forms.test"), acmetest.PermDNSEdit("forms.test"))
		path = location(t, f.postForm(t, "alice", "/dns-providers", url.Values{"type": {"dns.providers.cloudflare"},
			"name": {"cf-module"}, "zones": {"forms.test"}, "cred_api_token": {tok2}, "group": {"A"}}), "/dns-providers/dns_")
		location(t, f.postForm(t, "alice", path+"/verify", nil), path)
		body = f.do(t, as("alice"), "GET", path, "").Body.String()
		if !strings.Contains(body, `id="dns-status">verified<`) || !strings.Contains(body, "dns.providers.cloudflare") {
			t.Fatalf("module provider after verify:\n%s", body)
		}
		f.everywhere(t, []string{path, "/api/dns-providers", "/dns-providers"}, tsig, tok2)
	})

	t.Run("delegated: the CNAME to add, and whether it is there", func(t *testing.T) {
		path := location(t, f.postForm(t, "alice", "/dns-providers", url.Values{"type": {"delegated"}, "name": {"zone-a"},
			"zones": {"acme.forms.test"}, "group": {"A"}}), "/dns-providers/dns_")
		body := f.do(t, as("alice"), "GET", path+"?name=shop.example.test", "").Body.String()
		label := dnsproviders.DelegatedLabel("_acme-challenge.shop.example.test")
		want := "_acme-challenge.shop.example.test. CNAME " + label + ".acme.forms.test."
		if !strings.Contains(body, want) || !strings.Contains(body, ">missing<") {
			t.Fatalf("delegation page lacks %q / missing:\n%s", want, body)
		}
		d.SetCNAME("_acme-challenge.shop.example.test", label+".acme.forms.test", "")
		body = f.do(t, as("alice"), "GET", path+"?name=shop.example.test", "").Body.String()
		if !strings.Contains(body, ">in place<") {
			t.Fatalf("the CNAME in place is not seen:\n%s", body)
		}
		body = f.do(t, as("alice"), "GET", path+"?name=www.acme.forms.test", "").Body.String()
		if !strings.Contains(body, "no CNAME needed") {
			t.Fatalf("a name inside the served zone:\n%s", body)
		}
	})

	t.Run("the other group's providers", func(t *testing.T) {
		b := f.ids["B"]["dns"]
		if rec := f.do(t, as("alice"), "GET", "/dns-providers/"+b, ""); rec.Code != 404 {
			t.Errorf("GET B's provider: %d", rec.Code)
		}
		if rec := f.postForm(t, "alice", "/dns-providers/"+b+"/verify", nil); rec.Code != 404 {
			t.Errorf("verify B's provider: %d", rec.Code)
		}
		if es := f.auditBy(t, "alice", b); len(es) > 0 {
			for _, e := range es {
				if e.Target == b {
					t.Fatalf("alice touched B's provider: %+v", e)
				}
			}
		}
	})
}

func TestUIOrderPreview(t *testing.T) {
	f := newUIFixture(t)
	ctx := t.Context()
	del, err := f.app.DNS().Create(ctx, "test", dnsproviders.Config{Name: "zone-a", Type: dnsproviders.TypeDelegated,
		Zones: []string{"acme.team-a.test"}, Group: "A"})
	if err != nil {
		t.Fatal(err)
	}
	before, _, _ := f.app.Workflows().List(ctx, storage.WorkflowFilter{}, storage.Page{Limit: storage.MaxLimit})

	// the issuer picker carries each client's catalog information
	body := f.do(t, as("alice"), "GET", "/workflows/new", "").Body.String()
	if !strings.Contains(body, `data-issuer="`+f.ids["A"]["issuer"]+`"`) || strings.Contains(body, f.ids["B"]["issuer"]) ||
		!strings.Contains(body, "Custom ACME directory") || !strings.Contains(body, `id="preview-button"`) {
		t.Fatalf("new order page:\n%s", body)
	}

	rec := f.postForm(t, "alice", "/workflows", url.Values{"preview": {"1"}, "issuer_id": {f.ids["A"]["issuer"]}, "group": {"A"},
		"identifiers": {"www.team-a.test http-01\n*.team-a.test\nshop.elsewhere.test dns-01\n*.nowhere.test http-01"}})
	body = rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, `id="preview"`) {
		t.Fatalf("preview: %d\n%s", rec.Code, body)
	}
	for _, want := range []string{
		"http://www.team-a.test/.well-known/acme-challenge/",
		"Publish TXT _acme-challenge.team-a.test in zone team-a.test through dns-team-a (cloudflare).",
		"dns-team-a is unverified",
		"a wildcard needs dns-01",
		"The certificate belongs to group A.",
		`id="preview-problems"`,
		// the form keeps what was typed for the real submit
		"shop.elsewhere.test dns-01",
	} {
		if !strings.Contains(body, templateEscape(want)) && !strings.Contains(body, want) {
			t.Errorf("the preview lacks %q", want)
		}
	}
	// a delegated provider: the CNAME the owner must add
	rec = f.postForm(t, "alice", "/workflows", url.Values{"preview": {"1"}, "issuer_id": {f.ids["A"]["issuer"]}, "group": {"A"},
		"dns_provider_id": {del.ID}, "identifiers": {"shop.elsewhere.test dns-01"}})
	label := dnsproviders.DelegatedLabel("_acme-challenge.shop.elsewhere.test")
	if body := rec.Body.String(); !strings.Contains(body, "_acme-challenge.shop.elsewhere.test. CNAME "+label+".acme.team-a.test.") ||
		!strings.Contains(body, ">missing<") {
		t.Fatalf("delegated preview:\n%s", body)
	}
	// B's provider cannot be previewed into alice's order
	rec = f.postForm(t, "alice", "/workflows", url.Values{"preview": {"1"}, "issuer_id": {f.ids["A"]["issuer"]},
		"dns_provider_id": {f.ids["B"]["dns"]}, "identifiers": {"x.team-b.test dns-01"}})
	if body := rec.Body.String(); strings.Contains(body, "dns-team-b") || !strings.Contains(body, "not one of yours") {
		t.Fatalf("B's provider in a preview:\n%s", body)
	}
	after, _, _ := f.app.Workflows().List(ctx, storage.WorkflowFilter{}, storage.Page{Limit: storage.MaxLimit})
	if len(after) != len(before) {
		t.Fatalf("a preview created workflows: %d → %d", len(before), len(after))
	}
	if rec := f.postForm(t, "vic", "/workflows", url.Values{"preview": {"1"}}); rec.Code != 403 {
		t.Fatalf("viewer preview: %d", rec.Code)
	}
}

func TestUIImportExport(t *testing.T) {
	f := newUIFixture(t)
	f.logUI(t)
	good := newCertFixture(t, []string{"imported.team-a.test"}, time.Now().Add(60*24*time.Hour))
	other := newCertFixture(t, []string{"other.team-a.test"}, time.Now().Add(60*24*time.Hour))
	expired := newCertFixture(t, []string{"old.team-a.test"}, time.Now().Add(-48*time.Hour))
	keyLine := func(fx certFixture) string { return strings.TrimSpace(strings.Split(fx.key, "\n")[1]) }
	count := func() int {
		list, _, err := f.app.Certificates().List(t.Context(), storage.CertificateFilter{}, storage.Page{Limit: storage.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	if rec := f.do(t, as("alice"), "GET", "/inventory/import", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `enctype="multipart/form-data"`) {
		t.Fatalf("import page: %d", rec.Code)
	}
	if rec := f.do(t, as("vic"), "GET", "/inventory/import", ""); rec.Code != 403 {
		t.Fatalf("viewer import page: %d", rec.Code)
	}
	// an upload without the CSRF token (or with a wrong one) is refused
	// before anything is read into the inventory
	n0 := count()
	for name, tok := range map[string]string{"none": "", "wrong": "nope-" + testCSRF} {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		if tok != "" {
			_ = mw.WriteField(csrfField, tok)
		}
		_ = mw.WriteField("pem", good.chain)
		_ = mw.WriteField("group", "A")
		_ = mw.Close()
		q := uiRequest{user: "alice", cookie: true, header: map[string]string{"Content-Type": mw.FormDataContentType()}}
		if rec := f.do(t, q, "POST", "/inventory/import", buf.String()); rec.Code != 403 || !strings.Contains(rec.Body.String(), "CSRF") {
			t.Fatalf("multipart import, CSRF token %s: %d", name, rec.Code)
		}
	}
	if count() != n0 {
		t.Fatal("a CSRF-less upload imported a certificate")
	}

	t.Run("bad PEM is refused with a clear error and nothing stored", func(t *testing.T) {
		cases := map[string]struct {
			form  url.Values
			files map[string]string
			want  string
		}{
			"nothing":                {url.Values{"group": {"A"}}, nil, "paste the certificate and its chain"},
			"not PEM":                {url.Values{"pem": {"hello, I am a certificate"}, "group": {"A"}}, nil, "Certificate chain: not PEM"},
			"mismatched key":         {url.Values{"pem": {good.chain}, "key_pem": {other.key}, "group": {"A"}}, nil, "Private key: the private key does not match the certificate"},
			"mismatched key in file": {url.Values{"group": {"A"}}, map[string]string{"pem_file": good.chain, "key_file": other.key}, "does not match the certificate"},
			"truncated PEM file":     {url.Values{"group": {"A"}}, map[string]string{"pem_file": good.chain[:200]}, "Certificate chain:"},
			"key in the key field twice": {url.Values{"pem": {good.chain + good.key}, "key_pem": {good.key}, "group": {"A"}}, nil,
				"already holds a private key"},
			"another group": {url.Values{"pem": {good.chain}, "group": {"B"}}, nil, "is not one of yours"},
		}
		before := count()
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				rec := f.postMultipart(t, "alice", "/inventory/import", c.form, c.files)
				body := rec.Body.String()
				if rec.Code != 400 || !strings.Contains(body, templateEscape(c.want)) || !strings.Contains(body, `role="alert"`) {
					t.Fatalf("%d without %q:\n%s", rec.Code, c.want, body)
				}
				for _, fx := range []certFixture{good, other} {
					if strings.Contains(body, keyLine(fx)) {
						t.Fatal("the page echoes a private key")
					}
				}
			})
		}
		if got := count(); got != before {
			t.Fatalf("bad input stored certificates: %d → %d", before, got)
		}
	})

	var id string
	t.Run("upload with key, then an expired paste", func(t *testing.T) {
		rec := f.postMultipart(t, "alice", "/inventory/import", url.Values{"group": {"A"}},
			map[string]string{"pem_file": good.chain, "key_file": good.key})
		loc := rec.Header().Get("Location")
		location(t, rec, "/inventory")
		u, _ := url.Parse(loc)
		id = u.Query().Get("cert")
		if !strings.HasPrefix(id, "crt_") || u.Query().Get("flash") != "certificate imported" {
			t.Fatalf("after import: %s", loc)
		}
		body := f.do(t, as("alice"), "GET", loc, "").Body.String()
		if !strings.Contains(body, "imported.team-a.test") || !strings.Contains(body, "private key held, sealed") {
			t.Fatalf("drawer after import:\n%s", body)
		}
		// the same again changes nothing, and says so
		rec = f.postMultipart(t, "alice", "/inventory/import", url.Values{"group": {"A"}, "pem": {good.chain}}, nil)
		if !strings.Contains(rec.Header().Get("Location"), url.QueryEscape("already in the inventory")) {
			t.Fatalf("second import: %s", rec.Header().Get("Location"))
		}
		// an expired certificate is imported and flagged loudly
		rec = f.postForm(t, "alice", "/inventory/import", url.Values{"group": {"A"}, "pem": {expired.chain}})
		if loc := rec.Header().Get("Location"); rec.Code != 303 || !strings.Contains(loc, url.QueryEscape("EXPIRED on")) {
			t.Fatalf("expired import: %d %s", rec.Code, loc)
		}
	})

	t.Run("export: chain for all, the key only where the policy allows, audited", func(t *testing.T) {
		drawer := f.do(t, as("alice"), "GET", "/inventory?cert="+id, "").Body.String()
		if !strings.Contains(drawer, `id="export-chain"`) || strings.Contains(drawer, `id="export-bundle"`) {
			t.Fatalf("operator's drawer: chain link, no key export wanted")
		}
		if rec := f.do(t, as("alice"), "GET", "/api/certificates/"+id+"/pem?format=leaf", ""); rec.Code != 200 || strings.Contains(rec.Body.String(), "PRIVATE KEY") {
			t.Fatalf("leaf download: %d", rec.Code)
		}
		if rec := f.postForm(t, "alice", "/inventory/"+id+"/export", url.Values{"format": {"bundle"}}); rec.Code != 403 || strings.Contains(rec.Body.String(), keyLine(good)) {
			t.Fatalf("operator key export: %d", rec.Code)
		}
		if rec := f.postForm(t, "vic", "/inventory/"+id+"/export", url.Values{"format": {"bundle"}}); rec.Code != 403 {
			t.Fatalf("viewer key export: %d", rec.Code)
		}
		if rec := f.postForm(t, "alice", "/inventory/"+f.ids["B"]["certificate"]+"/export", url.Values{"format": {"bundle"}}); rec.Code != 404 {
			t.Fatalf("export of B's certificate: %d", rec.Code)
		}
		if drawer := f.do(t, as("root"), "GET", "/inventory?cert="+id, "").Body.String(); !strings.Contains(drawer, `id="export-bundle"`) || !strings.Contains(drawer, `id="export-pkcs12"`) {
			t.Fatal("the admin's drawer has no key export")
		}
		rec := f.postForm(t, "root", "/inventory/"+id+"/export", url.Values{"format": {"bundle"}})
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), keyLine(good)) || !strings.Contains(rec.Header().Get("Content-Disposition"), "attachment") {
			t.Fatalf("admin bundle export: %d %v", rec.Code, rec.Header())
		}
		rec = f.postForm(t, "root", "/inventory/"+id+"/export", url.Values{"format": {"pkcs12"}, "password": {"short"}})
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), "at least 8 characters") {
			t.Fatalf("short PKCS #12 password: %d %s", rec.Code, rec.Body)
		}
		rec = f.postForm(t, "root", "/inventory/"+id+"/export", url.Values{"format": {"pkcs12"}, "password": {"correct horse"}})
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/x-pkcs12" {
			t.Fatalf("PKCS #12 export: %d %v", rec.Code, rec.Header())
		}
		es, _, _ := f.app.AuditLog(t.Context(), storage.AuditFilter{Action: "certificate.export", Target: id}, storage.Page{Limit: storage.MaxLimit})
		allowed, refused := 0, 0
		for _, e := range es {
			var dd struct{ Allowed bool }
			_ = json.Unmarshal(e.Details, &dd)
			if dd.Allowed {
				allowed++
			} else {
				refused++
			}
		}
		if allowed < 2 || refused < 1 {
			t.Fatalf("audited exports: %d allowed, %d refused", allowed, refused)
		}
		// the key is nowhere but in the admin's download
		f.everywhere(t, []string{"/inventory", "/inventory?cert=" + id, "/api/certificates/" + id, "/api/certificates", "/audit"}, keyLine(good), keyLine(other))
	})
}
