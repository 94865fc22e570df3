package issuers

import (
	"context"
	"crypto"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// newStore opens a fresh SQLite store in a temporary directory.
func newStore(t *testing.T) storage.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "certlocker.db"), storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// fixedClock is an injectable clock.
var fixedTime = time.Date(2026, 5, 20, 11, 5, 0, 0, time.UTC)

func fixedClock() time.Time { return fixedTime }

// newService returns a service on a fresh store trusting p's TLS endpoint.
func newService(t *testing.T, p *acmetest.Pebble) (*Service, storage.Store) {
	t.Helper()
	st := newStore(t)
	return New(st, WithHTTPClient(p.HTTPClient()), WithNode("node-1"), WithClock(fixedClock)), st
}

// counts returns how many issuers and audit entries the store holds.
func counts(t *testing.T, st storage.Store) (issuers, audits int) {
	t.Helper()
	list, err := st.Issuers().List(t.Context(), storage.IssuerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	entries, _, err := st.Audit().List(t.Context(), storage.AuditFilter{}, storage.Page{Limit: storage.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	return len(list), len(entries)
}

// pebbleTLSRootPEM returns the certificate of Pebble's web front end, a
// self-signed private root as far as a client is concerned.
func pebbleTLSRootPEM(t *testing.T, p *acmetest.Pebble) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.DirectoryURL(), nil)
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.TLS.PeerCertificates[0].Raw}))
}

func customSpec(p *acmetest.Pebble, name string) Spec {
	return Spec{Name: name, DirectoryURL: p.DirectoryURL(), Contacts: []string{"ops@example.com"}, AgreeTerms: true}
}

func wantKind(t *testing.T, err error, kind Kind, field string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want an *Error of kind %d", err, err, kind)
	}
	if e.Kind != kind || e.Field != field {
		t.Fatalf("error kind %d field %q (%s), want kind %d field %q", e.Kind, e.Field, e.Message, kind, field)
	}
	return e
}

func TestCreateRegistersAccount(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		opts    acmetest.PebbleOptions
		eab     bool
		keyType string
	}{
		"no eab":           {},
		"eab required":     {opts: acmetest.PebbleOptions{RequireEAB: true}, eab: true},
		"eab optional":     {eab: true},
		"p384 account key": {keyType: KeyP384},
		"rsa2048 key":      {keyType: KeyRSA2048},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := acmetest.NewPebble(t, c.opts)
			svc, st := newService(t, p)
			spec := customSpec(p, "pebble")
			spec.AccountKeyType = c.keyType
			if c.eab {
				spec.EABKeyID = "kid-1"
				spec.EABMACKey = storage.NewSecret([]byte(p.NewExternalAccountKey("kid-1")))
			}
			iss, err := svc.Create(t.Context(), "tester", spec)
			if err != nil {
				t.Fatal(err)
			}
			wantType := c.keyType
			if wantType == "" {
				wantType = KeyP256
			}
			switch {
			case iss.Status != StatusValid || !strings.HasPrefix(iss.AccountURL, p.URL()):
				t.Fatalf("status %s account %s", iss.Status, iss.AccountURL)
			case iss.TermsAgreed != "data:text/plain,Do%20what%20thou%20wilt" || !iss.TermsAgreedAt.Equal(fixedTime):
				t.Fatalf("terms agreement not recorded: %q at %v", iss.TermsAgreed, iss.TermsAgreedAt)
			case iss.ManagedBy != storage.ManagedByAPI || iss.CatalogID != CustomCatalogID || iss.AccountKeyType != wantType:
				t.Fatalf("managed_by %s catalog %s key type %s", iss.ManagedBy, iss.CatalogID, iss.AccountKeyType)
			}
			stored, err := st.Issuers().Get(t.Context(), iss.ID)
			if err != nil {
				t.Fatal(err)
			}
			key, err := parseKey(stored.AccountKey.Reveal())
			if err != nil || keyTypeOf(key) != wantType {
				t.Fatalf("stored account key: %v (%s)", err, keyTypeOf(key))
			}
			if c.eab && string(stored.EABMACKey.Reveal()) == "" {
				t.Fatal("the EAB MAC key was not stored")
			}
			// the CA knows the account by the stored key
			client := &acme.Client{Directory: p.DirectoryURL(), HTTPClient: p.HTTPClient()}
			acct, err := client.GetAccount(t.Context(), acme.Account{PrivateKey: key})
			if err != nil || acct.Location != iss.AccountURL || !slices.Equal(acct.Contact, []string{"mailto:ops@example.com"}) {
				t.Fatalf("CA lookup: %v, %+v", err, acct)
			}
			entries, _, _ := st.Audit().List(t.Context(), storage.AuditFilter{Action: "issuer.create"}, storage.Page{})
			if len(entries) != 1 || entries[0].Target != iss.ID || entries[0].Actor != "tester" || entries[0].Node != "node-1" {
				t.Fatalf("audit: %+v", entries)
			}
			if b, _ := json.Marshal(entries[0]); strings.Contains(string(b), string(stored.EABMACKey.Reveal())) && c.eab {
				t.Fatal("the audit entry holds the EAB MAC key")
			}
		})
	}
}

// Bad input is refused with a clear error and leaves nothing behind.
func TestCreateRefusals(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true})
	goodMAC := p.NewExternalAccountKey("good-kid")

	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "https://" + closed.Addr().String() + "/directory"
	closed.Close()
	notACME := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	t.Cleanup(notACME.Close)

	base := func(mod func(*Spec)) Spec {
		s := customSpec(p, "pebble")
		s.EABKeyID, s.EABMACKey = "good-kid", storage.NewSecret([]byte(goodMAC))
		mod(&s)
		return s
	}
	wrongMAC := storage.NewSecret([]byte("d3JvbmctbWFjLWtleS13cm9uZy1tYWMta2V5"))
	cases := map[string]struct {
		spec  Spec
		kind  Kind
		field string
		msg   string
	}{
		"missing name":      {base(func(s *Spec) { s.Name = "" }), KindInvalid, "name", "name must be"},
		"bad name":          {base(func(s *Spec) { s.Name = "a b" }), KindInvalid, "name", "name must be"},
		"invalid url":       {base(func(s *Spec) { s.DirectoryURL = "https://bad host/dir" }), KindInvalid, "directory_url", "not a URL"},
		"http url":          {base(func(s *Spec) { s.DirectoryURL = "http://127.0.0.1/dir" }), KindInvalid, "directory_url", "must be an https URL"},
		"no url or catalog": {base(func(s *Spec) { s.DirectoryURL = "" }), KindInvalid, "catalog_id", "give catalog_id"},
		"unknown catalog":   {base(func(s *Spec) { s.CatalogID = "acme-corp" }), KindInvalid, "catalog_id", `unknown catalog_id "acme-corp"`},
		"retired catalog":   {base(func(s *Spec) { s.CatalogID, s.DirectoryURL = "buypass", "" }), KindInvalid, "catalog_id", "October 2025"},
		"harica no account": {base(func(s *Spec) { s.CatalogID, s.DirectoryURL = "harica", "" }), KindInvalid, "directory_params", "account"},
		"catalog needs eab": {base(func(s *Spec) {
			s.CatalogID, s.DirectoryURL, s.EABKeyID, s.EABMACKey = "google", "", "", storage.Secret{}
		}), KindInvalid, "eab_key_id", "requires external account binding"},
		"unreachable": {base(func(s *Spec) { s.DirectoryURL = deadURL }), KindUnusable, "directory_url", "cannot be used"},
		"not a directory": {base(func(s *Spec) {
			s.DirectoryURL, s.CustomRootsPEM = notACME.URL+"/dir", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: notACME.Certificate().Raw}))
		}), KindUnusable, "directory_url", "not an ACME directory"},
		"ca requires eab":  {base(func(s *Spec) { s.EABKeyID, s.EABMACKey = "", storage.Secret{} }), KindInvalid, "eab_key_id", "requires external account binding"},
		"eab id only":      {base(func(s *Spec) { s.EABMACKey = storage.Secret{} }), KindInvalid, "eab_mac_key", "needs both"},
		"eab mac not b64":  {base(func(s *Spec) { s.EABMACKey = storage.NewSecret([]byte("not base64 !!")) }), KindInvalid, "eab_mac_key", "value not shown"},
		"wrong eab mac":    {base(func(s *Spec) { s.EABMACKey = wrongMAC }), KindRefused, "", "the CA refused"},
		"unknown eab kid":  {base(func(s *Spec) { s.EABKeyID = "nobody" }), KindRefused, "", "the CA refused"},
		"terms not agreed": {base(func(s *Spec) { s.AgreeTerms = false }), KindInvalid, "agree_terms", "data:text/plain"},
		"unknown profile":  {base(func(s *Spec) { s.Profile = "nope" }), KindInvalid, "profile", "offers default"},
		"bad contact":      {base(func(s *Spec) { s.Contacts = []string{"not an address"} }), KindInvalid, "contacts", "not an email address"},
		"tel contact":      {base(func(s *Spec) { s.Contacts = []string{"tel:+15555550100"} }), KindInvalid, "contacts", "only email"},
		"bad key type":     {base(func(s *Spec) { s.AccountKeyType = "ed25519" }), KindInvalid, "account_key_type", "not supported"},
		"bad roots":        {base(func(s *Spec) { s.CustomRootsPEM = "hello" }), KindInvalid, "custom_roots_pem", "no PEM certificate"},
	}
	svc, st := newService(t, p)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := svc.Create(t.Context(), "tester", c.spec)
			e := wantKind(t, err, c.kind, c.field)
			if !strings.Contains(e.Message, c.msg) {
				t.Fatalf("message %q, want it to contain %q", e.Message, c.msg)
			}
			if strings.Contains(e.Message, goodMAC) || strings.Contains(e.Message, string(wrongMAC.Reveal())) {
				t.Fatal("the error holds the MAC key")
			}
			if c.kind == KindRefused && (e.Problem == nil || e.Problem.Type == "" || !strings.Contains(e.Message, e.Problem.Detail)) {
				t.Fatalf("the CA's problem is not carried verbatim: %+v", e.Problem)
			}
		})
	}
	if n, a := counts(t, st); n != 0 || a != 0 {
		t.Fatalf("refused creates left %d issuers and %d audit entries", n, a)
	}

	// a duplicate name is refused before contacting the CA
	if _, err := svc.Create(t.Context(), "tester", base(func(*Spec) {})); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Create(t.Context(), "tester", base(func(s *Spec) { s.DirectoryURL = deadURL }))
	wantKind(t, err, KindConflict, "name")
	if n, a := counts(t, st); n != 1 || a != 1 {
		t.Fatalf("after the duplicate: %d issuers, %d audit entries", n, a)
	}
}

func TestCustomRootsReachPrivateCA(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{})
	st := newStore(t)
	svc := New(st) // trusts only the system roots
	spec := customSpec(p, "private")
	_, err := svc.Create(t.Context(), "tester", spec)
	e := wantKind(t, err, KindUnusable, "directory_url")
	if !strings.Contains(e.Message, "custom_roots_pem") {
		t.Fatalf("no hint about custom roots: %s", e.Message)
	}
	spec.CustomRootsPEM = pebbleTLSRootPEM(t, p)
	iss, err := svc.Create(t.Context(), "tester", spec)
	if err != nil {
		t.Fatal(err)
	}
	client, acct, err := svc.Client(t.Context(), iss.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "private.example"}}}); err != nil {
		t.Fatalf("ordering through the client with custom roots: %v", err)
	}
}

func TestRefreshDiscoversProfilesAndARI(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{
		Profiles:      map[string]acmetest.Profile{"classic": {Description: "90 days"}, "shortlived": {Description: "6 days", Validity: 6 * 24 * time.Hour}},
		CAAIdentities: []string{"ca.test"},
	})
	svc, _ := newService(t, p)
	spec := customSpec(p, "profiled")
	spec.Profile = "shortlived"
	iss, err := svc.Create(t.Context(), "tester", spec)
	if err != nil {
		t.Fatal(err)
	}
	got, m, err := svc.Refresh(t.Context(), "tester", iss.ID)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !slices.Equal(m.ProfileNames(), []string{"classic", "shortlived"}) || m.Profiles["shortlived"] != "6 days":
		t.Fatalf("profiles %v", m.Profiles)
	case !m.ARI || !m.KeyChange || m.ExternalAccountRequired || !slices.Equal(m.CAAIdentities, []string{"ca.test"}):
		t.Fatalf("meta %+v", m)
	case !got.MetaRefreshedAt.Equal(fixedTime):
		t.Fatalf("meta refreshed at %v", got.MetaRefreshedAt)
	}
	v := NewView(got)
	if v.Meta == nil || !v.Meta.ARI || v.Profile != "shortlived" {
		t.Fatalf("view %+v", v)
	}
	// profile changes are checked against the stored meta
	bad := "longlived"
	_, err = svc.Update(t.Context(), "tester", iss.ID, Patch{Profile: &bad})
	wantKind(t, err, KindInvalid, "profile")
	good := "classic"
	if got, err = svc.Update(t.Context(), "tester", iss.ID, Patch{Profile: &good}); err != nil || got.Profile != "classic" {
		t.Fatalf("update profile: %v", err)
	}
}

// Rollover is proven by Pebble accepting the new key and refusing the old.
func TestRollover(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{})
	svc, st := newService(t, p)
	iss, err := svc.Create(t.Context(), "tester", customSpec(p, "rolling"))
	if err != nil {
		t.Fatal(err)
	}
	oldKey, _ := parseKey(iss.AccountKey.Reveal())

	rolled, err := svc.Rollover(t.Context(), "tester", iss.ID, KeyP384)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := st.Issuers().Get(t.Context(), iss.ID)
	newKey, _ := parseKey(stored.AccountKey.Reveal())
	switch {
	case rolled.AccountKeyType != KeyP384 || keyTypeOf(newKey) != KeyP384 || !stored.NextAccountKey.IsZero():
		t.Fatalf("stored key type %s, next key pending %v", keyTypeOf(newKey), !stored.NextAccountKey.IsZero())
	case !stored.KeyRolledAt.Equal(fixedTime) || stored.AccountURL != iss.AccountURL:
		t.Fatalf("rolled at %v url %s", stored.KeyRolledAt, stored.AccountURL)
	}
	lookup := func(key crypto.Signer) (acme.Account, error) {
		c := &acme.Client{Directory: p.DirectoryURL(), HTTPClient: p.HTTPClient()}
		return c.GetAccount(t.Context(), acme.Account{PrivateKey: key})
	}
	if acct, err := lookup(newKey); err != nil || acct.Location != iss.AccountURL {
		t.Fatalf("the CA does not accept the new key: %v", err)
	}
	var prob acme.Problem
	if _, err := lookup(oldKey); !errors.As(err, &prob) || prob.Type != acme.ProblemTypeAccountDoesNotExist {
		t.Fatalf("the CA still accepts the old key: %v", err)
	}
	// the workflow engine's client signs with the new key
	client, acct, err := svc.Client(t.Context(), iss.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "rolled.example"}}}); err != nil {
		t.Fatalf("ordering after rollover: %v", err)
	}
	entries, _, _ := st.Audit().List(t.Context(), storage.AuditFilter{Action: "issuer.rollover"}, storage.Page{})
	if len(entries) != 1 {
		t.Fatalf("%d rollover audit entries", len(entries))
	}
}

// An interrupted rollover (the pending key stored, the outcome unknown) is
// settled by asking the CA which key it holds.
func TestInterruptedRolloverSettles(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		caSwitched bool
	}{
		"ca switched": {caSwitched: true},
		"ca did not":  {caSwitched: false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := acmetest.NewPebble(t, acmetest.PebbleOptions{})
			svc, st := newService(t, p)
			iss, err := svc.Create(t.Context(), "tester", customSpec(p, "interrupted"))
			if err != nil {
				t.Fatal(err)
			}
			oldPEM := string(iss.AccountKey.Reveal())
			nextKey, nextPEM, _ := generateKey(KeyP256)
			iss.NextAccountKey = storage.NewSecret(nextPEM)
			if err := st.Issuers().Update(t.Context(), iss); err != nil {
				t.Fatal(err)
			}
			if c.caSwitched {
				client, acct, _ := svc.clientFor(iss)
				if _, err := client.AccountKeyRollover(t.Context(), acct, nextKey); err != nil {
					t.Fatal(err)
				}
			}
			client, acct, err := svc.Client(t.Context(), iss.ID)
			if err != nil {
				t.Fatal(err)
			}
			stored, _ := st.Issuers().Get(t.Context(), iss.ID)
			wantPEM := oldPEM
			if c.caSwitched {
				wantPEM = string(nextPEM)
			}
			if string(stored.AccountKey.Reveal()) != wantPEM || !stored.NextAccountKey.IsZero() {
				t.Fatalf("settled to the wrong key (switched %v): %s", c.caSwitched, stored.LastMessage)
			}
			if _, err := client.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "settled.example"}}}); err != nil {
				t.Fatalf("ordering after settling: %v", err)
			}
		})
	}
}

func TestDeactivate(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{})
	svc, _ := newService(t, p)
	iss, err := svc.Create(t.Context(), "tester", customSpec(p, "retiring"))
	if err != nil {
		t.Fatal(err)
	}
	client, acct, err := svc.Client(t.Context(), iss.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.Deactivate(t.Context(), "tester", iss.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusDeactivated {
		t.Fatalf("status %s", got.Status)
	}
	// the CA refuses the account from now on
	if _, err := client.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "x.example"}}}); err == nil {
		t.Fatal("the CA still accepts orders from the deactivated account")
	}
	_, _, err = svc.Client(t.Context(), iss.ID)
	wantKind(t, err, KindState, "")
	_, err = svc.Deactivate(t.Context(), "tester", iss.ID)
	wantKind(t, err, KindState, "")
	_, err = svc.Rollover(t.Context(), "tester", iss.ID, "")
	wantKind(t, err, KindState, "")
	res, err := svc.Test(t.Context(), "tester", iss.ID)
	if err != nil || res.OK {
		t.Fatalf("test of a deactivated issuer: %+v, %v", res, err)
	}
}

func TestUpdateContactsAndDelete(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{})
	svc, st := newService(t, p)
	iss, err := svc.Create(t.Context(), "tester", customSpec(p, "contacts"))
	if err != nil {
		t.Fatal(err)
	}
	contacts := []string{"mailto:pki@example.com", "noc@example.com"}
	got, err := svc.Update(t.Context(), "tester", iss.ID, Patch{Contacts: &contacts, Version: iss.Version})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"mailto:pki@example.com", "mailto:noc@example.com"}
	if !slices.Equal(got.Contacts, want) {
		t.Fatalf("contacts %v", got.Contacts)
	}
	key, _ := parseKey(got.AccountKey.Reveal())
	c := &acme.Client{Directory: p.DirectoryURL(), HTTPClient: p.HTTPClient()}
	if acct, err := c.GetAccount(t.Context(), acme.Account{PrivateKey: key}); err != nil || !slices.Equal(acct.Contact, want) {
		t.Fatalf("the CA has contacts %v (%v)", acct.Contact, err)
	}
	// stale version, empty contacts, unchangeable fields
	_, err = svc.Update(t.Context(), "tester", iss.ID, Patch{Contacts: &contacts, Version: iss.Version})
	wantKind(t, err, KindConflict, "version")
	none := []string{}
	_, err = svc.Update(t.Context(), "tester", iss.ID, Patch{Contacts: &none})
	wantKind(t, err, KindInvalid, "contacts")

	// delete is refused while a workflow uses the issuer
	w := &storage.Workflow{IssuerID: iss.ID, Trigger: "manual", State: storage.StatePending,
		Identifiers: []storage.Identifier{{Type: "dns", Value: "a.example"}}}
	if err := st.Workflows().Create(t.Context(), w); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(t.Context(), "tester", iss.ID); !errors.Is(err, storage.ErrInUse) {
		t.Fatalf("delete of a used issuer: %v", err)
	}
	other, err := svc.Create(t.Context(), "tester", customSpec(p, "unused"))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(t.Context(), "tester", other.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Get(t.Context(), other.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleted issuer still there: %v", err)
	}
}

func TestTestAction(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{})
	svc, st := newService(t, p)
	iss, err := svc.Create(t.Context(), "tester", customSpec(p, "tested"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := svc.Test(t.Context(), "tester", iss.ID)
	if err != nil || !res.OK || res.Issuer.Status != StatusValid || !res.Issuer.CheckedAt.Equal(fixedTime) {
		t.Fatalf("test: %+v, %v", res, err)
	}
	// a key the CA does not know: reported, stored as error, not an error
	_, otherPEM, _ := generateKey(KeyP256)
	iss, _ = st.Issuers().Get(t.Context(), iss.ID)
	iss.AccountKey = storage.NewSecret(otherPEM)
	if err := st.Issuers().Update(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	res, err = svc.Test(t.Context(), "tester", iss.ID)
	if err != nil || res.OK || res.Problem == nil || res.Problem.Type != acme.ProblemTypeAccountDoesNotExist {
		t.Fatalf("test with an unknown key: %+v, %v", res, err)
	}
	if res.Issuer.Status != StatusError || !strings.Contains(res.Issuer.LastMessage, "accountDoesNotExist") {
		t.Fatalf("stored status %s message %q", res.Issuer.Status, res.Issuer.LastMessage)
	}
}

func TestSyncConfig(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true})
	svc, st := newService(t, p)
	ctx := t.Context()
	mac := p.NewExternalAccountKey("cfg-kid")
	spec := customSpec(p, "from-config")
	spec.EABKeyID, spec.EABMACKey = "cfg-kid", storage.NewSecret([]byte(mac))

	if err := svc.SyncConfig(ctx, []Spec{spec}); err != nil {
		t.Fatal(err)
	}
	iss, err := st.Issuers().GetByName(ctx, "from-config")
	if err != nil {
		t.Fatal(err)
	}
	if iss.ManagedBy != storage.ManagedByConfig || iss.Status != StatusUnregistered || iss.AccountURL != "" {
		t.Fatalf("declared issuer: managed_by %s status %s", iss.ManagedBy, iss.Status)
	}
	// read-only through the service's API operations
	name := "renamed"
	_, err = svc.Update(ctx, "tester", iss.ID, Patch{Name: &name})
	wantKind(t, err, KindReadOnly, "")
	wantKind(t, svc.Delete(ctx, "tester", iss.ID), KindReadOnly, "")
	_, err = svc.Deactivate(ctx, "tester", iss.ID)
	wantKind(t, err, KindReadOnly, "")

	// registered on first use
	client, acct, err := svc.Client(ctx, iss.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "cfg.example"}}}); err != nil {
		t.Fatal(err)
	}
	iss, _ = st.Issuers().GetByName(ctx, "from-config")
	if iss.Status != StatusValid || iss.AccountURL == "" || iss.TermsAgreed == "" {
		t.Fatalf("after first use: status %s url %q terms %q", iss.Status, iss.AccountURL, iss.TermsAgreed)
	}
	accountURL := iss.AccountURL

	// the same config again changes nothing
	_, before := counts(t, st)
	if err := svc.SyncConfig(ctx, []Spec{spec}); err != nil {
		t.Fatal(err)
	}
	if _, after := counts(t, st); after != before {
		t.Fatal("an unchanged config wrote audit entries")
	}

	// changed contacts: re-registered with the same key, contacts updated at the CA
	spec.Contacts = []string{"new@example.com"}
	if err := svc.SyncConfig(ctx, []Spec{spec}); err != nil {
		t.Fatal(err)
	}
	iss, _ = st.Issuers().GetByName(ctx, "from-config")
	if iss.Status != StatusUnregistered {
		t.Fatalf("status after a contact change: %s", iss.Status)
	}
	res, err := svc.Test(ctx, "tester", iss.ID)
	if err != nil || !res.OK || res.Issuer.AccountURL != accountURL {
		t.Fatalf("re-registration: %+v, %v", res, err)
	}

	// an invalid spec changes nothing
	bad := spec
	bad.AccountKeyType = "dsa"
	if err := svc.SyncConfig(ctx, []Spec{bad}); err == nil || !strings.Contains(err.Error(), "account_key_type") {
		t.Fatalf("invalid spec: %v", err)
	}
	// a name taken by an API issuer is refused
	apiSpec := customSpec(p, "api-made")
	apiSpec.EABKeyID, apiSpec.EABMACKey = "api-kid", storage.NewSecret([]byte(p.NewExternalAccountKey("api-kid")))
	if _, err := svc.Create(ctx, "tester", apiSpec); err != nil {
		t.Fatal(err)
	}
	clash := spec
	clash.Name = "api-made"
	if err := svc.SyncConfig(ctx, []Spec{spec, clash}); err == nil || !strings.Contains(err.Error(), "managed through the API") {
		t.Fatalf("clash: %v", err)
	}
	// no longer declared: handed over to the API, not deleted
	if err := svc.SyncConfig(ctx, nil); err != nil {
		t.Fatal(err)
	}
	iss, err = st.Issuers().GetByName(ctx, "from-config")
	if err != nil || iss.ManagedBy != storage.ManagedByAPI || iss.AccountKey.IsZero() {
		t.Fatalf("released issuer: %v %+v", err, iss)
	}
}

func TestCatalogIssuerUsesCatalogURL(t *testing.T) {
	t.Parallel()
	// a catalog entry's URL can be replaced (regional endpoint); the catalog
	// ID is kept, and its EAB requirement still applies.
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true})
	svc, _ := newService(t, p)
	spec := customSpec(p, "regional")
	spec.CatalogID = "digicert"
	_, err := svc.Create(t.Context(), "tester", spec)
	wantKind(t, err, KindInvalid, "eab_key_id")
	spec.EABKeyID, spec.EABMACKey = "dc", storage.NewSecret([]byte(p.NewExternalAccountKey("dc")))
	iss, err := svc.Create(t.Context(), "tester", spec)
	if err != nil {
		t.Fatal(err)
	}
	if iss.CatalogID != "digicert" || NewView(iss).CatalogName != "DigiCert CertCentral" {
		t.Fatalf("catalog %s", iss.CatalogID)
	}
}

func TestClientMissing(t *testing.T) {
	t.Parallel()
	svc := New(newStore(t))
	if _, _, err := svc.Client(context.Background(), "iss_missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("client of a missing issuer: %v", err)
	}
}

// The registry's transactions (create, rollover, config sync) on the shared
// PostgreSQL backend, as several nodes use it.
func TestServiceOnPostgres(t *testing.T) {
	t.Parallel()
	st, err := postgres.Open(t.Context(), pgtest.DSN(t), storagetest.NewSealer(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true})
	svc := New(st, WithHTTPClient(p.HTTPClient()), WithNode("pg-node"))
	spec := customSpec(p, "pg")
	spec.EABKeyID, spec.EABMACKey = "pg-kid", storage.NewSecret([]byte(p.NewExternalAccountKey("pg-kid")))
	iss, err := svc.Create(t.Context(), "tester", spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Rollover(t.Context(), "tester", iss.ID, KeyRSA2048); err != nil {
		t.Fatal(err)
	}
	client, acct, err := svc.Client(t.Context(), iss.ID)
	if err != nil || keyTypeOf(acct.PrivateKey) != KeyRSA2048 {
		t.Fatalf("client after rollover: %v", err)
	}
	if _, err := client.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "pg.example"}}}); err != nil {
		t.Fatal(err)
	}
	cfg := customSpec(p, "pg-config")
	cfg.EABKeyID, cfg.EABMACKey = "pg-cfg", storage.NewSecret([]byte(p.NewExternalAccountKey("pg-cfg")))
	if err := svc.SyncConfig(t.Context(), []Spec{cfg}); err != nil {
		t.Fatal(err)
	}
	// two nodes starting together with the same config both succeed
	other := New(st, WithHTTPClient(p.HTTPClient()), WithNode("pg-node-2"))
	both := []Spec{cfg, customSpec(p, "pg-config-2")}
	errs := make(chan error, 2)
	for _, s := range []*Service{svc, other} {
		go func() { errs <- s.SyncConfig(t.Context(), both) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent sync: %v", err)
		}
	}
	dup := cfg
	if err := svc.SyncConfig(t.Context(), []Spec{cfg, dup}); err == nil || !strings.Contains(err.Error(), "declared twice") {
		t.Fatalf("duplicate declaration: %v", err)
	}
	if res, err := svc.Test(t.Context(), "tester", mustGetByName(t, st, "pg-config").ID); err != nil || !res.OK {
		t.Fatalf("registering the declared issuer: %+v %v", res, err)
	}
}

func mustGetByName(t *testing.T, st storage.Store, name string) *storage.Issuer {
	t.Helper()
	iss, err := st.Issuers().GetByName(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// caTransport sits between the service and Pebble. It counts the newAccount
// requests that reach the CA and the accounts the CA creates (201), and can
// interrupt the next newAccount request, as a crash would.
type caTransport struct {
	base           http.RoundTripper
	newAccountPath string

	mu      sync.Mutex
	posts   int
	created int
	// interrupt, when set, is called once, on the next newAccount request,
	// which then fails: after the CA answered if send is true, before the
	// request leaves otherwise.
	interrupt func()
	send      bool
	// lostLocation is the account URL of the answer lost to the interruption.
	lostLocation string
}

func newCATransport(t *testing.T, p *acmetest.Pebble) *caTransport {
	t.Helper()
	dir, err := (&acme.Client{Directory: p.DirectoryURL(), HTTPClient: p.HTTPClient()}).GetDirectory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dir.NewAccount)
	if err != nil {
		t.Fatal(err)
	}
	return &caTransport{base: p.HTTPClient().Transport, newAccountPath: u.Path}
}

func (c *caTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.URL.Path != c.newAccountPath {
		return c.base.RoundTrip(req)
	}
	c.mu.Lock()
	interrupt, send := c.interrupt, c.send
	c.interrupt = nil
	c.mu.Unlock()
	if interrupt != nil && !send {
		interrupt()
		return nil, errors.New("interrupted before sending")
	}
	resp, err := c.base.RoundTrip(req)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.posts++
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusCreated {
		c.created++
	}
	if interrupt != nil {
		c.lostLocation = resp.Header.Get("Location")
		_ = resp.Body.Close()
		interrupt()
		return nil, errors.New("interrupted after the CA answered")
	}
	return resp, nil
}

// counts returns the newAccount requests sent and the accounts created.
func (c *caTransport) counts() (posts, created int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.posts, c.created
}

// declaredService returns a service (one node) on st that reaches Pebble
// through tr and has synced the declared specs, as at provision.
func declaredService(t *testing.T, st storage.Store, tr http.RoundTripper, node string, specs ...Spec) *Service {
	t.Helper()
	svc := New(st, WithHTTPClient(&http.Client{Transport: tr}), WithNode(node), WithClock(fixedClock))
	if err := svc.SyncConfig(t.Context(), specs); err != nil {
		t.Fatal(err)
	}
	return svc
}

func samePublicKey(a, b crypto.Signer) bool {
	pub, ok := a.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(b.Public())
}

// A registration interrupted once its key is stored, whether or not the CA
// created the account, resumes on the next node's first use with the same
// key and ends with one account, the one the CA created.
func TestInterruptedRegistrationResumes(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		caAnswered bool
	}{
		"after the CA created the account":  {caAnswered: true},
		"before the request reached the CA": {caAnswered: false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true})
			tr := newCATransport(t, p)
			st := newStore(t)
			spec := customSpec(p, "declared")
			spec.EABKeyID, spec.EABMACKey = "kid-1", storage.NewSecret([]byte(p.NewExternalAccountKey("kid-1")))
			crashed := declaredService(t, st, tr, "node-1", spec)
			id := mustGetByName(t, st, "declared").ID

			ctx, crash := context.WithCancel(t.Context())
			tr.mu.Lock()
			tr.interrupt, tr.send = crash, c.caAnswered
			tr.mu.Unlock()
			if _, _, err := crashed.Client(ctx, id); err == nil {
				t.Fatal("the interrupted registration succeeded")
			}
			stored := mustGetByName(t, st, "declared")
			if stored.Status != StatusRegistering || stored.AccountURL != "" || stored.AccountKey.IsZero() {
				t.Fatalf("after the interruption: status %s, account %q, key stored %v", stored.Status, stored.AccountURL, !stored.AccountKey.IsZero())
			}
			key, err := parseKey(stored.AccountKey.Reveal())
			if err != nil {
				t.Fatal(err)
			}
			if _, created := tr.counts(); c.caAnswered {
				// the CA knows the account by the stored key
				lookup := &acme.Client{Directory: p.DirectoryURL(), HTTPClient: p.HTTPClient()}
				acct, err := lookup.GetAccount(t.Context(), acme.Account{PrivateKey: key})
				if err != nil || created != 1 || acct.Location != tr.lostLocation {
					t.Fatalf("the CA created %d accounts; lookup by the stored key: %v %s", created, err, acct.Location)
				}
			}

			// the node restarts (or another node takes over) and uses the issuer
			restarted := declaredService(t, st, tr, "node-2", spec)
			_, acct, err := restarted.Client(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			final := mustGetByName(t, st, "declared")
			_, created := tr.counts()
			switch {
			case final.Status != StatusValid || final.AccountURL == "" || acct.Location != final.AccountURL:
				t.Fatalf("after resuming: status %s, account %q, client account %q", final.Status, final.AccountURL, acct.Location)
			case string(final.AccountKey.Reveal()) != string(stored.AccountKey.Reveal()) || !samePublicKey(acct.PrivateKey, key):
				t.Fatal("the registration resumed with another key")
			case created != 1:
				t.Fatalf("the CA created %d accounts, want 1", created)
			case c.caAnswered && final.AccountURL != tr.lostLocation:
				t.Fatalf("account %s, want the one the CA created before the interruption, %s", final.AccountURL, tr.lostLocation)
			}
		})
	}
}

// Concurrent first uses of a declared issuer, in one process or on several
// nodes sharing the store, register one account and all get it.
func TestConcurrentFirstUseRegistersOnce(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		nodes int
	}{
		"one node":  {nodes: 1},
		"two nodes": {nodes: 2},
	}
	const callers = 8
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := acmetest.NewPebble(t, acmetest.PebbleOptions{RequireEAB: true})
			tr := newCATransport(t, p)
			st := newStore(t)
			spec := customSpec(p, "shared")
			spec.EABKeyID, spec.EABMACKey = "kid-1", storage.NewSecret([]byte(p.NewExternalAccountKey("kid-1")))
			var nodes []*Service
			for i := range c.nodes {
				nodes = append(nodes, declaredService(t, st, tr, fmt.Sprintf("node-%d", i+1), spec))
			}
			id := mustGetByName(t, st, "shared").ID

			type result struct {
				acct acme.Account
				err  error
			}
			start := make(chan struct{})
			results := make(chan result, callers)
			for i := range callers {
				svc := nodes[i%len(nodes)]
				go func() {
					<-start
					_, acct, err := svc.Client(t.Context(), id)
					results <- result{acct, err}
				}()
			}
			close(start)
			stored := (*storage.Issuer)(nil)
			var key crypto.Signer
			for range callers {
				r := <-results
				if r.err != nil {
					t.Fatal(r.err)
				}
				if stored == nil {
					stored = mustGetByName(t, st, "shared")
					if key, r.err = parseKey(stored.AccountKey.Reveal()); r.err != nil {
						t.Fatal(r.err)
					}
				}
				if r.acct.Location != stored.AccountURL || !samePublicKey(r.acct.PrivateKey, key) {
					t.Fatalf("a caller got account %s, the store holds %s (same key: %v)", r.acct.Location, stored.AccountURL, samePublicKey(r.acct.PrivateKey, key))
				}
			}
			final := mustGetByName(t, st, "shared")
			posts, created := tr.counts()
			switch {
			case final.Status != StatusValid || final.AccountURL != stored.AccountURL || string(final.AccountKey.Reveal()) != string(stored.AccountKey.Reveal()):
				t.Fatalf("stored status %s account %s (%s)", final.Status, final.AccountURL, final.LastMessage)
			case created != 1:
				t.Fatalf("the CA created %d accounts (%d newAccount requests), want 1", created, posts)
			case c.nodes == 1 && posts != 1:
				// within one process registration is serialized; across
				// nodes a loser may repeat the request with the stored
				// key, which the CA answers with the same account
				t.Fatalf("%d newAccount requests from one node, want 1", posts)
			}
			entries, _, err := st.Audit().List(t.Context(), storage.AuditFilter{Action: "issuer.register"}, storage.Page{})
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || !strings.Contains(string(entries[0].Details), `"ok":true`) {
				t.Fatalf("register audit entries: %d", len(entries))
			}
		})
	}
}

// Custom roots on a service whose HTTP client has a transport roots cannot
// be added to fail with an error naming the field, not a panic (the error
// from building the client is a plain one).
func TestUpdateRootsOnForeignTransport(t *testing.T) {
	t.Parallel()
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{})
	st := newStore(t)
	svc := New(st, WithHTTPClient(&http.Client{Transport: newCATransport(t, p)}), WithClock(fixedClock))
	iss, err := svc.Create(t.Context(), "tester", customSpec(p, "foreign"))
	if err != nil {
		t.Fatal(err)
	}
	roots := pebbleTLSRootPEM(t, p)
	_, err = svc.Update(t.Context(), "tester", iss.ID, Patch{CustomRootsPEM: &roots})
	e := wantKind(t, err, KindUnusable, "custom_roots_pem")
	if !strings.Contains(e.Message, "custom roots") {
		t.Fatalf("message does not say what failed: %s", e.Message)
	}
	stored := mustGetByName(t, st, "foreign")
	if stored.CustomRootsPEM != "" {
		t.Fatal("the refused roots were stored")
	}
}
