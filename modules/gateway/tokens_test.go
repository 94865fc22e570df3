package gateway

import (
	"bytes"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type tokenEnv struct {
	st    storage.Store
	svc   *Service
	clk   *clock
	logs  *observer.ObservedLogs
	iss   *storage.Issuer
	dnsID string
}

func newTokenEnv(t *testing.T) *tokenEnv {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "gw.db"), storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	core, logs := observer.New(zap.DebugLevel)
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	iss := &storage.Issuer{Name: "pebble", DirectoryURL: "https://pebble/dir"}
	if err := st.Issuers().Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	dp := &storage.DNSProvider{Name: "cf", Type: "cloudflare"}
	if err := st.DNSProviders().Create(t.Context(), dp); err != nil {
		t.Fatal(err)
	}
	return &tokenEnv{st: st, svc: NewService(st, "node-1", zap.New(core), clk.now), clk: clk, logs: logs, iss: iss, dnsID: dp.ID}
}

func TestCreateToken(t *testing.T) {
	e := newTokenEnv(t)
	ctx := t.Context()
	tok, creds, err := e.svc.Create(ctx, "tester", CreateRequest{Names: []string{"WWW.Example.com.", "*.apps.example.com"},
		IssuerID: e.iss.ID, Challenges: map[string]ChallengeSetting{"*.apps.example.com": {Challenge: "dns-01", DNSProviderID: e.dnsID}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.ID, "ctk_") || tok.Type != storage.TokenTypeCertificate || tok.Status != StateActive {
		t.Fatalf("token %+v", tok)
	}
	if got := strings.Join(tok.Names, ","); got != "www.example.com,*.apps.example.com" {
		t.Fatalf("names = %s", got)
	}
	if tok.Spec.MaxAccounts != 2 || tok.Spec.MinRSABits != 2048 || tok.Spec.Identifiers[0].Challenge != "http-01" ||
		tok.Spec.Identifiers[1].Challenge != "dns-01" || tok.Spec.Identifiers[1].DNSProviderID != e.dnsID {
		t.Fatalf("spec %+v", tok.Spec)
	}
	mac, err := base64.RawURLEncoding.DecodeString(creds.EABHMACKey)
	if err != nil || len(mac) < 32 || creds.EABKeyID != tok.ID {
		t.Fatalf("credentials: %v, %d bytes", err, len(mac))
	}
	secret := strings.TrimSuffix(strings.TrimPrefix(creds.DirectoryPath, TokenPathPrefix), "/directory")
	if raw, err := base64.RawURLEncoding.DecodeString(secret); err != nil || len(raw)*8 < 128 {
		t.Fatalf("url secret: %v, %d bits", err, len(raw)*8)
	}
	got, err := e.svc.ByURLSecret(ctx, secret)
	if err != nil || got.ID != tok.ID {
		t.Fatalf("by URL secret: %v", err)
	}
	// one character changed (never to itself: a secret may end in "x")
	wrong := "A" + secret[1:]
	if secret[0] == 'A' {
		wrong = "B" + secret[1:]
	}
	if _, err := e.svc.ByURLSecret(ctx, wrong); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a wrong URL secret found %v", err)
	}
	if keys := MACKeys(got, e.clk.now()); len(keys) != 1 || !bytes.Equal(keys[0], mac) {
		t.Fatal("MAC key does not round-trip")
	}
	// shown once: the view of a stored token has neither secret
	v := NewView(got, nil, "https://gw.example", e.clk.now())
	if v.EABHMACKey != "" || v.DirectoryPath != "" || strings.Contains(strings.Join(mapValues(v.Clients), ""), creds.EABHMACKey) ||
		strings.Contains(strings.Join(mapValues(v.Clients), ""), secret) {
		t.Fatal("a later view shows a secret")
	}
	// never logged
	for _, l := range e.logs.All() {
		s := l.Message
		for _, f := range l.Context {
			s += f.String + f.Key
			if f.Interface != nil {
				s += strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(strings.Join([]string{toString(f.Interface)}, ""), "\n", ""), "\t", ""), " ", ""))
			}
		}
		if strings.Contains(s, creds.EABHMACKey) || strings.Contains(s, secret) {
			t.Fatalf("log line carries a secret: %q", l.Message)
		}
	}
	entries, _, err := e.st.Audit().List(ctx, storage.AuditFilter{Target: tok.ID}, storage.Page{})
	if err != nil || len(entries) != 1 || entries[0].Action != "token.create" || bytes.Contains(entries[0].Details, []byte(creds.EABHMACKey)) {
		t.Fatalf("audit %v %+v", err, entries)
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func toString(v any) string {
	if s, ok := v.(interface{ String() string }); ok {
		return s.String()
	}
	return ""
}

func TestCreateTokenFromCertificate(t *testing.T) {
	e := newTokenEnv(t)
	ctx := t.Context()
	w := &storage.Workflow{IssuerID: e.iss.ID, Identifiers: []storage.Identifier{{Type: "dns", Value: "a.example.com", Challenge: "dns-01",
		DNSProviderID: e.dnsID}, {Type: "dns", Value: "b.example.com", Challenge: "http-01"}}}
	if err := e.st.Workflows().Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	c := &storage.Certificate{Fingerprint: "ff", Names: []string{"a.example.com", "b.example.com"}, IssuerID: e.iss.ID,
		WorkflowID: w.ID, Group: "edge", NotAfter: e.clk.now().Add(time.Hour), Source: storage.CertSourceIssued, Status: storage.CertStatusActive}
	if err := e.st.Certificates().Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.svc.Create(ctx, "tester", CreateRequest{CertificateID: c.ID})
	if err != nil {
		t.Fatal(err)
	}
	if tok.CertificateID != c.ID || tok.Spec.IssuerID != e.iss.ID || tok.Group != "edge" || len(tok.Spec.Identifiers) != 2 ||
		tok.Spec.Identifiers[0].Challenge != "dns-01" || tok.Spec.Identifiers[0].DNSProviderID != e.dnsID {
		t.Fatalf("token %+v", tok)
	}
	list, err := e.svc.List(ctx, ListFilter{CertificateID: c.ID})
	if err != nil || len(list) != 1 {
		t.Fatalf("list by certificate: %v %d", err, len(list))
	}
}

func TestCreateTokenBadInput(t *testing.T) {
	e := newTokenEnv(t)
	past := e.clk.now().Add(-time.Hour)
	cases := map[string]struct {
		r     CreateRequest
		field string
	}{
		"nothing":          {CreateRequest{}, "names"},
		"no issuer":        {CreateRequest{Names: []string{"a.example.com"}}, "issuer_id"},
		"unknown issuer":   {CreateRequest{Names: []string{"a.example.com"}, IssuerID: "iss_nope"}, "issuer_id"},
		"unknown cert":     {CreateRequest{CertificateID: "crt_nope"}, "certificate_id"},
		"both":             {CreateRequest{CertificateID: "crt_x", Names: []string{"a.example.com"}}, "names"},
		"bad name":         {CreateRequest{Names: []string{"a b.example.com"}, IssuerID: e.iss.ID}, "names[0].value"},
		"single label":     {CreateRequest{Names: []string{"localhost"}, IssuerID: e.iss.ID}, "names[0].value"},
		"wildcard http":    {CreateRequest{Names: []string{"*.example.com"}, IssuerID: e.iss.ID, Challenge: "http-01"}, "names[0].challenge"},
		"dns without prov": {CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, Challenge: "dns-01"}, "names[0].dns_provider_id"},
		"twice":            {CreateRequest{Names: []string{"a.example.com", "A.example.com."}, IssuerID: e.iss.ID}, "names[1].value"},
		"stray challenge":  {CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, Challenges: map[string]ChallengeSetting{"b.example.com": {}}}, "challenges"},
		"max accounts":     {CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, MaxAccounts: 1000}, "max_accounts"},
		"weak rsa":         {CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, MinRSABits: 1024}, "min_rsa_bits"},
		"curve":            {CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, AllowedCurves: []string{"P-224"}}, "allowed_curves[0]"},
		"expired":          {CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, ExpiresAt: &past}, "expires_at"},
		"group":            {CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, Group: "Bad Group!"}, "group"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := e.svc.Create(t.Context(), "tester", c.r)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != c.field {
				t.Fatalf("err = %v, want an input error on %s", err, c.field)
			}
		})
	}
	if list, _ := e.svc.List(t.Context(), ListFilter{}); len(list) != 0 {
		t.Fatalf("refused requests stored %d tokens", len(list))
	}
}

func TestRotateRevokeExpire(t *testing.T) {
	e := newTokenEnv(t)
	ctx := t.Context()
	exp := e.clk.now().Add(72 * time.Hour)
	tok, old, err := e.svc.Create(ctx, "tester", CreateRequest{Names: []string{"a.example.com"}, IssuerID: e.iss.ID, ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	oldSecret := strings.TrimSuffix(strings.TrimPrefix(old.DirectoryPath, TokenPathPrefix), "/directory")
	tok, fresh, err := e.svc.Rotate(ctx, "tester", tok.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.EABHMACKey == old.EABHMACKey || fresh.DirectoryPath == old.DirectoryPath {
		t.Fatal("rotation kept a secret")
	}
	newSecret := strings.TrimSuffix(strings.TrimPrefix(fresh.DirectoryPath, TokenPathPrefix), "/directory")
	for _, s := range []string{oldSecret, newSecret} {
		if _, err := e.svc.ByURLSecret(ctx, s); err != nil {
			t.Fatalf("during grace: %v", err)
		}
	}
	if len(MACKeys(tok, e.clk.now())) != 2 {
		t.Fatal("both MAC keys must be valid during the grace period")
	}
	e.clk.add(time.Hour)
	if _, err := e.svc.ByURLSecret(ctx, oldSecret); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("old URL secret after grace: %v", err)
	}
	if _, err := e.svc.ByURLSecret(ctx, newSecret); err != nil {
		t.Fatal(err)
	}
	if len(MACKeys(tok, e.clk.now())) != 1 {
		t.Fatal("old MAC key still valid after grace")
	}
	e.clk.add(72 * time.Hour)
	tok, _ = e.svc.Get(ctx, tok.ID)
	if State(tok, e.clk.now()) != StateExpired || MACKeys(tok, e.clk.now()) != nil {
		t.Fatal("token should be expired")
	}
	if l, _ := e.svc.List(ctx, ListFilter{State: StateExpired}); len(l) != 1 {
		t.Fatalf("state=expired lists %d", len(l))
	}
	if l, _ := e.svc.List(ctx, ListFilter{State: StateActive}); len(l) != 0 {
		t.Fatalf("state=active lists %d", len(l))
	}
	if _, err := e.svc.Revoke(ctx, "tester", tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Revoke(ctx, "tester", tok.ID); err == nil {
		t.Fatal("revoked twice")
	}
	if _, _, err := e.svc.Rotate(ctx, "tester", tok.ID, 0); err == nil {
		t.Fatal("rotated a revoked token")
	}
	if _, err := e.svc.ByURLSecret(ctx, newSecret); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal("a revoked token is found by its URL")
	}
	if l, _ := e.svc.List(ctx, ListFilter{State: StateRevoked}); len(l) != 1 {
		t.Fatalf("state=revoked lists %d", len(l))
	}
	entries, _, _ := e.st.Audit().List(ctx, storage.AuditFilter{Target: tok.ID}, storage.Page{})
	var actions []string
	for _, a := range entries {
		actions = append(actions, a.Action)
	}
	if strings.Join(actions, ",") != "token.revoke,token.rotate,token.create" {
		t.Fatalf("audit actions %v", actions)
	}
}
