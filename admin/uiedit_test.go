package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/storage"
)

// auditedBy reports whether the audit log holds an entry of action on
// target by actor with result.
func (f *uiFixture) auditedBy(t *testing.T, action, target, actor, result string) bool {
	t.Helper()
	es, _, err := f.app.AuditLog(t.Context(), storage.AuditFilter{Action: action, Target: target}, storage.Page{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.HasPrefix(e.Actor, actor) && e.Result == result {
			return true
		}
	}
	return false
}

// TestUIEditIssuer: an operator edits an ACME client of their group from
// its page (name, contacts, profile, preferred chain, group) and deletes
// it after confirming; viewers, other groups and CSRF-less posts change
// nothing; a config-managed client offers neither; every change and
// refusal is audited.
func TestUIEditIssuer(t *testing.T) {
	f := newUIFixture(t)
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{
		Profiles: map[string]acmetest.Profile{"tlsserver": {Description: "TLS server certificates"}, "shortlived": {Description: "six days"}}})
	iss, err := f.app.IssuerRegistry().Create(t.Context(), "test", issuers.Spec{Name: "pebble-edit", DirectoryURL: p.DirectoryURL(),
		CustomRootsPEM: string(p.WFECertPEM()), Contacts: []string{"mailto:ops@example.com"}, AccountKeyType: "p256", Group: "A", AgreeTerms: true})
	if err != nil {
		t.Fatal(err)
	}
	page := "/issuers/" + iss.ID
	form := func(kv ...string) url.Values {
		v := url.Values{"name": {"pebble-edit"}, "contacts": {"mailto:ops@example.com"}, "profile": {""}, "preferred_chain": {""},
			"group": {"A"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}

	t.Run("the page offers the edit and delete forms to operators only", func(t *testing.T) {
		body := f.do(t, as("alice"), "GET", page, "").Body.String()
		for _, want := range []string{`id="edit-issuer"`, `action="/issuers/` + iss.ID + `/edit"`, `name="name" value="pebble-edit"`,
			`value="mailto:ops@example.com"`, `<option value="shortlived"`, `id="delete-issuer"`, `name="confirm"`} {
			if !strings.Contains(body, want) {
				t.Errorf("alice's page lacks %s", want)
			}
		}
		if body := f.do(t, as("vic"), "GET", page, "").Body.String(); strings.Contains(body, `id="edit-issuer"`) || strings.Contains(body, `id="delete-issuer"`) {
			t.Error("the viewer is offered the edit or delete form")
		}
		if body := f.do(t, as("alice"), "GET", "/issuers/"+f.ids["A"]["issuer"], "").Body.String(); strings.Contains(body, `id="edit-issuer"`) ||
			strings.Contains(body, `id="delete-issuer"`) {
			t.Error("a config-managed ACME client offers the edit or delete form")
		}
	})

	t.Run("refused: viewer, other group, no CSRF token, config-managed", func(t *testing.T) {
		if rec := f.postForm(t, "vic", page+"/edit", form("name", "by-vic")); rec.Code != http.StatusForbidden {
			t.Fatalf("viewer: %d", rec.Code)
		}
		if rec := f.postForm(t, "bob", page+"/edit", form("name", "by-bob")); rec.Code != http.StatusNotFound {
			t.Fatalf("group B operator: %d", rec.Code)
		}
		if rec := f.postForm(t, "bob", page+"/delete", url.Values{"confirm": {"yes"}}); rec.Code != http.StatusNotFound {
			t.Fatalf("group B operator deleting: %d", rec.Code)
		}
		if rec := f.do(t, uiRequest{user: "alice", cookie: true}, "POST", page+"/edit", form("name", "no-csrf").Encode()); rec.Code != http.StatusForbidden {
			t.Fatalf("no CSRF token: %d", rec.Code)
		}
		cfg := f.ids["A"]["issuer"]
		if rec := f.postForm(t, "alice", "/issuers/"+cfg+"/edit", form("name", "renamed-cfg")); rec.Code != http.StatusConflict ||
			!strings.Contains(rec.Body.String(), "config") {
			t.Fatalf("config-managed: %d %s", rec.Code, rec.Body)
		}
		got, _ := f.app.IssuerRegistry().Get(t.Context(), iss.ID)
		if got.Name != "pebble-edit" {
			t.Fatalf("a refused edit renamed the client to %q", got.Name)
		}
		if !f.auditedBy(t, "PATCH /issuers/{id}", iss.ID, "ui:bob", storage.AuditRefused) {
			t.Error("the other group's edit is not audited as refused")
		}
	})

	t.Run("bad input comes back with the message and what was typed", func(t *testing.T) {
		rec := f.postForm(t, "alice", page+"/edit", form("name", "bad name!", "preferred_chain", "Root X"))
		body := rec.Body.String()
		if rec.Code != http.StatusBadRequest || !strings.Contains(body, "name must be") || !strings.Contains(body, `value="Root X"`) ||
			!strings.Contains(body, `aria-invalid="true"`) {
			t.Fatalf("%d %s", rec.Code, body)
		}
		rec = f.postForm(t, "alice", page+"/edit", form("profile", "nonesuch"))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "offers no profile") {
			t.Fatalf("unknown profile: %d %s", rec.Code, rec.Body)
		}
		rec = f.postForm(t, "alice", page+"/edit", form("group", "B"))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "not one of yours") {
			t.Fatalf("moving to another group: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("an operator edits the client", func(t *testing.T) {
		rec := f.postForm(t, "alice", page+"/edit", form("name", "pebble-renamed", "contacts", "mailto:certs@example.com",
			"profile", "shortlived", "preferred_chain", "Pebble Root"))
		if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), page+"?flash=") {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		got, err := f.app.IssuerRegistry().Get(t.Context(), iss.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "pebble-renamed" || got.Profile != "shortlived" || got.PreferredChain != "Pebble Root" ||
			fmt.Sprint(got.Contacts) != "[mailto:certs@example.com]" || got.Group != "A" {
			t.Fatalf("after the edit: %+v", got)
		}
		if !f.auditedBy(t, "issuer.update", iss.ID, "ui:alice", storage.AuditOK) {
			t.Error("the edit is not audited")
		}
		// a stale form (an older version) is refused
		stale := form("name", "pebble-stale", "version", fmt.Sprint(iss.Version))
		if rec := f.postForm(t, "alice", page+"/edit", stale); rec.Code != http.StatusConflict {
			t.Fatalf("a stale version: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("delete needs the confirmation, then removes the client", func(t *testing.T) {
		rec := f.postForm(t, "alice", page+"/delete", url.Values{})
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "tick the confirmation box") {
			t.Fatalf("without confirmation: %d %s", rec.Code, rec.Body)
		}
		if _, err := f.app.IssuerRegistry().Get(t.Context(), iss.ID); err != nil {
			t.Fatal("deleted without confirmation")
		}
		// one declared in the config stays, with the reason
		inUse := f.ids["A"]["issuer"]
		if rec := f.postForm(t, "alice", "/issuers/"+inUse+"/delete", url.Values{"confirm": {"yes"}}); rec.Code != http.StatusConflict {
			t.Fatalf("a config-managed client: %d %s", rec.Code, rec.Body)
		}
		rec = f.postForm(t, "alice", page+"/delete", url.Values{"confirm": {"yes"}})
		if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/issuers?flash=") {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if _, err := f.app.IssuerRegistry().Get(t.Context(), iss.ID); err == nil {
			t.Fatal("still there after the delete")
		}
		if !f.auditedBy(t, "issuer.delete", iss.ID, "ui:alice", storage.AuditOK) {
			t.Error("the delete is not audited")
		}
	})
}

// TestUIEditDNSProvider: an operator edits a DNS provider of their group
// (name, zones, account, group, TTL, resolvers) and replaces its
// credentials, which are never shown and stay as they are when the
// fields are left empty; then deletes it after confirming.
func TestUIEditDNSProvider(t *testing.T) {
	f := newUIFixture(t)
	id := f.ids["A"]["dns"]
	page := "/dns-providers/" + id
	oldToken := f.secrets[0]
	form := func(kv ...string) url.Values {
		v := url.Values{"name": {"dns-team-a"}, "zones": {"team-a.test"}, "group": {"A"}, "account_id": {""}, "ttl": {""},
			"propagation_timeout": {""}, "resolvers": {""}, "nameservers": {""}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	creds := func() string {
		p, err := f.app.DNS().Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return string(p.Credentials.Reveal())
	}

	t.Run("the page offers the edit form, without the credentials", func(t *testing.T) {
		body := f.do(t, as("alice"), "GET", page, "").Body.String()
		for _, want := range []string{`id="edit-dns"`, `action="/dns-providers/` + id + `/edit"`, `name="zones" value="team-a.test"`,
			`name="api_token" type="password"`, `id="delete-dns"`} {
			if !strings.Contains(body, want) {
				t.Errorf("the page lacks %s", want)
			}
		}
		if strings.Contains(body, oldToken) {
			t.Fatal("the page shows the API token")
		}
		if body := f.do(t, as("vic"), "GET", page, "").Body.String(); strings.Contains(body, `id="edit-dns"`) || strings.Contains(body, `id="delete-dns"`) {
			t.Error("the viewer is offered the edit or delete form")
		}
	})

	t.Run("refused: viewer, other group, no CSRF token", func(t *testing.T) {
		if rec := f.postForm(t, "vic", page+"/edit", form("zones", "vic.team-a.test")); rec.Code != http.StatusForbidden {
			t.Fatalf("viewer: %d", rec.Code)
		}
		if rec := f.postForm(t, "bob", page+"/edit", form("zones", "bob.team-a.test")); rec.Code != http.StatusNotFound {
			t.Fatalf("group B operator: %d", rec.Code)
		}
		if rec := f.postForm(t, "bob", page+"/delete", url.Values{"confirm": {"yes"}}); rec.Code != http.StatusNotFound {
			t.Fatalf("group B operator deleting: %d", rec.Code)
		}
		if rec := f.do(t, uiRequest{user: "alice", cookie: true}, "POST", page+"/edit", form("zones", "x.team-a.test").Encode()); rec.Code != http.StatusForbidden {
			t.Fatalf("no CSRF token: %d", rec.Code)
		}
		if p, _ := f.app.DNS().Get(t.Context(), id); strings.Join(p.Zones, ",") != "team-a.test" {
			t.Fatalf("a refused edit changed the zones to %v", p.Zones)
		}
	})

	t.Run("empty credential fields leave the credentials", func(t *testing.T) {
		rec := f.postForm(t, "alice", page+"/edit", form("zones", "team-a.test, extra.team-a.test", "ttl", "2m", "resolvers", "192.0.2.53:53"))
		if rec.Code != http.StatusSeeOther {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		p, _ := f.app.DNS().Get(t.Context(), id)
		if !slices.Equal(p.Zones, []string{"extra.team-a.test", "team-a.test"}) || !strings.Contains(creds(), oldToken) {
			t.Fatalf("zones %v, credentials kept: %v", p.Zones, strings.Contains(creds(), oldToken))
		}
	})

	t.Run("a new token replaces the credentials and is never shown", func(t *testing.T) {
		newToken := "cf-replaced-token-" + hexToken(t)
		// refused first: the form comes back without the token
		rec := f.postForm(t, "alice", page+"/edit", form("zones", "", "api_token", newToken))
		if rec.Code != http.StatusBadRequest || strings.Contains(rec.Body.String(), newToken) || !strings.Contains(rec.Body.String(), "not shown again") {
			t.Fatalf("refused edit: %d (token echoed: %v) %s", rec.Code, strings.Contains(rec.Body.String(), newToken), rec.Body)
		}
		rec = f.postForm(t, "alice", page+"/edit", form("api_token", newToken))
		if rec.Code != http.StatusSeeOther || strings.Contains(rec.Header().Get("Location"), newToken) {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if c := creds(); !strings.Contains(c, newToken) || strings.Contains(c, oldToken) {
			t.Fatal("the credentials were not replaced")
		}
		body := f.do(t, as("alice"), "GET", page, "").Body.String()
		if strings.Contains(body, newToken) || !strings.Contains(body, "unverified") {
			t.Fatal("the page shows the new token, or the provider is not unverified after the change")
		}
		es, _, err := f.app.AuditLog(t.Context(), storage.AuditFilter{Action: "dns_provider.update", Target: id}, storage.Page{Limit: 10})
		if err != nil || len(es) == 0 || !strings.Contains(string(es[0].Details), `"credentials_changed":true`) || !strings.HasPrefix(es[0].Actor, "ui:alice") ||
			strings.Contains(string(es[0].Details), newToken) {
			t.Fatalf("audit of the credentials change: %v %v", es, err)
		}
	})

	t.Run("delete needs the confirmation", func(t *testing.T) {
		if rec := f.postForm(t, "alice", page+"/delete", url.Values{}); rec.Code != http.StatusBadRequest ||
			!strings.Contains(rec.Body.String(), "tick the confirmation box") {
			t.Fatalf("without confirmation: %d %s", rec.Code, rec.Body)
		}
		rec := f.postForm(t, "alice", page+"/delete", url.Values{"confirm": {"yes"}})
		if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/dns-providers?flash=") {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if _, err := f.app.DNS().Get(t.Context(), id); err == nil {
			t.Fatal("still there after the delete")
		}
		if !f.auditedBy(t, "dns_provider.delete", id, "ui:alice", storage.AuditOK) {
			t.Error("the delete is not audited")
		}
	})
}
