package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/storage"
)

// The Tokens screens: the list (with the create forms), a token's page
// (ID, client snippets, bound accounts, recent pulls, rotate / revoke),
// and the one-time page that shows a token's secrets. That page is the
// answer to the POST that made the secrets (create or rotate): it is never
// a redirect, the secrets are never in a URL, and no GET shows them again.

// tokenClients are the edge clients' snippets, in the order shown.
var tokenClients = []struct{ Key, Label, Hint string }{
	{"haproxy_3_3", "HAProxy 3.3", "No EAB in 3.3: the per-token directory URL is the credential."},
	{"haproxy_3_4", "HAProxy 3.4", "EAB at the shared directory."},
	{"win_acme", "win-acme (IIS)", ""},
	{"certbot", "certbot", ""},
	{"lego", "lego", "lego wants the MAC key base64url without padding, as shown."},
	{"acme_sh", "acme.sh", ""},
	{"caddy", "Caddy", "acme_ca + acme_eab globally, or per site."},
}

// tokenPages routes /tokens, /tokens/{id} and the token actions.
func (u *UI) tokenPages(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, parts []string) error {
	switch {
	case len(parts) == 1 && r.Method == http.MethodGet:
		return u.tokensPage(w, r, app, d, http.StatusOK)
	case len(parts) == 1 && r.Method == http.MethodPost:
		return u.createTokenForm(w, r, app, d)
	case len(parts) == 2 && r.Method == http.MethodGet:
		return u.tokenPage(w, r, app, d, parts[1], nil)
	case len(parts) == 3 && parts[2] == "rotate" && r.Method == http.MethodPost:
		return u.rotateTokenForm(w, r, app, d, parts[1])
	case len(parts) == 3 && parts[2] == "revoke" && r.Method == http.MethodPost:
		return u.revokeTokenForm(w, r, parts[1])
	}
	return &Error{Status: http.StatusNotFound, Message: "There is no page " + r.URL.Path + " here."}
}

// gatewayURL is the gateway's public base URL for the snippets: the
// configured gateway_url, else this site.
func (u *UI) gatewayURL(r *http.Request) string {
	if u.GatewayURL != "" {
		return strings.TrimSuffix(u.GatewayURL, "/")
	}
	return "https://" + r.Host
}

// tokenRow is one line of the tokens list.
type tokenRow struct {
	gateway.View
	IssuerName string
}

type tokensData struct {
	Rows         []tokenRow
	Filter       url.Values
	Query        string
	Pager        pager
	Filtered     bool
	States       []string
	Groups       []string
	Issuers      []issuers.View
	Providers    []dnsproviders.View
	Certificates []inventory.View
	Form         url.Values
}

// tokensPage lists the user's tokens, newest first, filtered by state,
// group and certificate, with the create forms for those who may.
func (u *UI) tokensPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, status int) error {
	q := r.URL.Query()
	fq := onlyKeys(q, "state", "group", "certificate")
	list, pg, err := listPage(q, fq, func(p storage.Page) ([]*storage.Token, string, error) {
		return app.Tokens().ListPage(r.Context(), gateway.ListFilter{State: q.Get("state"), Group: q.Get("group"),
			CertificateID: q.Get("certificate")}, "-created", p)
	})
	if err != nil {
		return tokenError(err)
	}
	names, issuerViews, err := issuerNames(r, app)
	if err != nil {
		return err
	}
	data := tokensData{Filter: q, Query: fq.Encode(), Filtered: len(fq) > 0, Form: r.PostForm, Pager: pg,
		States: []string{gateway.StateActive, gateway.StateRevoked, gateway.StateExpired}}
	now := time.Now()
	seen := []string{}
	for _, t := range list {
		row := tokenRow{View: gateway.NewView(t, nil, u.gatewayURL(r), now), IssuerName: names[t.Spec.IssuerID]}
		if row.IssuerName == "" {
			row.IssuerName = t.Spec.IssuerID
		}
		data.Rows = append(data.Rows, row)
		seen = append(seen, t.Group)
	}
	if d.Session.User.CanMutate() {
		data.Issuers = issuerViews
		provs, err := app.DNS().List(r.Context(), "")
		if err != nil {
			return err
		}
		for _, p := range provs {
			data.Providers = append(data.Providers, dnsproviders.NewView(p))
			seen = append(seen, p.Group)
		}
		inv := app.Certificates()
		f, err := inv.FilterFromQuery(url.Values{"status": {storage.CertStatusActive}})
		if err != nil {
			return err
		}
		certs, _, err := inv.List(r.Context(), f, storage.Page{Limit: 100})
		if err != nil {
			return err
		}
		for _, c := range certs {
			data.Certificates = append(data.Certificates, inv.View(c, false))
		}
	}
	for _, iss := range issuerViews {
		seen = append(seen, iss.Group)
	}
	data.Groups = groupsOf(d.Session, seen...)
	d.Title, d.Nav, d.Data = "Tokens", "tokens", data
	u.pages.render(w, status, "tokens", d)
	return nil
}

// createTokenForm turns a create form (from a certificate, or names, ACME
// client and challenges) into the API's POST /tokens and answers with the
// one-time page. A refused form comes back with what was typed and why.
func (u *UI) createTokenForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	f := r.PostForm
	req := gateway.CreateRequest{CertificateID: strings.TrimSpace(f.Get("certificate_id")), IssuerID: f.Get("issuer_id"),
		Name: f.Get("name"), Description: f.Get("description"), Group: f.Get("group")}
	fail := func(status int, msg string) error {
		d.Error = msg
		return u.tokensPage(w, r, app, d, status)
	}
	if s := strings.TrimSpace(f.Get("max_accounts")); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fail(http.StatusBadRequest, "max_accounts must be a whole number of at least 1")
		}
		req.MaxAccounts = n
	}
	if s := f.Get("expires"); s != "" {
		t, err := time.Parse("2006-01-02", s)
		if err != nil {
			return fail(http.StatusBadRequest, "expires must be a date such as 2027-12-31")
		}
		req.ExpiresAt = &t
	}
	if req.CertificateID == "" {
		// one name per line, each optionally followed by its challenge
		req.Challenges = map[string]gateway.ChallengeSetting{}
		for _, id := range formIdentifiers(r, app, "names") {
			req.Names = append(req.Names, id.Value)
			req.Challenges[id.Value] = gateway.ChallengeSetting{Challenge: id.Challenge, DNSProviderID: id.DNSProviderID}
		}
	}
	body, _ := json.Marshal(req)
	rec := u.callAPI(r, http.MethodPost, "tokens?base_url="+url.QueryEscape(u.gatewayURL(r)), string(body))
	if rec.Code != http.StatusCreated {
		return fail(rec.Code, resultOf(rec.Code, rec.Body.Bytes()).Message)
	}
	var v gateway.View
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		return err
	}
	d.Flash = "token created"
	return u.tokenPage(w, r, app, d, v.ID, &v)
}

// rotateTokenForm gives the token new secrets (the old ones valid for the
// chosen grace) and answers with the one-time page.
func (u *UI) rotateTokenForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	body := ""
	if g := r.PostFormValue("grace"); g != "" {
		if _, err := time.ParseDuration(g); err != nil {
			return BadRequest("grace", "grace must be a duration such as 24h")
		}
		body = `{"grace":"` + g + `"}`
	}
	rec := u.callAPI(r, http.MethodPost, "tokens/"+url.PathEscape(id)+"/actions/rotate?base_url="+url.QueryEscape(u.gatewayURL(r)), body)
	if rec.Code != http.StatusOK {
		return &Error{Status: rec.Code, Message: resultOf(rec.Code, rec.Body.Bytes()).Message}
	}
	var v gateway.View
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		return err
	}
	d.Flash = "token rotated: the new secrets are below"
	return u.tokenPage(w, r, app, d, v.ID, &v)
}

// revokeTokenForm revokes the token and goes back to its page.
func (u *UI) revokeTokenForm(w http.ResponseWriter, r *http.Request, id string) error {
	rec := u.callAPI(r, http.MethodPost, "tokens/"+url.PathEscape(id)+"/actions/revoke", "")
	if rec.Code != http.StatusOK {
		return &Error{Status: rec.Code, Message: resultOf(rec.Code, rec.Body.Bytes()).Message}
	}
	http.Redirect(w, r, "/tokens/"+url.PathEscape(id)+"?flash=token+revoked", http.StatusSeeOther)
	return nil
}

// pullRow is one use of a token at the gateway, from the audit log.
type pullRow struct {
	Time                      time.Time
	Action, Remote, Detail    string
	WorkflowID, WorkflowState string
	CertificateID             string
}

// historyRow is one change of a token by a person or the config.
type historyRow struct {
	Time                  time.Time
	Actor, Action, Detail string
}

type clientSnippet struct{ Key, Label, Hint, Text string }

type tokenData struct {
	gateway.View
	IssuerName string
	// OneTime is set on the answer that carries the secrets.
	OneTime      bool
	EABDirectory string
	TokenURL     string
	Snippets     []clientSnippet
	Accounts     []*storage.TokenAccount
	Pulls        []pullRow
	History      []historyRow
	CanMutate    bool
}

// tokenPage shows a token; made, when set, is the create or rotate answer
// with the secrets, shown this once (the page is then the POST's answer).
func (u *UI) tokenPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string, made *gateway.View) error {
	t, err := app.Tokens().Get(r.Context(), id)
	if err != nil {
		return err
	}
	base := u.gatewayURL(r)
	data := tokenData{View: gateway.NewView(t, nil, base, time.Now()), EABDirectory: base + gateway.DirectoryPath,
		CanMutate: d.Session.User.CanMutate() && gateway.State(t, time.Now()) != gateway.StateRevoked}
	if made != nil {
		data.View, data.OneTime = *made, true
		data.TokenURL = base + made.DirectoryPath
	}
	names, _, err := issuerNames(r, app)
	if err != nil {
		return err
	}
	if data.IssuerName = names[t.Spec.IssuerID]; data.IssuerName == "" {
		data.IssuerName = t.Spec.IssuerID
	}
	for _, c := range tokenClients {
		data.Snippets = append(data.Snippets, clientSnippet{Key: c.Key, Label: c.Label, Hint: c.Hint, Text: data.Clients[c.Key]})
	}
	if data.Accounts, err = app.Tokens().Accounts(r.Context(), t.ID); err != nil {
		return err
	}
	// the token's audit trail: its uses at the gateway (actor acme@…) and
	// its changes; the token is in the user's scope, so is its trail
	entries, _, err := app.AuditLog(r.Context(), storage.AuditFilter{Target: t.ID}, storage.Page{Limit: 100})
	if err != nil {
		return err
	}
	workflows := map[string]*storage.Workflow{} // nil: not found
	for _, e := range entries {
		var det map[string]any
		_ = json.Unmarshal(e.Details, &det)
		str := func(k string) string { s, _ := det[k].(string); return s }
		if !strings.HasPrefix(e.Actor, "acme@") {
			data.History = append(data.History, historyRow{Time: e.Time, Actor: e.Actor, Action: e.Action, Detail: str("grace")})
			continue
		}
		p := pullRow{Time: e.Time, Action: strings.TrimPrefix(e.Action, "token."), Remote: str("remote"),
			WorkflowID: str("workflow_id"), CertificateID: str("certificate_id"), Detail: str("reason")}
		if p.Detail == "" {
			if ids, ok := det["identifiers"].([]any); ok {
				var ns []string
				for _, n := range ids {
					if s, ok := n.(string); ok {
						ns = append(ns, s)
					}
				}
				p.Detail = strings.Join(ns, ", ")
			}
		}
		if p.WorkflowID != "" {
			wf, seen := workflows[p.WorkflowID]
			if !seen {
				// one order's pulls (order, finalize, download) share it
				if wf, err = app.Workflows().Get(r.Context(), p.WorkflowID); errors.Is(err, storage.ErrNotFound) {
					wf = nil
				} else if err != nil {
					return err
				}
				workflows[p.WorkflowID] = wf
			}
			if wf != nil {
				p.WorkflowState = wf.State
				if p.CertificateID == "" {
					p.CertificateID = wf.CertificateID
				}
			}
		}
		data.Pulls = append(data.Pulls, p)
	}
	title := "Token " + t.ID
	if data.OneTime {
		title = "Token " + t.ID + " — its secrets, shown once"
	}
	d.Title, d.Nav, d.Data = title, "tokens", data
	u.pages.render(w, http.StatusOK, "token", d)
	return nil
}

// drawerTokens are the tokens made from an inventory certificate, for its
// drawer.
func drawerTokens(r *http.Request, app *certlocker.App, certID string) []gateway.View {
	list, err := app.Tokens().List(r.Context(), gateway.ListFilter{CertificateID: certID})
	if err != nil {
		return nil
	}
	out := make([]gateway.View, 0, len(list))
	now := time.Now()
	for _, t := range list {
		out = append(out, gateway.NewView(t, nil, "", now))
	}
	return out
}
