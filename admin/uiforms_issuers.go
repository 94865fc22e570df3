package admin

// The ACME client forms: the catalog picker, creation, the client's page
// with its directory meta, rollover and deactivation.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/storage"
)

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
	// Form is the edit form's values (as stored, or as posted when
	// refused), ErrField the field at fault; Groups the group choice.
	Form     url.Values
	ErrField string
	Groups   []string
}

func (u *UI) issuerPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string, status int) error {
	return u.renderIssuerPage(w, r, app, d, id, status, nil, "")
}

// renderIssuerPage shows an ACME client's page, its edit form filled in
// with form (nil: the stored values).
func (u *UI) renderIssuerPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string, status int, form url.Values, field string) error {
	iss, err := app.IssuerRegistry().Get(r.Context(), id)
	if err != nil {
		return err
	}
	v := issuers.NewView(iss)
	if form == nil {
		form = issuerEditValues(v)
	}
	data := issuerPageData{View: v, KeyTypes: issuers.KeyTypes, CanMutate: d.Session.User.CanMutate(),
		ReadOnly: v.ManagedBy == storage.ManagedByConfig, Form: form, ErrField: field}
	if data.CanMutate && !data.ReadOnly {
		data.Groups = editGroups(r, app, d.Session, v.Group)
	}
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
