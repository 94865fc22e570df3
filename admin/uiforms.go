package admin

// The UI's forms: ACME clients (catalog picker, EAB, rollover, deactivate),
// DNS provider clients (Cloudflare, RFC 2136, delegated challenge zones,
// any installed dns.providers.* module, Verify), the new order's preview,
// and inventory import and export. Every form posts to the admin API's
// handlers through callAPI, so validation, group scope and audit are the
// module services' and the same as the JSON API's. Secret fields (EAB MAC
// key, DNS credentials, private keys) are never written back into a page,
// not even into a form shown again after an error.
//
// This file routes the forms and holds what they share; each area has its
// own file: uiforms_issuers.go, uiforms_dns.go, uiforms_order.go,
// uiforms_inventory.go.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
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
	case n == 3 && at(0) == "issuers" && at(2) == "edit" && post:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.issuerEditForm(w, r, app, d, parts[1])
		}
	case n == 3 && at(0) == "issuers" && at(2) == "delete" && post:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.issuerDeleteForm(w, r, app, d, parts[1])
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
	case n == 3 && at(0) == "dns-providers" && at(2) == "edit" && post:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.dnsEditForm(w, r, app, d, parts[1])
		}
	case n == 3 && at(0) == "dns-providers" && at(2) == "delete" && post:
		return func(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
			return u.dnsDeleteForm(w, r, app, d, parts[1])
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
