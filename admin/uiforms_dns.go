package admin

// The DNS provider forms: one per type (Cloudflare, RFC 2136, delegated,
// installed dns.providers modules), the provider's page with Verify and the
// delegation CNAME.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/storage"
)

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

// tsigAlgs are the TSIG algorithms an RFC 2136 form offers.
var tsigAlgs = []string{"hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5"}

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
		KeyAlgs: tsigAlgs}
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
	creds, field, msg := dnsCredentials(f, typ)
	if msg != "" {
		return fail(http.StatusBadRequest, field, msg)
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

// dnsCredentials reads the credentials of a provider client of type typ
// from its form (nil for a delegated zone); on bad input it returns the
// form field at fault and the message.
func dnsCredentials(f url.Values, typ string) (creds map[string]any, field, msg string) {
	creds = map[string]any{}
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
			return nil, "type", err.Error()
		}
		if extra := strings.TrimSpace(f.Get("module_json")); extra != "" {
			if err := json.Unmarshal([]byte(extra), &creds); err != nil || creds == nil {
				return nil, "module_json", "the extra JSON must be a JSON object of the module's fields"
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
					return nil, "cred_" + mf.Name, mf.Name + " must be a number"
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
		return nil, "type", fmt.Sprintf("no DNS provider type %q: pick one of the types listed", typ)
	}
	return creds, "", ""
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
	// ReadOnly is true for a provider client declared in the config.
	ReadOnly bool
	// Form is the edit form's values (as stored, or as posted when
	// refused, never credentials), ErrField the field at fault; Groups
	// the group choice, KeyAlgs the TSIG algorithms, Fields a module's.
	Form     url.Values
	ErrField string
	Groups   []string
	KeyAlgs  []string
	Fields   []moduleField
}

// dnsProviderPage shows one provider client: its settings, the last
// verification check by check, and for a delegated one the CNAME a name
// needs (?name=).
func (u *UI) dnsProviderPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	return u.renderDNSProviderPage(w, r, app, d, id, http.StatusOK, nil, "")
}

// renderDNSProviderPage shows a provider client's page, its edit form
// filled in with form (nil: the stored values).
func (u *UI) renderDNSProviderPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string, status int, form url.Values, field string) error {
	p, err := app.DNS().Get(r.Context(), id)
	if err != nil {
		return err
	}
	v := dnsproviders.NewView(p)
	if form == nil {
		form = dnsEditValues(v)
	}
	data := dnsPageData{View: v, Delegated: v.Type == dnsproviders.TypeDelegated, CanMutate: d.Session.User.CanMutate(),
		ReadOnly: v.ManagedBy == storage.ManagedByConfig, Form: form, ErrField: field, KeyAlgs: tsigAlgs}
	if data.CanMutate && !data.ReadOnly {
		data.Groups = editGroups(r, app, d.Session, v.Group)
		if strings.HasPrefix(v.Type, "dns.providers.") {
			data.Fields, _ = moduleFields(v.Type)
		}
	}
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
	u.pages.render(w, status, "dnsprovider", d)
	return nil
}
