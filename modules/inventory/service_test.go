package inventory

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

type env struct {
	svc   *Service
	store storage.Store
	clock *clock
	pki   *pki
}

// newEnv opens a real SQLite store and an inventory over it whose system
// roots hold the fixtures' root (so fixtures under it count as publicly
// trusted) and whose CA catalog knows the fixtures' issuing CA.
func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "inv.db"), storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newEnvOn(t, cfg, st)
}

// newEnvOn is newEnv on a given store.
func newEnvOn(t *testing.T, cfg Config, st storage.Store) *env {
	t.Helper()
	p := newPKI(t)
	clk := &clock{now: t0}
	svc, err := New(st, Options{Node: "test-node", Now: clk.Now, SystemRoots: p.roots(), Config: cfg,
		MatchCA: func(n pkix.Name) (string, bool) {
			if n.CommonName == "Test Issuing CA 1" {
				return "test-ca", true
			}
			return "", false
		}})
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, store: st, clock: clk, pki: p}
}

func (e *env) count(t *testing.T) int {
	t.Helper()
	list, _, err := e.store.Certificates().List(t.Context(), storage.CertificateFilter{}, storage.Page{Limit: storage.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func (e *env) audits(t *testing.T, action string) []*storage.AuditEntry {
	t.Helper()
	list, _, err := e.store.Audit().List(t.Context(), storage.AuditFilter{Action: action}, storage.Page{Limit: storage.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func TestImport(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := t.Context()
	leaf, k := issue(t, e.pki.inter, leafOpts{cn: "shop.example.com", dns: []string{"shop.example.com", "*.shop.example.com"},
		scts: 2, crl: true})
	req := ImportRequest{PEM: string(pemOf(leaf, e.pki.inter.cert)), KeyPEM: string(keyPEM(t, k)), Group: "web"}

	c, created, err := e.svc.Import(ctx, req, "alice")
	if err != nil || !created {
		t.Fatalf("import: created %v, %v", created, err)
	}
	if c.Source != storage.CertSourceImported || c.Group != "web" || c.CatalogID != "test-ca" || c.Rating != "A" ||
		c.KeyType != "ECDSA P-256" || c.Status != storage.CertStatusActive || c.IssuerID != "" {
		t.Fatalf("stored %+v", c)
	}
	got, err := e.svc.Get(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.PrivateKey.Reveal(), keyPEM(t, k)) {
		t.Fatal("the stored key is not the imported one")
	}
	v := e.svc.View(got, true)
	if v.Metadata == nil || !v.Metadata.Trust.Verified || v.Metadata.Rating.Grade != "A" || !v.HasPrivateKey ||
		v.Expiry != BucketOK || v.Renewal.Status != RenewalOK || v.Renewal.Managed {
		t.Fatalf("view %+v", v)
	}
	out, _ := json.Marshal(v)
	if bytes.Contains(out, []byte("PRIVATE KEY")) || bytes.Contains(out, []byte("private_key\":\"")) {
		t.Fatal("the view holds the private key")
	}

	// a duplicate import (even with a different group, without key)
	// changes nothing and returns the stored certificate
	again, created, err := e.svc.Import(ctx, ImportRequest{PEM: string(pemOf(leaf)), Group: "other"}, "bob")
	if err != nil || created || again.ID != c.ID || again.Group != "web" || again.Version != c.Version {
		t.Fatalf("duplicate import: created %v, %+v, %v", created, again, err)
	}
	if n := e.count(t); n != 1 {
		t.Fatalf("%d certificates after a duplicate import", n)
	}
	if a := e.audits(t, "certificate.import"); len(a) != 1 || a[0].Actor != "alice" || a[0].Target != c.ID || a[0].Node != "test-node" {
		t.Fatalf("audit entries %+v", a)
	}
}

func TestImportBadInputStoresNothing(t *testing.T) {
	e := newEnv(t, Config{})
	leaf, _ := issue(t, e.pki.inter, leafOpts{dns: []string{"x.example.com"}})
	_, otherKey := issue(t, e.pki.inter, leafOpts{key: "p384", dns: []string{"y.example.com"}})
	cases := map[string]struct {
		req   ImportRequest
		field string
	}{
		"garbage":        {ImportRequest{PEM: "garbage"}, "pem"},
		"empty":          {ImportRequest{}, "pem"},
		"wrong key":      {ImportRequest{PEM: string(pemOf(leaf)), KeyPEM: string(keyPEM(t, otherKey))}, "key_pem"},
		"bad group":      {ImportRequest{PEM: string(pemOf(leaf)), Group: "no spaces allowed"}, "group"},
		"truncated cert": {ImportRequest{PEM: string(pemOf(leaf)[:200])}, "pem"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := e.svc.Import(t.Context(), c.req, "alice")
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != c.field {
				t.Fatalf("got %v, want an input error on %s", err, c.field)
			}
			if n := e.count(t); n != 0 {
				t.Fatalf("%d certificates stored", n)
			}
			if a := e.audits(t, ""); len(a) != 0 {
				t.Fatalf("audit entries written: %+v", a)
			}
		})
	}
}

func TestAddIssuedRenewal(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := t.Context()
	iss := &storage.Issuer{Name: "le", DirectoryURL: "https://ca.test/dir", Group: "edge"}
	if err := e.store.Issuers().Create(ctx, iss); err != nil {
		t.Fatal(err)
	}
	ids := []storage.Identifier{{Type: "dns", Value: "api.example.com", Challenge: "dns-01"}}
	w1 := &storage.Workflow{IssuerID: iss.ID, Identifiers: ids, State: storage.StateIssued, Group: "edge", Profile: "tlsserver"}
	if err := e.store.Workflows().Create(ctx, w1); err != nil {
		t.Fatal(err)
	}
	leaf1, k1 := issue(t, e.pki.inter, leafOpts{dns: []string{"api.example.com"}})
	first, err := e.svc.AddIssued(ctx, pemOf(leaf1, e.pki.inter.cert), k1, iss.ID, w1.ID, "tlsserver")
	if err != nil {
		t.Fatal(err)
	}
	if first.Source != storage.CertSourceIssued || first.IssuerID != iss.ID || first.WorkflowID != w1.ID ||
		first.Profile != "tlsserver" || first.Group != "edge" || first.PrivateKey.IsZero() {
		t.Fatalf("first %+v", first)
	}
	// the engine retrying after a crash adds nothing
	again, err := e.svc.AddIssued(ctx, pemOf(leaf1, e.pki.inter.cert), keyPEM(t, k1), iss.ID, w1.ID, "tlsserver")
	if err != nil || again.ID != first.ID {
		t.Fatalf("retry: %v %v", again, err)
	}

	w2 := &storage.Workflow{IssuerID: iss.ID, Identifiers: ids, State: storage.StateIssued, Group: "edge",
		PreviousCertificateID: first.ID, Trigger: "renewal"}
	if err := e.store.Workflows().Create(ctx, w2); err != nil {
		t.Fatal(err)
	}
	leaf2, k2 := issue(t, e.pki.inter, leafOpts{dns: []string{"api.example.com"}, notBefore: t0})
	second, err := e.svc.AddIssued(ctx, pemOf(leaf2, e.pki.inter.cert), string(keyPEM(t, k2)), iss.ID, w2.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	old, err := e.svc.Get(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.Status != storage.CertStatusRenewed || old.ReplacedBy != second.ID || RenewalStatus(old, t0).Status != RenewalRenewed {
		t.Fatalf("renewed certificate %+v", old)
	}
	if a := e.audits(t, "certificate.issued"); len(a) != 2 {
		t.Fatalf("%d certificate.issued audit entries, want 2", len(a))
	}

	errCases := map[string]func() error{
		"no issuer": func() error {
			_, err := e.svc.AddIssued(ctx, pemOf(leaf1), nil, "", "", "")
			return err
		},
		"unknown workflow": func() error {
			_, err := e.svc.AddIssued(ctx, pemOf(leaf1), nil, iss.ID, "wf_missing", "")
			return err
		},
		"wrong key": func() error {
			_, err := e.svc.AddIssued(ctx, pemOf(leaf1), testKey(t, "p384"), iss.ID, "", "")
			return err
		},
		"bad key type": func() error {
			_, err := e.svc.AddIssued(ctx, pemOf(leaf1), 42, iss.ID, "", "")
			return err
		},
	}
	for name, fn := range errCases {
		t.Run(name, func(t *testing.T) {
			if err := fn(); err == nil {
				t.Fatal("accepted")
			}
			if n := e.count(t); n != 2 {
				t.Fatalf("%d certificates", n)
			}
		})
	}
}

func TestExportPolicy(t *testing.T) {
	e := newEnv(t, Config{KeyExportRoles: []string{"admin", "deployer"}})
	ctx := t.Context()
	leaf, k := issue(t, e.pki.inter, leafOpts{cn: "*.example.com", dns: []string{"*.example.com"}})
	withKey, _, err := e.svc.Import(ctx, ImportRequest{PEM: string(pemOf(leaf, e.pki.inter.cert)), KeyPEM: string(keyPEM(t, k))}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	leaf2, _ := issue(t, e.pki.inter, leafOpts{dns: []string{"nokey.example.com"}})
	noKey, _, err := e.svc.Import(ctx, ImportRequest{PEM: string(pemOf(leaf2, e.pki.inter.cert))}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		req     ExportRequest
		err     error
		field   string
		audited bool
		keyOut  bool
	}{
		"chain by anyone":      {ExportRequest{ID: withKey.ID, Format: FormatChain, Role: "viewer"}, nil, "", true, false},
		"leaf by anyone":       {ExportRequest{ID: withKey.ID, Format: FormatLeaf, Role: "viewer"}, nil, "", true, false},
		"bundle by admin":      {ExportRequest{ID: withKey.ID, Format: FormatBundle, Role: RoleAdmin}, nil, "", true, true},
		"bundle by deployer":   {ExportRequest{ID: withKey.ID, Format: FormatBundle, Role: "deployer"}, nil, "", true, true},
		"bundle by viewer":     {ExportRequest{ID: withKey.ID, Format: FormatBundle, Role: "viewer"}, ErrKeyExportForbidden, "", true, false},
		"pkcs12 by viewer":     {ExportRequest{ID: withKey.ID, Format: FormatPKCS12, Password: "long enough", Role: "viewer"}, ErrKeyExportForbidden, "", true, false},
		"bundle without key":   {ExportRequest{ID: noKey.ID, Format: FormatBundle, Role: RoleAdmin}, ErrNoPrivateKey, "", true, false},
		"short p12 password":   {ExportRequest{ID: withKey.ID, Format: FormatPKCS12, Password: "short", Role: RoleAdmin}, nil, "password", false, false},
		"unknown format":       {ExportRequest{ID: withKey.ID, Format: "der", Role: RoleAdmin}, nil, "format", false, false},
		"unknown certificate":  {ExportRequest{ID: "crt_missing", Format: FormatChain, Role: RoleAdmin}, storage.ErrNotFound, "", false, false},
		"pkcs12 by admin":      {ExportRequest{ID: withKey.ID, Format: FormatPKCS12, Password: "correct horse", Role: RoleAdmin}, nil, "", true, true},
		"chain of keyless one": {ExportRequest{ID: noKey.ID, Format: FormatChain, Role: "viewer"}, nil, "", true, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			c.req.Actor = "actor-" + name
			out, err := e.svc.Export(ctx, c.req)
			switch {
			case c.field != "":
				var ie *InputError
				if !errors.As(err, &ie) || ie.Field != c.field {
					t.Fatalf("got %v, want an input error on %s", err, c.field)
				}
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Fatalf("got %v, want %v", err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			}
			var entries []*storage.AuditEntry
			for _, a := range e.audits(t, "certificate.export") {
				if a.Actor == c.req.Actor {
					entries = append(entries, a)
				}
			}
			if (len(entries) == 1) != c.audited || len(entries) > 1 {
				t.Fatalf("%d audit entries, want audited=%v", len(entries), c.audited)
			}
			if c.audited {
				var d struct {
					Format      string `json:"format"`
					KeyIncluded bool   `json:"key_included"`
					Allowed     bool   `json:"allowed"`
				}
				if err := json.Unmarshal(entries[0].Details, &d); err != nil {
					t.Fatal(err)
				}
				if d.Format != c.req.Format || d.KeyIncluded != c.keyOut || d.Allowed != (c.err == nil) {
					t.Fatalf("audit details %s", entries[0].Details)
				}
				if bytes.Contains(entries[0].Details, []byte("PRIVATE")) || c.req.Password != "" && strings.Contains(string(entries[0].Details), c.req.Password) {
					t.Fatal("the audit entry holds a secret")
				}
			}
			if err != nil {
				return
			}
			switch c.req.Format {
			case FormatBundle:
				if !bytes.HasPrefix(out.Data, []byte("-----BEGIN PRIVATE KEY-----")) || !bytes.Contains(out.Data, []byte("CERTIFICATE")) {
					t.Fatal("bundle is not key then chain")
				}
			case FormatChain:
				if bytes.Contains(out.Data, []byte("PRIVATE")) || bytes.Count(out.Data, []byte("BEGIN CERTIFICATE")) != 2 {
					t.Fatal("chain export is wrong")
				}
			case FormatLeaf:
				if bytes.Count(out.Data, []byte("BEGIN CERTIFICATE")) != 1 {
					t.Fatal("leaf export is wrong")
				}
			case FormatPKCS12:
				key, cert, cas, err := pkcs12.DecodeChain(out.Data, c.req.Password)
				if err != nil {
					t.Fatal(err)
				}
				if !cert.Equal(leaf) || len(cas) != 1 || !publicKeysEqual(k.Public(), key.(crypto.Signer).Public()) {
					t.Fatal("PKCS #12 content differs")
				}
				if _, _, _, err := pkcs12.DecodeChain(out.Data, "wrong password"); err == nil {
					t.Fatal("PKCS #12 opens with the wrong password")
				}
				if out.Filename != "wildcard.example.com.p12" {
					t.Fatalf("filename %q", out.Filename)
				}
			}
		})
	}
	t.Run("disabled", func(t *testing.T) {
		off, err := New(e.store, Options{Now: e.clock.Now, Config: Config{DisableKeyExport: true}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := off.Export(ctx, ExportRequest{ID: withKey.ID, Format: FormatBundle, Role: RoleAdmin}); !errors.Is(err, ErrKeyExportForbidden) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad role config", func(t *testing.T) {
		if _, err := New(e.store, Options{Config: Config{KeyExportRoles: []string{"Admin Team"}}}); err == nil {
			t.Fatal("accepted")
		}
	})
}

func TestExpiryReportAndRefresh(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := t.Context()
	// expiries relative to t0 (all 90-day certificates)
	plan := []struct {
		left  time.Duration
		group string
	}{
		{-2 * day, "web"}, {3 * day, "web"}, {6 * day, "mail"}, {20 * day, "web"}, {29 * day, "mail"},
		{45 * day, "web"}, {80 * day, "web"}, {89 * day, "mail"},
	}
	for _, p := range plan {
		leaf, _ := issue(t, e.pki.inter, leafOpts{dns: []string{"exp.example.com"}, notBefore: t0.Add(p.left - 90*day), scts: 2, crl: true})
		if _, _, err := e.svc.Import(ctx, ImportRequest{PEM: string(pemOf(leaf, e.pki.inter.cert)), Group: p.group}, "t"); err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.svc.Expiry(ctx, ExpiryQuery{Filter: storage.CertificateFilter{Status: storage.CertStatusActive}, Horizon: 30 * day, Step: 7 * day})
	if err != nil {
		t.Fatal(err)
	}
	want := BucketCounts{Expired: 1, Within7d: 2, Within30d: 2, OK: 3, Total: 8}
	if r.Totals != want {
		t.Fatalf("totals %+v, want %+v", r.Totals, want)
	}
	if len(r.ByGroup) != 2 || r.ByGroup[0].Group != "mail" || r.ByGroup[0].Total != 3 || r.ByGroup[1].Within7d != 1 {
		t.Fatalf("by group %+v", r.ByGroup)
	}
	if len(r.ByIssuer) != 1 || r.ByIssuer[0].IssuerID != "" || r.ByIssuer[0].Total != 8 {
		t.Fatalf("by issuer %+v", r.ByIssuer)
	}
	counts := []int{}
	for _, p := range r.Timeline {
		counts = append(counts, p.Count)
	}
	if len(counts) != 5 || counts[0] != 2 || counts[1] != 0 || counts[2] != 1 || counts[3] != 0 || counts[4] != 1 {
		t.Fatalf("timeline %v", counts)
	}
	for name, q := range map[string]ExpiryQuery{
		"tiny step":    {Step: time.Minute},
		"partial days": {Step: 36 * time.Hour},
		"too far":      {Horizon: 1000 * day},
	} {
		t.Run(name, func(t *testing.T) {
			var ie *InputError
			if _, err := e.svc.Expiry(ctx, q); !errors.As(err, &ie) {
				t.Fatalf("got %v", err)
			}
		})
	}

	// ratings follow the clock once refreshed
	a, _, _ := e.svc.List(ctx, storage.CertificateFilter{Rating: "A+"}, storage.Page{})
	if len(a) != 3 {
		t.Fatalf("%d A+ certificates at t0, want 3", len(a))
	}
	e.clock.Set(t0.Add(50 * day))
	n, err := e.svc.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing re-rated 50 days later")
	}
	if n2, err := e.svc.Refresh(ctx); err != nil || n2 != 0 {
		t.Fatalf("a second refresh changed %d (%v)", n2, err)
	}
	f, _, _ := e.svc.List(ctx, storage.CertificateFilter{Rating: "F"}, storage.Page{})
	if len(f) != 6 {
		t.Fatalf("%d F certificates 50 days later, want 6 expired", len(f))
	}
}

func TestDelete(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := t.Context()
	leaf, _ := issue(t, e.pki.inter, leafOpts{dns: []string{"del.example.com"}})
	c, _, err := e.svc.Import(ctx, ImportRequest{PEM: string(pemOf(leaf))}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	tok := &storage.Token{CertificateID: c.ID, Names: []string{"del.example.com"}, Status: "active"}
	if err := e.store.Tokens().Create(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, c.ID, "alice"); !errors.Is(err, storage.ErrInUse) {
		t.Fatalf("deleting a certificate in use: %v", err)
	}
	if a := e.audits(t, "certificate.delete"); len(a) != 0 {
		t.Fatal("a refused delete was audited as done")
	}
	if err := e.store.Tokens().Delete(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if a := e.audits(t, "certificate.delete"); len(a) != 1 || a[0].Target != c.ID {
		t.Fatalf("audit %+v", a)
	}
	if err := e.svc.Delete(ctx, c.ID, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// The chain check uses the issuing ACME client's custom roots from the
// store when the system roots do not know the CA.
func TestCustomRootsFromACMEClient(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := t.Context()
	svc, err := New(e.store, Options{Now: e.clock.Now, SystemRoots: x509.NewCertPool()})
	if err != nil {
		t.Fatal(err)
	}
	iss := &storage.Issuer{Name: "private", DirectoryURL: "https://ca.internal/dir", CustomRootsPEM: string(e.pki.root.pem)}
	if err := e.store.Issuers().Create(ctx, iss); err != nil {
		t.Fatal(err)
	}
	leaf, _ := issue(t, e.pki.inter, leafOpts{dns: []string{"internal.example.com"}, crl: true})
	c, err := svc.AddIssued(ctx, pemOf(leaf, e.pki.inter.cert), nil, iss.ID, "", "")
	if err != nil {
		t.Fatal(err)
	}
	m := svc.View(c, true).Metadata
	if !m.Trust.Verified || m.Trust.TrustedBy != "acme_client" || c.Rating != "A+" {
		t.Fatalf("trust %+v rating %s %+v", m.Trust, c.Rating, m.Rating.Factors)
	}
	// the same certificate imported (no ACME client) does not verify
	leaf2, _ := issue(t, e.pki.inter, leafOpts{dns: []string{"internal2.example.com"}})
	c2, _, err := svc.Import(ctx, ImportRequest{PEM: string(pemOf(leaf2, e.pki.inter.cert))}, "t")
	if err != nil {
		t.Fatal(err)
	}
	if c2.Rating != "C" {
		t.Fatalf("imported private certificate rated %s", c2.Rating)
	}
}

// Once the inventory holds an issued certificate, the workflow that
// ordered it no longer holds its key (dropped in the same transaction), and
// the engine retrying the add after a crash, with the key gone from the
// workflow, still finds the certificate.
func TestIssuedKeyLivesOnce(t *testing.T) {
	for _, backend := range storagetest.Backends {
		t.Run(backend, func(t *testing.T) {
			e := newEnvOn(t, Config{}, storagetest.OpenStore(t, backend, 4))
			ctx := t.Context()
			iss := &storage.Issuer{Name: "le", DirectoryURL: "https://ca.test/dir"}
			if err := e.store.Issuers().Create(ctx, iss); err != nil {
				t.Fatal(err)
			}
			leaf, k := issue(t, e.pki.inter, leafOpts{dns: []string{"once.example.com"}})
			w := &storage.Workflow{IssuerID: iss.ID, Identifiers: []storage.Identifier{{Type: "dns", Value: "once.example.com"}},
				State: storage.StateDownloading, PrivateKey: storage.NewSecret(keyPEM(t, k))}
			if err := e.store.Workflows().Create(ctx, w); err != nil {
				t.Fatal(err)
			}
			c, err := e.svc.AddIssued(ctx, pemOf(leaf, e.pki.inter.cert), w.PrivateKey.Reveal(), iss.ID, w.ID, "")
			if err != nil {
				t.Fatal(err)
			}
			if c.PrivateKey.IsZero() {
				t.Fatal("the inventory did not take the key")
			}
			got, err := e.store.Workflows().Get(ctx, w.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.PrivateKey.IsZero() {
				t.Fatal("the workflow still holds the key of its issued certificate")
			}
			again, err := e.svc.AddIssued(ctx, pemOf(leaf, e.pki.inter.cert), got.PrivateKey.Reveal(), iss.ID, w.ID, "")
			if err != nil || again.ID != c.ID || again.PrivateKey.IsZero() {
				t.Fatalf("retrying the add after a crash: %+v, %v", again, err)
			}
		})
	}
}
