package admin

// The edit and delete forms of an ACME client's and a DNS provider's
// pages. They post to the admin API's PATCH and DELETE handlers through
// callAPI, so validation, group scope, refusals and audit are the same as
// the JSON API's. An ACME client's directory, EAB credentials and key
// type belong to its account at the CA: the form does not offer them (the
// key type changes with a rollover). A DNS provider's credentials are
// never shown: its credential fields start empty, and left empty they
// keep the stored credentials; filled in, they replace them as a whole.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
)

// issuerEditValues is the edit form of an ACME client as stored.
func issuerEditValues(v issuers.View) url.Values {
	return url.Values{"name": {v.Name}, "contacts": {strings.Join(v.Contacts, ", ")}, "profile": {v.Profile},
		"preferred_chain": {v.PreferredChain}, "group": {v.Group}, "version": {strconv.FormatInt(v.Version, 10)}}
}

// issuerEditForm posts an ACME client's edit form as PATCH /issuers/{id}.
// Changed contacts go to the CA first; a refusal comes back on the page
// with what was typed.
func (u *UI) issuerEditForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	f := r.PostForm
	name, contacts, profile := strings.TrimSpace(f.Get("name")), splitList(f.Get("contacts")), strings.TrimSpace(f.Get("profile"))
	chain, group := strings.TrimSpace(f.Get("preferred_chain")), strings.TrimSpace(f.Get("group"))
	if contacts == nil {
		contacts = []string{}
	}
	req := map[string]any{"name": name, "contacts": contacts, "profile": profile, "preferred_chain": chain, "group": group}
	if v := f.Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return BadRequest("version", "version must be a number")
		}
		req["version"] = n
	}
	b, _ := json.Marshal(req)
	rec := u.callAPI(r, http.MethodPatch, "issuers/"+url.PathEscape(id), string(b))
	if rec.Code >= 300 {
		res := resultOf(rec.Code, rec.Body.Bytes())
		if rec.Code == http.StatusNotFound {
			return &Error{Status: rec.Code, Message: res.Message}
		}
		d.Error = res.Message
		if res.Problem != nil && res.Problem.Detail != "" {
			d.Error += ": the CA says " + res.Problem.Detail
		}
		return u.renderIssuerPage(w, r, app, d, id, rec.Code, keepFields(f), res.Field)
	}
	http.Redirect(w, r, "/issuers/"+url.PathEscape(id)+"?flash="+url.QueryEscape("ACME client saved"), http.StatusSeeOther)
	return nil
}

// issuerDeleteForm deletes an ACME client once the form's box is ticked
// (DELETE /issuers/{id}); the account stays at the CA.
func (u *UI) issuerDeleteForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	if r.PostForm.Get("confirm") != "yes" {
		// the record must exist in the user's groups before anything is said about it
		if _, err := app.IssuerRegistry().Get(r.Context(), id); err != nil {
			return err
		}
		d.Error = "tick the confirmation box: deleting forgets the ACME client here (its account stays at the CA)"
		return u.issuerPage(w, r, app, d, id, http.StatusBadRequest)
	}
	rec := u.callAPI(r, http.MethodDelete, "issuers/"+url.PathEscape(id), "")
	if rec.Code >= 300 {
		res := resultOf(rec.Code, rec.Body.Bytes())
		if rec.Code == http.StatusNotFound {
			return &Error{Status: rec.Code, Message: res.Message}
		}
		d.Error = res.Message
		return u.issuerPage(w, r, app, d, id, rec.Code)
	}
	http.Redirect(w, r, "/issuers?flash="+url.QueryEscape("ACME client deleted"), http.StatusSeeOther)
	return nil
}

// dnsEditValues is the edit form of a DNS provider client as stored,
// without its credentials.
func dnsEditValues(v dnsproviders.View) url.Values {
	return url.Values{"name": {v.Name}, "zones": {strings.Join(v.Zones, ", ")}, "account_id": {v.AccountID}, "group": {v.Group},
		"ttl": {v.TTL}, "propagation_timeout": {v.PropagationTimeout}, "resolvers": {strings.Join(v.Resolvers, ", ")},
		"nameservers": {strings.Join(v.Nameservers, ", ")}, "version": {strconv.FormatInt(v.Version, 10)}}
}

// dnsCredentialsGiven reports whether an edit form of type typ carries new
// credentials: the credential fields left empty keep the stored ones.
func dnsCredentialsGiven(f url.Values, typ string) bool {
	switch {
	case typ == dnsproviders.TypeCloudflare:
		return strings.TrimSpace(f.Get("api_token")+f.Get("zone_token")) != ""
	case typ == dnsproviders.TypeRFC2136:
		return strings.TrimSpace(f.Get("server")+f.Get("key_name")+f.Get("key")) != ""
	case strings.HasPrefix(typ, "dns.providers."):
		for k, v := range f {
			if (k == "module_json" || strings.HasPrefix(k, "cred_")) && len(v) > 0 && strings.TrimSpace(v[0]) != "" {
				return true
			}
		}
	}
	return false
}

// dnsEditForm posts a DNS provider's edit form as PATCH
// /dns-providers/{id}. A refusal comes back on the page with what was
// typed, never the credentials.
func (u *UI) dnsEditForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	cur, err := app.DNS().Get(r.Context(), id)
	if err != nil {
		// refused by the API's handler too, so that the refusal is audited
		rec := u.callAPI(r, http.MethodPatch, "dns-providers/"+url.PathEscape(id), "{}")
		return &Error{Status: rec.Code, Message: resultOf(rec.Code, rec.Body.Bytes()).Message}
	}
	f := r.PostForm
	fail := func(status int, field, msg string) error {
		d.Error = msg
		if secretSent(f) {
			d.Error += " (secret fields are not shown again: enter them once more)"
		}
		return u.renderDNSProviderPage(w, r, app, d, cur.ID, status, keepFields(f, dnsSecretFields...), field)
	}
	body := map[string]any{"name": strings.TrimSpace(f.Get("name")), "zones": splitList(f.Get("zones")),
		"account_id": strings.TrimSpace(f.Get("account_id")), "group": strings.TrimSpace(f.Get("group")),
		"resolvers": splitList(f.Get("resolvers")), "nameservers": splitList(f.Get("nameservers"))}
	for _, k := range []string{"ttl", "propagation_timeout"} {
		if v := strings.TrimSpace(f.Get(k)); v != "" {
			body[k] = v
		}
	}
	if v := f.Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fail(http.StatusBadRequest, "version", "version must be a number")
		}
		body["version"] = n
	}
	if dnsCredentialsGiven(f, cur.Type) {
		creds, field, msg := dnsCredentials(f, cur.Type)
		if msg != "" {
			return fail(http.StatusBadRequest, field, msg)
		}
		body["credentials"] = creds
	}
	b, _ := json.Marshal(body)
	rec := u.callAPI(r, http.MethodPatch, "dns-providers/"+url.PathEscape(cur.ID), string(b))
	if rec.Code >= 300 {
		res := resultOf(rec.Code, rec.Body.Bytes())
		if rec.Code == http.StatusNotFound {
			return &Error{Status: rec.Code, Message: res.Message}
		}
		return fail(rec.Code, formFieldOf(res.Field, cur.Type), res.Message)
	}
	msg := "DNS provider saved"
	if body["credentials"] != nil {
		msg += ": the credentials are replaced, press Verify to check them"
	}
	http.Redirect(w, r, "/dns-providers/"+url.PathEscape(cur.ID)+"?flash="+url.QueryEscape(msg), http.StatusSeeOther)
	return nil
}

// dnsDeleteForm deletes a DNS provider client once the form's box is
// ticked (DELETE /dns-providers/{id}).
func (u *UI) dnsDeleteForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	if r.PostForm.Get("confirm") != "yes" {
		if _, err := app.DNS().Get(r.Context(), id); err != nil {
			return err
		}
		d.Error = "tick the confirmation box: deleting removes the DNS provider and its sealed credentials"
		return u.renderDNSProviderPage(w, r, app, d, id, http.StatusBadRequest, nil, "")
	}
	rec := u.callAPI(r, http.MethodDelete, "dns-providers/"+url.PathEscape(id), "")
	if rec.Code >= 300 {
		res := resultOf(rec.Code, rec.Body.Bytes())
		if rec.Code == http.StatusNotFound {
			return &Error{Status: rec.Code, Message: res.Message}
		}
		d.Error = res.Message
		return u.renderDNSProviderPage(w, r, app, d, id, rec.Code, nil, "")
	}
	http.Redirect(w, r, "/dns-providers?flash="+url.QueryEscape("DNS provider deleted"), http.StatusSeeOther)
	return nil
}

// editGroups are the groups an edit form offers: the user's (an admin's
// are the ones seen), with the record's own first.
func editGroups(r *http.Request, app *certlocker.App, s *session, current string) []string {
	gs := formGroups(r, app, s)
	out := []string{}
	if current != "" {
		out = append(out, current)
	}
	for _, g := range gs {
		if g != current {
			out = append(out, g)
		}
	}
	return out
}
