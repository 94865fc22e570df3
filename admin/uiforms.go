package admin

// The UI's forms: ACME clients (catalog picker, EAB, rollover, deactivate),
// DNS provider clients (Cloudflare, RFC 2136, delegated challenge zones,
// any installed dns.providers.* module, Verify), the new order's preview,
// and inventory import and export. Every form posts to the admin API's
// handlers through callAPI, so validation, group scope and audit are the
// module services' and the same as the JSON API's. Secret fields (EAB MAC
// key, DNS credentials, private keys) are never written back into a page,
// not even into a form shown again after an error.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/storage"
)

// pageHandler renders one screen or handles one form post.
type pageHandler func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error

// formRoute returns the handler of the forms' paths, or nil for paths
// servePage routes itself.
func (u *UI) formRoute(r *http.Request, parts []string) pageHandler {
	get, post := r.Method == http.MethodGet, r.Method == http.MethodPost
	n := len(parts)
	at := func(i int) string {
		if i < n {
			return parts[i]
		}
		return ""
	}
	switch {
	case n == 2 && at(0) == "issuers" && at(1) == "new" && get:
		return u.mutatorsOnly(u.issuerFormPage)
	case n == 1 && at(0) == "issuers" && post:
		return u.createIssuerForm
	case n == 2 && at(0) == "issuers" && get:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.issuerPage(w, r, app, d, parts[1], http.StatusOK)
		}
	case n == 3 && at(0) == "issuers" && post:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.issuerActionForm(w, r, app, d, parts[1], parts[2])
		}
	case n == 2 && at(0) == "dns-providers" && at(1) == "new" && get:
		return u.mutatorsOnly(func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.dnsFormPage(w, r, app, d, r.URL.Query().Get("type"), http.StatusOK, "")
		})
	case n == 1 && at(0) == "dns-providers" && post:
		return u.createDNSForm
	case n == 2 && at(0) == "dns-providers" && get:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.dnsProviderPage(w, r, app, d, parts[1])
		}
	case n == 3 && at(0) == "dns-providers" && at(2) == "verify" && post:
		return func(w http.ResponseWriter, r *http.Request, _ *certlocker.App, _ pageData) error {
			id := url.PathEscape(parts[1])
			u.formAction(w, r, "dns-providers/"+id+"/actions/verify", "/dns-providers/"+id)
			return nil
		}
	case n == 1 && at(0) == "workflows" && post && r.PostFormValue("preview") != "":
		return u.previewOrder
	case n == 2 && at(0) == "inventory" && at(1) == "import" && get:
		return u.mutatorsOnly(func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.importPage(w, r, app, d, nil, http.StatusOK)
		})
	case n == 2 && at(0) == "inventory" && at(1) == "import" && post:
		return u.importForm
	case n == 3 && at(0) == "inventory" && at(2) == "export" && post:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.exportForm(w, r, parts[1])
		}
	}
	return nil
}

// mutatorsOnly refuses a form page to viewers: they get no controls that
// change anything (their posts are refused before any handler runs).
func (u *UI) mutatorsOnly(h pageHandler) pageHandler {
	return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
		if !d.Session.User.CanMutate() {
			return &Error{Status: http.StatusForbidden, Message: "viewers cannot change anything: ask an admin for the operator role"}
		}
		return h(w, r, app, d)
	}
}

// apiResult is an admin API answer a form post got.
type apiResult struct {
	Status  int
	Message string
	Field   string
	Problem *acme.Problem
}

func resultOf(code int, body []byte) apiResult {
	var e struct {
		Error   string        `json:"error"`
		Field   string        `json:"field"`
		Problem *acme.Problem `json:"problem"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Error == "" && code >= 300 {
		e.Error = http.StatusText(code)
	}
	return apiResult{Status: code, Message: e.Error, Field: e.Field, Problem: e.Problem}
}

// splitList splits a form field holding a list: commas, spaces or lines.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// keepFields copies the form values that may be shown again, without the
// CSRF token and the named secret fields.
func keepFields(form url.Values, secret ...string) url.Values {
	out := url.Values{}
	for k, v := range form {
		if k == csrfField || slices.Contains(secret, k) {
			continue
		}
		out[k] = v
	}
	return out
}

// formGroups lists the groups seen on the records the user can see, for
// the group choice of a form.
func formGroups(r *http.Request, app *certlocker.App, s *session) []string {
	seen := []string{}
	if list, err := app.IssuerRegistry().List(r.Context(), storage.IssuerFilter{}); err == nil {
		for _, iss := range list {
			seen = append(seen, iss.Group)
		}
	}
	if list, err := app.DNS().List(r.Context(), ""); err == nil {
		for _, p := range list {
			seen = append(seen, p.Group)
		}
	}
	return groupsOf(s, seen...)
}

// ---- ACME clients ----

type issuerFormData struct {
	Catalog  []issuers.CatalogEntry
	KeyTypes []string
	Groups   []string
	Form     url.Values
	ErrField string
	Problem  *acme.Problem
}

func (u *UI) issuerFormPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	return u.renderIssuerForm(w, r, app, d, nil, http.StatusOK, "", nil)
}

func (u *UI) renderIssuerForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, form url.Values, status int, field string, problem *acme.Problem) error {
	if form == nil {
		form = url.Values{}
		if id := r.URL.Query().Get("catalog_id"); id != "" {
			form.Set("catalog_id", id)
		}
	}
	d.Title, d.Nav = "New ACME client", "issuers"
	d.Data = issuerFormData{Catalog: issuers.Catalog(), KeyTypes: issuers.KeyTypes, Groups: formGroups(r, app, d.Session),
		Form: form, ErrField: field, Problem: problem}
	u.pages.render(w, status, "issuer-new", d)
	return nil
}

// createIssuerForm posts the new-ACME-client form as POST /issuers: the
// account is registered at the CA, then the client stored; on any error
// the form comes back with the message, without the EAB MAC key.
func (u *UI) createIssuerForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	f := r.PostForm
	req := createIssuerRequest{Name: strings.TrimSpace(f.Get("name")), CatalogID: f.Get("catalog_id"),
		DirectoryURL: strings.TrimSpace(f.Get("directory_url")), Contacts: splitList(f.Get("contacts")),
		EABKeyID: strings.TrimSpace(f.Get("eab_key_id")), EABMACKey: strings.TrimSpace(f.Get("eab_mac_key")),
		AccountKeyType: f.Get("account_key_type"), Profile: strings.TrimSpace(f.Get("profile")),
		PreferredChain: strings.TrimSpace(f.Get("preferred_chain")), CustomRootsPEM: f.Get("custom_roots_pem"),
		Group: strings.TrimSpace(f.Get("group")), AgreeTerms: f.Get("agree_terms") != ""}
	if e, ok := issuers.LookupCatalog(req.CatalogID); ok {
		for _, p := range e.Params {
			if v := strings.TrimSpace(f.Get("param_" + p.Name)); v != "" {
				if req.DirectoryParams == nil {
					req.DirectoryParams = map[string]string{}
				}
				req.DirectoryParams[p.Name] = v
			}
		}
	}
	if req.CatalogID == issuers.CustomCatalogID && req.DirectoryURL == "" {
		d.Error = "a custom ACME directory needs its directory URL (https://…/directory)"
		return u.renderIssuerForm(w, r, app, d, keepFields(f, "eab_mac_key"), http.StatusBadRequest, "directory_url", nil)
	}
	b, _ := json.Marshal(req)
	rec := u.callAPI(r, http.MethodPost, "issuers", string(b))
	if rec.Code != http.StatusCreated {
		res := resultOf(rec.Code, rec.Body.Bytes())
		d.Error = res.Message
		if req.EABMACKey != "" {
			d.Error += " (the EAB MAC key is not shown again: enter it once more)"
		}
		return u.renderIssuerForm(w, r, app, d, keepFields(f, "eab_mac_key"), rec.Code, res.Field, res.Problem)
	}
	var v issuers.View
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	http.Redirect(w, r, "/issuers/"+url.PathEscape(v.ID)+"?flash="+url.QueryEscape("ACME client created: the account is registered"), http.StatusSeeOther)
	return nil
}

type profileRow struct{ Name, Description string }

type issuerPageData struct {
	issuers.View
	Entry    *issuers.CatalogEntry
	KeyTypes []string
	Profiles []profileRow
	// CanMutate shows the actions; ReadOnly says why some are missing.
	CanMutate bool
	ReadOnly  bool
}

func (u *UI) issuerPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string, status int) error {
	iss, err := app.IssuerRegistry().Get(r.Context(), id)
	if err != nil {
		return err
	}
	v := issuers.NewView(iss)
	data := issuerPageData{View: v, KeyTypes: issuers.KeyTypes, CanMutate: d.Session.User.CanMutate(),
		ReadOnly: v.ManagedBy == storage.ManagedByConfig}
	if e, ok := issuers.LookupCatalog(v.CatalogID); ok {
		data.Entry = &e
	}
	if v.Meta != nil {
		for _, n := range v.Meta.ProfileNames() {
			data.Profiles = append(data.Profiles, profileRow{n, v.Meta.Profiles[n]})
		}
	}
	d.Title, d.Nav, d.Data = "ACME client "+v.Name, "issuers", data
	u.pages.render(w, status, "issuer", d)
	return nil
}

// issuerActionForm runs refresh, test, rollover (new key type) or
// deactivate; the last two change the account at the CA for good and need
// the form's confirmation.
func (u *UI) issuerActionForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id, action string) error {
	back := "/issuers/" + url.PathEscape(id)
	apiPath := "issuers/" + url.PathEscape(id) + "/actions/" + url.PathEscape(action)
	switch action {
	case "rollover", "deactivate":
	default:
		u.formAction(w, r, apiPath, back)
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	if r.PostForm.Get("confirm") != "yes" {
		// the record must exist in the user's groups before anything is said about it
		if _, err := app.IssuerRegistry().Get(r.Context(), id); err != nil {
			return err
		}
		d.Error = "tick the confirmation box: " + map[string]string{
			"rollover":   "a rollover replaces the account key at the CA",
			"deactivate": "deactivation ends the account at the CA for good",
		}[action]
		return u.issuerPage(w, r, app, d, id, http.StatusBadRequest)
	}
	body := ""
	if action == "rollover" {
		b, _ := json.Marshal(map[string]string{"account_key_type": r.PostForm.Get("account_key_type")})
		body = string(b)
	}
	rec := u.callAPI(r, http.MethodPost, apiPath, body)
	if rec.Code >= 300 {
		res := resultOf(rec.Code, rec.Body.Bytes())
		if rec.Code == http.StatusNotFound {
			return &Error{Status: rec.Code, Message: res.Message}
		}
		d.Error = res.Message
		if res.Problem != nil && res.Problem.Detail != "" {
			d.Error += ": the CA says " + res.Problem.Detail
		}
		return u.issuerPage(w, r, app, d, id, rec.Code)
	}
	msg := map[string]string{"rollover": "account key rolled over", "deactivate": "account deactivated"}[action]
	http.Redirect(w, r, back+"?flash="+url.QueryEscape(msg), http.StatusSeeOther)
	return nil
}

// ---- DNS providers ----

// dnsType is one kind of DNS provider client the form offers.
type dnsType struct {
	ID, Label, Hint string
}

func dnsTypes() []dnsType {
	out := []dnsType{
		{dnsproviders.TypeCloudflare, "Cloudflare", "Built in: an API token with Zone → DNS → Edit on the zones."},
		{dnsproviders.TypeRFC2136, "RFC 2136 (BIND, Knot, PowerDNS)", "Built in: dynamic updates signed with a TSIG key."},
		{dnsproviders.TypeDelegated, "Delegated challenge zone", "No DNS credentials: CertLocker serves a challenge zone, each name delegates with one CNAME."},
	}
	for _, m := range caddy.GetModules("dns.providers") {
		id := string(m.ID)
		out = append(out, dnsType{id, "Module " + id, "An installed Caddy DNS module, configured by its own JSON fields."})
	}
	return out
}

// moduleField is one config field of an installed dns.providers module,
// found from its Go type's JSON tags.
type moduleField struct {
	Name string
	// Kind is text, password, number, bool, list or duration.
	Kind string
}

var durationT = reflect.TypeFor[caddy.Duration]()

// moduleFields lists the JSON fields a dns.providers module accepts that a
// form can fill in (strings, numbers, booleans, string lists, durations);
// anything else goes through the form's extra JSON.
func moduleFields(id string) ([]moduleField, error) {
	info, err := caddy.GetModule(id)
	if err != nil || info.ID.Namespace() != "dns.providers" {
		return nil, fmt.Errorf("type %s: no such dns.providers module is installed in this binary", id)
	}
	t := reflect.TypeOf(info.New())
	var out []moduleField
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			if tag == "-" || name == "-" {
				continue
			}
			if f.Anonymous && name == "" {
				walk(f.Type)
				continue
			}
			if !f.IsExported() || name == "" {
				continue
			}
			k := ""
			switch {
			case f.Type == durationT:
				k = "duration"
			case f.Type.Kind() == reflect.String:
				k = "text"
				if secretName(name) {
					k = "password"
				}
			case f.Type.Kind() == reflect.Bool:
				k = "bool"
			case f.Type.Kind() >= reflect.Int && f.Type.Kind() <= reflect.Float64:
				k = "number"
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
				k = "list"
			default:
				continue
			}
			if !slices.ContainsFunc(out, func(m moduleField) bool { return m.Name == name }) {
				out = append(out, moduleField{Name: name, Kind: k})
			}
		}
	}
	walk(t)
	return out, nil
}

// secretNameRe: field names whose values are treated as secrets (password
// inputs, never shown again), as the DNS store's placeholder rule does.
var secretNameRe = regexp.MustCompile(`(?i)(token|secret|password|passwd|key$|^key|_key|apikey|credential|auth)`)

func secretName(n string) bool { return secretNameRe.MatchString(n) }

type dnsFormData struct {
	Type     dnsType
	Types    []dnsType
	Fields   []moduleField
	Groups   []string
	Served   []string
	KeyAlgs  []string
	Form     url.Values
	ErrField string
}

// dnsSecretFields are the credential fields of the built-in types.
var dnsSecretFields = []string{"api_token", "zone_token", "key", "module_json"}

func (u *UI) dnsFormPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, typ string, status int, field string) error {
	types := dnsTypes()
	if typ == "" {
		typ = dnsproviders.TypeCloudflare
	}
	i := slices.IndexFunc(types, func(t dnsType) bool { return t.ID == typ })
	if i < 0 {
		return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no DNS provider type %q here: pick one of the types listed on the form", typ)}
	}
	data := dnsFormData{Type: types[i], Types: types, Groups: formGroups(r, app, d.Session), Form: url.Values{}, ErrField: field,
		KeyAlgs: []string{"hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5"}}
	if r.Method == http.MethodPost {
		data.Form = keepFields(r.PostForm, dnsSecretFields...)
	}
	if strings.HasPrefix(typ, "dns.providers.") {
		fields, err := moduleFields(typ)
		if err != nil {
			return &Error{Status: http.StatusNotFound, Message: err.Error()}
		}
		data.Fields = fields
		for _, f := range fields {
			if f.Kind == "password" {
				data.Form.Del("cred_" + f.Name)
			}
		}
	}
	for _, z := range app.ChallengeZones {
		data.Served = append(data.Served, z.Zone)
	}
	d.Title, d.Nav, d.Data = "New DNS provider", "dns", data
	u.pages.render(w, status, "dnsprovider-new", d)
	return nil
}

// createDNSForm posts the DNS provider form as POST /dns-providers.
func (u *UI) createDNSForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	f := r.PostForm
	typ := f.Get("type")
	body := map[string]any{"name": strings.TrimSpace(f.Get("name")), "type": typ, "zones": splitList(f.Get("zones"))}
	for _, k := range []string{"group", "account_id", "ttl", "propagation_timeout"} {
		if v := strings.TrimSpace(f.Get(k)); v != "" {
			body[k] = v
		}
	}
	for _, k := range []string{"resolvers", "nameservers"} {
		if v := splitList(f.Get(k)); len(v) > 0 {
			body[k] = v
		}
	}
	fail := func(status int, field, msg string) error {
		d.Error = msg
		if secretSent(f) {
			d.Error += " (secret fields are not shown again: enter them once more)"
		}
		if !slices.ContainsFunc(dnsTypes(), func(t dnsType) bool { return t.ID == typ }) {
			typ = ""
		}
		return u.dnsFormPage(w, r, app, d, typ, status, field)
	}
	creds := map[string]any{}
	switch {
	case typ == dnsproviders.TypeCloudflare:
		creds["api_token"] = strings.TrimSpace(f.Get("api_token"))
		if v := strings.TrimSpace(f.Get("zone_token")); v != "" {
			creds["zone_token"] = v
		}
	case typ == dnsproviders.TypeRFC2136:
		for _, k := range []string{"server", "key_name", "key_alg", "key"} {
			if v := strings.TrimSpace(f.Get(k)); v != "" {
				creds[k] = v
			}
		}
	case typ == dnsproviders.TypeDelegated:
		creds = nil
	case strings.HasPrefix(typ, "dns.providers."):
		fields, err := moduleFields(typ)
		if err != nil {
			return fail(http.StatusBadRequest, "type", err.Error())
		}
		if extra := strings.TrimSpace(f.Get("module_json")); extra != "" {
			if err := json.Unmarshal([]byte(extra), &creds); err != nil || creds == nil {
				return fail(http.StatusBadRequest, "module_json", "the extra JSON must be a JSON object of the module's fields")
			}
		}
		for _, mf := range fields {
			raw := strings.TrimSpace(f.Get("cred_" + mf.Name))
			if raw == "" && mf.Kind != "bool" {
				continue
			}
			switch mf.Kind {
			case "number":
				n, err := strconv.ParseFloat(raw, 64)
				if err != nil {
					return fail(http.StatusBadRequest, "cred_"+mf.Name, mf.Name+" must be a number")
				}
				creds[mf.Name] = n
			case "bool":
				if raw != "" {
					creds[mf.Name] = true
				}
			case "list":
				creds[mf.Name] = splitList(raw)
			default:
				creds[mf.Name] = raw
			}
		}
	default:
		return fail(http.StatusBadRequest, "type", fmt.Sprintf("no DNS provider type %q: pick one of the types listed", typ))
	}
	if creds != nil {
		body["credentials"] = creds
	}
	b, _ := json.Marshal(body)
	rec := u.callAPI(r, http.MethodPost, "dns-providers", string(b))
	if rec.Code != http.StatusCreated {
		res := resultOf(rec.Code, rec.Body.Bytes())
		return fail(rec.Code, formFieldOf(res.Field, typ), res.Message)
	}
	var v dnsproviders.View
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	http.Redirect(w, r, "/dns-providers/"+url.PathEscape(v.ID)+"?flash="+url.QueryEscape("DNS provider created: press Verify to check it"), http.StatusSeeOther)
	return nil
}

// secretSent reports whether the post carried any secret field.
func secretSent(f url.Values) bool {
	for k, v := range f {
		if len(v) == 0 || v[0] == "" {
			continue
		}
		if slices.Contains(dnsSecretFields, k) || (strings.HasPrefix(k, "cred_") && secretName(strings.TrimPrefix(k, "cred_"))) {
			return true
		}
	}
	return false
}

// formFieldOf maps the API's field name ("credentials.api_token",
// "zones[0]") to the form's input.
func formFieldOf(apiField, typ string) string {
	f, _, _ := strings.Cut(apiField, "[")
	if c, ok := strings.CutPrefix(f, "credentials."); ok {
		if strings.HasPrefix(typ, "dns.providers.") {
			return "cred_" + c
		}
		return c
	}
	if f == "credentials" && strings.HasPrefix(typ, "dns.providers.") {
		return "module_json"
	}
	return f
}

type dnsPageData struct {
	dnsproviders.View
	Verification *dnsproviders.Verification
	Delegated    bool
	LookupName   string
	Delegation   *dnsproviders.Delegation
	CanMutate    bool
}

// dnsProviderPage shows one provider client: its settings, the last
// verification check by check, and for a delegated one the CNAME a name
// needs (?name=).
func (u *UI) dnsProviderPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	p, err := app.DNS().Get(r.Context(), id)
	if err != nil {
		return err
	}
	v := dnsproviders.NewView(p)
	data := dnsPageData{View: v, Delegated: v.Type == dnsproviders.TypeDelegated, CanMutate: d.Session.User.CanMutate()}
	if len(v.Verification) > 0 {
		var ver dnsproviders.Verification
		if json.Unmarshal(v.Verification, &ver) == nil {
			data.Verification = &ver
		}
	}
	if name := strings.TrimSpace(r.URL.Query().Get("name")); name != "" && data.Delegated {
		data.LookupName = name
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		dl, err := app.DNS().Delegation(ctx, p.ID, name)
		cancel()
		var ie *dnsproviders.InputError
		switch {
		case errors.As(err, &ie):
			d.Error = ie.Message
		case err != nil:
			d.Error = "looking up the CNAME failed: " + err.Error()
		default:
			data.Delegation = &dl
		}
	}
	d.Title, d.Nav, d.Data = "DNS provider "+v.Name, "dns", data
	u.pages.render(w, http.StatusOK, "dnsprovider", d)
	return nil
}

// ---- New order: issuer information and preview ----

// issuerChoice is a configured ACME client with its catalog entry.
type issuerChoice struct {
	issuers.View
	Entry *issuers.CatalogEntry
}

func issuerChoices(views []issuers.View) []issuerChoice {
	out := make([]issuerChoice, 0, len(views))
	for _, v := range views {
		c := issuerChoice{View: v}
		if e, ok := issuers.LookupCatalog(v.CatalogID); ok {
			c.Entry = &e
		}
		out = append(out, c)
	}
	return out
}

// orderPreview is what the order would do, hostname by hostname.
type orderPreview struct {
	Issuer *issuerChoice
	Steps  []string
	Rows   []previewRow
	// Problems are what would stop the order; the CA is not asked.
	Problems []string
}

type previewRow struct {
	Name, Challenge, Provider, ProviderType string
	Steps                                   []string
	CNAME                                   string
	CNAMEOK                                 bool
	Problem                                 string
}

// formIdentifiers reads the new-order form's hostnames: one per line,
// each optionally followed by its challenge; dns-01 names get the chosen
// DNS provider, or the one whose zone matches.
func formIdentifiers(r *http.Request, app *certlocker.App) []storage.Identifier {
	var out []storage.Identifier
	for _, line := range strings.Split(r.PostForm.Get("identifiers"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		id := storage.Identifier{Value: f[0], Challenge: r.PostForm.Get("challenge")}
		if len(f) > 1 {
			id.Challenge = f[1]
		}
		if id.Challenge == "dns-01" || (id.Challenge == "" && strings.HasPrefix(id.Value, "*.")) {
			id.DNSProviderID = r.PostForm.Get("dns_provider_id")
			if id.DNSProviderID == "" {
				id.DNSProviderID = zoneProvider(r, app, id.Value)
			}
		}
		out = append(out, id)
	}
	return out
}

// previewOrder shows the new-order form again with what the order would
// do; nothing is created and the CA is not contacted.
func (u *UI) previewOrder(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	pv := &orderPreview{}
	if id := r.PostForm.Get("issuer_id"); id != "" {
		iss, err := app.IssuerRegistry().Get(r.Context(), id)
		if err == nil {
			c := issuerChoices([]issuers.View{issuers.NewView(iss)})[0]
			pv.Issuer = &c
		}
	}
	if pv.Issuer == nil {
		pv.Problems = append(pv.Problems, "choose an ACME client")
	} else {
		ca := pv.Issuer.CatalogName
		if ca == "" {
			ca = pv.Issuer.DirectoryURL
		}
		switch pv.Issuer.Status {
		case issuers.StatusValid:
			pv.Steps = append(pv.Steps, fmt.Sprintf("Place the order with %s through the account of %q.", ca, pv.Issuer.Name))
		case issuers.StatusDeactivated:
			pv.Problems = append(pv.Problems, fmt.Sprintf("the ACME client %q is deactivated: its account can place no order", pv.Issuer.Name))
		default:
			pv.Steps = append(pv.Steps, fmt.Sprintf("Register the account of %q at %s first (it is %s), then place the order.", pv.Issuer.Name, ca, pv.Issuer.Status))
		}
	}
	ids := formIdentifiers(r, app)
	if len(ids) == 0 {
		pv.Problems = append(pv.Problems, "give at least one hostname")
	}
	for _, id := range ids {
		pv.Rows = append(pv.Rows, u.previewIdentifier(r, app, id))
	}
	for _, row := range pv.Rows {
		if row.Problem != "" {
			pv.Problems = append(pv.Problems, row.Name+": "+row.Problem)
		}
	}
	key := r.PostForm.Get("key_type")
	if key == "" {
		key = "p256"
	}
	pv.Steps = append(pv.Steps,
		"Answer each hostname's challenge as listed below; the CA validates them all.",
		fmt.Sprintf("Finalize with a new %s key generated by CertLocker (the key never leaves it unencrypted).", key),
		"Download the certificate and chain and add them to the inventory; renewals follow automatically.")
	group := r.PostForm.Get("group")
	if group != "" {
		pv.Steps[len(pv.Steps)-1] += " The certificate belongs to group " + group + "."
	}
	return u.newOrderPage(w, r, app, d, http.StatusOK, pv)
}

func (u *UI) previewIdentifier(r *http.Request, app *certlocker.App, id storage.Identifier) previewRow {
	row := previewRow{Name: id.Value, Challenge: id.Challenge}
	base := strings.TrimPrefix(id.Value, "*.")
	if row.Challenge == "" {
		row.Challenge = "http-01"
		if strings.HasPrefix(id.Value, "*.") {
			row.Challenge = "dns-01"
		}
	}
	switch row.Challenge {
	case "http-01":
		if strings.HasPrefix(id.Value, "*.") {
			row.Problem = "a wildcard needs dns-01"
			return row
		}
		row.Steps = []string{
			"The CA fetches http://" + id.Value + "/.well-known/acme-challenge/<token>.",
			"Any CertLocker node running certlocker_challenge on port 80 answers it from storage: " + id.Value + " must resolve to one.",
		}
	case "dns-01":
		if id.DNSProviderID == "" {
			row.Problem = "no DNS provider of yours covers this zone: add one on the DNS providers screen, or pick one"
			return row
		}
		p, err := app.DNS().Get(r.Context(), id.DNSProviderID)
		if err != nil {
			row.Problem = "the chosen DNS provider is not one of yours"
			return row
		}
		row.Provider, row.ProviderType = p.Name, p.Type
		rec := "_acme-challenge." + base
		if p.Type == dnsproviders.TypeDelegated {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			dl, err := app.DNS().Delegation(ctx, p.ID, base)
			cancel()
			if err != nil {
				row.Problem = "checking the delegation failed: " + err.Error()
				return row
			}
			row.CNAME, row.CNAMEOK = dl.CNAME, dl.OK
			if dl.Direct {
				row.Steps = []string{"Store TXT " + rec + " in the served challenge zone " + dl.Zone + ": CertLocker's DNS server answers it."}
			} else {
				row.Steps = []string{"Store TXT " + dl.Target + ", which CertLocker's DNS server answers; the CA reaches it through the CNAME " + rec + "."}
				if !dl.OK {
					row.Problem = "the CNAME is missing: add " + dl.CNAME + " to the zone of " + base + " (" + dl.Message + ")"
				}
			}
		} else {
			zone := ""
			for _, z := range p.Zones {
				if (base == z || strings.HasSuffix(base, "."+z)) && len(z) > len(zone) {
					zone = z
				}
			}
			if zone == "" {
				row.Problem = fmt.Sprintf("DNS provider %q may not publish in this name's zone (its zones: %s)", p.Name, strings.Join(p.Zones, ", "))
				return row
			}
			row.Steps = []string{
				fmt.Sprintf("Publish TXT %s in zone %s through %s (%s).", rec, zone, p.Name, p.Type),
				"Wait until every authoritative nameserver of " + zone + " serves it.",
			}
		}
		row.Steps = append(row.Steps, "Ask the CA to validate; remove the record afterwards.")
		if p.Status != dnsproviders.StatusVerified {
			row.Steps = append(row.Steps, fmt.Sprintf("Note: %s is %s — press Verify on its page first to catch credential problems now.", p.Name, p.Status))
		}
	default:
		row.Problem = "challenge must be dns-01 or http-01"
	}
	return row
}

// ---- Inventory import and export ----

type importData struct {
	Groups   []string
	Form     url.Values
	ErrField string
}

func (u *UI) importPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, form url.Values, status int) error {
	if form == nil {
		form = url.Values{}
	}
	field := form.Get("_field")
	form.Del("_field")
	d.Title, d.Nav = "Import certificates", "inventory"
	d.Data = importData{Groups: formGroups(r, app, d.Session), Form: form, ErrField: field}
	u.pages.render(w, status, "import", d)
	return nil
}

// maxImportFile caps each uploaded PEM file.
const maxImportFile = 256 << 10

// importForm imports a pasted or uploaded PEM chain (with its key, in the
// chain or apart) through POST /certificates, then opens it in the
// inventory's drawer. The key is never shown again, not even when the
// import fails.
func (u *UI) importForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	if err := r.ParseMultipartForm(MaxBodyBytes); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return BadRequest("", "reading the form: %v", err)
	}
	pemText, keyText := r.PostFormValue("pem"), r.PostFormValue("key_pem")
	keep := url.Values{"group": {r.PostFormValue("group")}}
	fail := func(status int, field, msg string) error {
		d.Error = msg
		keep.Set("_field", field)
		if !strings.Contains(pemText, "PRIVATE KEY") {
			keep.Set("pem", pemText)
		}
		return u.importPage(w, r, app, d, keep, status)
	}
	for field, dst := range map[string]*string{"pem_file": &pemText, "key_file": &keyText} {
		b, err := formFile(r, field)
		if err != nil {
			return fail(http.StatusBadRequest, field, err.Error())
		}
		if b != nil {
			*dst = string(b)
		}
	}
	if strings.TrimSpace(pemText) == "" {
		return fail(http.StatusBadRequest, "pem", "paste the certificate and its chain (PEM), or choose a file")
	}
	b, _ := json.Marshal(importCertificateRequest{PEM: pemText, KeyPEM: keyText, Group: r.PostFormValue("group")})
	rec := u.callAPI(r, http.MethodPost, "certificates", string(b))
	if rec.Code != http.StatusCreated && rec.Code != http.StatusOK {
		res := resultOf(rec.Code, rec.Body.Bytes())
		field := res.Field
		if field == "pem" && r.MultipartForm != nil && len(r.MultipartForm.File["pem_file"]) > 0 {
			field = "pem_file"
		}
		return fail(rec.Code, field, importMessage(res))
	}
	var out struct {
		Created     bool           `json:"created"`
		Certificate inventory.View `json:"certificate"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	c := out.Certificate
	msg := "certificate imported"
	if !out.Created {
		msg = "this certificate was already in the inventory: nothing changed"
	}
	switch {
	case c.Expiry == "expired":
		msg += fmt.Sprintf(" — warning: it EXPIRED on %s and must be replaced", c.NotAfter.UTC().Format("2006-01-02"))
	case time.Now().Before(c.NotBefore):
		msg += fmt.Sprintf(" — note: it is not valid before %s", c.NotBefore.UTC().Format("2006-01-02 15:04Z"))
	}
	if !c.HasPrivateKey {
		msg += " (no private key: it can be tracked and exported, not served)"
	}
	http.Redirect(w, r, "/inventory?cert="+url.QueryEscape(c.ID)+"&flash="+url.QueryEscape(msg), http.StatusSeeOther)
	return nil
}

// importMessage turns the inventory's refusal into the form's message.
func importMessage(res apiResult) string {
	m := res.Message
	switch res.Field {
	case "pem":
		m = "Certificate chain: " + strings.TrimPrefix(m, "pem: ")
	case "key_pem":
		m = strings.TrimPrefix(m, "key_pem: ")
		if strings.HasPrefix(m, "not PEM") {
			// the parser's words are about chains; this field holds a key
			m = "not PEM: expected a block starting with -----BEGIN PRIVATE KEY----- (or EC/RSA PRIVATE KEY)"
		}
		m = "Private key: " + m
	}
	return m
}

// formFile reads an uploaded file field (nil when none was chosen).
func formFile(r *http.Request, field string) ([]byte, error) {
	if r.MultipartForm == nil || len(r.MultipartForm.File[field]) == 0 {
		return nil, nil
	}
	fh := r.MultipartForm.File[field][0]
	if fh.Size == 0 {
		return nil, nil
	}
	if fh.Size > maxImportFile {
		return nil, fmt.Errorf("%s is larger than %d KiB: a PEM chain is a few KiB", fh.Filename, maxImportFile>>10)
	}
	f, err := fh.Open()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v", fh.Filename, err)
	}
	defer func(f multipart.File) { _ = f.Close() }(f)
	return io.ReadAll(io.LimitReader(f, maxImportFile))
}

// exportForm exports a certificate with its private key (PEM bundle or
// PKCS #12) through the admin API's export, which applies the key export
// policy and audits every attempt. Chain and leaf downloads are plain
// links to /api/certificates/{id}/pem.
func (u *UI) exportForm(w http.ResponseWriter, r *http.Request, id string) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	var rec *httptest.ResponseRecorder
	switch f := r.PostForm.Get("format"); f {
	case inventory.FormatBundle:
		rec = u.callAPI(r, http.MethodGet, "certificates/"+url.PathEscape(id)+"/pem?format=bundle", "")
	case inventory.FormatPKCS12:
		b, _ := json.Marshal(map[string]string{"password": r.PostForm.Get("password")})
		rec = u.callAPI(r, http.MethodPost, "certificates/"+url.PathEscape(id)+"/pkcs12", string(b))
	default:
		return BadRequest("format", "format must be bundle or pkcs12 (chain and leaf are plain downloads)")
	}
	body := rec.Body.Bytes()
	if rec.Code != http.StatusOK {
		return &Error{Status: rec.Code, Message: resultOf(rec.Code, body).Message}
	}
	for _, h := range []string{"Content-Type", "Content-Disposition", "Content-Length"} {
		w.Header().Set(h, rec.Header().Get(h))
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}
