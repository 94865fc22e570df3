package gateway_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/acmez/v3/acme"
	"go.step.sm/crypto/jose"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// gwEnv is the whole product around the gateway: the certlocker app (real
// SQLite store, running workflow engine, an ACME client registered with an
// in-process Pebble) and the gateway served over TLS.
type gwEnv struct {
	t      testing.TB
	pebble *acmetest.Pebble
	app    *certlocker.App
	gw     *gateway.Gateway
	srv    *httptest.Server
	issuer string
	logs   *observer.ObservedLogs
}

func newGWEnv(t testing.TB, opts gateway.Options) *gwEnv {
	t.Helper()
	return newGWEnvPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true}, opts)
}

// newGWEnvPebble is newGWEnv with the upstream Pebble configured by popts.
func newGWEnvPebble(t testing.TB, popts acmetest.PebbleOptions, opts gateway.Options) *gwEnv {
	t.Helper()
	return newGWEnvStorage(t, popts, opts, nil)
}

// newGWEnvStorage is newGWEnvPebble on the given storage config (nil: a
// SQLite file in a temporary directory).
func newGWEnvStorage(t testing.TB, popts acmetest.PebbleOptions, opts gateway.Options, stor map[string]any) *gwEnv {
	t.Helper()
	p := acmetest.NewPebble(t, popts)
	dir := t.TempDir()
	if stor == nil {
		stor = map[string]any{"path": filepath.Join(dir, "c.db")}
	}
	rootsFile := filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(rootsFile, p.WFECertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(certlocker.EnvEncryptionKey, "")
	cfg, _ := json.Marshal(map[string]any{
		"storage": stor, "node_id": "gw-node",
		"issuers": []any{map[string]any{"name": "pebble", "directory_url": p.DirectoryURL(), "contacts": []string{"ops@example.com"},
			"agree_terms": true, "trusted_roots_pem_files": []string{rootsFile}}},
	})
	ctx, err := caddy.ProvisionContext(&caddy.Config{AppsRaw: caddy.ModuleMap{"certlocker": cfg}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := ctx.App("certlocker")
	if err != nil {
		t.Fatal(err)
	}
	app := v.(*certlocker.App)
	t.Cleanup(func() { _ = app.Cleanup() })
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Stop() })
	core, logs := observer.New(zap.DebugLevel)
	opts.Store, opts.Engine, opts.Node, opts.Logger = app.Store(), app.Workflows(), app.Node(), zap.New(core)
	opts.Clients = app.IssuerRegistry()
	gw, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	srv := httptest.NewTLSServer(gw)
	t.Cleanup(srv.Close)
	iss, err := app.Store().Issuers().List(t.Context(), storage.IssuerFilter{})
	if err != nil || len(iss) != 1 {
		t.Fatalf("issuers: %v %d", err, len(iss))
	}
	return &gwEnv{t: t, pebble: p, app: app, gw: gw, srv: srv, issuer: iss[0].ID, logs: logs}
}

func (e *gwEnv) token(names ...string) (*storage.Token, *gateway.Credentials) {
	e.t.Helper()
	tok, creds, err := e.app.Tokens().Create(e.t.Context(), "test", gateway.CreateRequest{Names: names, IssuerID: e.issuer})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok, creds
}

func (e *gwEnv) client(path string) *acme.Client {
	return &acme.Client{Directory: e.srv.URL + path, HTTPClient: e.srv.Client(), PollInterval: 20 * time.Millisecond,
		PollTimeout: time.Minute}
}

func newKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// account registers an edge account, with EAB if creds are given.
func (e *gwEnv) account(cl *acme.Client, creds *gateway.Credentials) (acme.Account, error) {
	acct := acme.Account{Contact: []string{"mailto:edge@example.com"}, TermsOfServiceAgreed: true, PrivateKey: newKey(e.t, elliptic.P256())}
	if creds != nil {
		if err := acct.SetExternalAccountBinding(e.t.Context(), cl, acme.EAB{KeyID: creds.EABKeyID, MACKey: creds.EABHMACKey}); err != nil {
			return acct, err
		}
	}
	return cl.NewAccount(e.t.Context(), acct)
}

func csrFor(t testing.TB, key crypto.Signer, names ...string) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: names[0]}, DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// pull orders names and finalizes with csr, returning the chain.
func (e *gwEnv) pull(cl *acme.Client, acct acme.Account, csr []byte, names ...string) ([]*x509.Certificate, error) {
	return pullWith(e.t, cl, acct, csr, names...)
}

// pullWith is one edge pull against the gateway, whose authorizations come
// back valid.
func pullWith(t testing.TB, cl *acme.Client, acct acme.Account, csr []byte, names ...string) ([]*x509.Certificate, error) {
	ctx := t.Context()
	var ids []acme.Identifier
	for _, n := range names {
		ids = append(ids, acme.Identifier{Type: "dns", Value: n})
	}
	order, err := cl.NewOrder(ctx, acct, acme.Order{Identifiers: ids})
	if err != nil {
		return nil, err
	}
	if len(order.Authorizations) != len(names) {
		t.Fatalf("order has %d authorizations for %d names", len(order.Authorizations), len(names))
	}
	for _, u := range order.Authorizations {
		az, err := cl.GetAuthorization(ctx, acct, u)
		if err != nil {
			return nil, err
		}
		if az.Status != "valid" {
			t.Fatalf("authorization %s is %s", u, az.Status)
		}
		types := map[string]bool{}
		for _, ch := range az.Challenges {
			types[ch.Type] = ch.Status == "valid"
		}
		if !types["http-01"] || !types["dns-01"] {
			t.Fatalf("authorization challenges %+v: want valid http-01 and dns-01", az.Challenges)
		}
	}
	order, err = cl.FinalizeOrder(ctx, acct, order, csr)
	if err != nil {
		return nil, err
	}
	chains, err := cl.GetCertificateChain(ctx, acct, order.Certificate)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for rest := chains[0].ChainPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out, nil
}

// checkEdgeCert asserts the chain carries the edge's key and chains to
// Pebble's root.
func (e *gwEnv) checkEdgeCert(chain []*x509.Certificate, key *ecdsa.PrivateKey, name string) {
	e.t.Helper()
	if len(chain) < 2 {
		e.t.Fatalf("chain has %d certificates; want the full chain", len(chain))
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		e.t.Fatal("the edge certificate does not carry the edge's public key")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: e.pebble.RootPool(), Intermediates: inter, DNSName: name}); err != nil {
		e.t.Fatalf("the edge certificate does not chain to Pebble's root: %v", err)
	}
}

func TestPullThroughEAB(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	tok, creds := e.token("edge.example.test", "www.example.test")
	cl := e.client(gateway.DirectoryPath)
	dir, err := cl.GetDirectory(t.Context())
	if err != nil || dir.Meta == nil || !dir.Meta.ExternalAccountRequired {
		t.Fatalf("directory %+v, %v: want externalAccountRequired", dir.Meta, err)
	}
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	before := e.pebble.NewOrders()
	chain, err := e.pull(cl, acct, csrFor(t, key, "edge.example.test", "www.example.test"), "edge.example.test", "www.example.test")
	if err != nil {
		t.Fatal(err)
	}
	e.checkEdgeCert(chain, key, "www.example.test")
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull", n)
	}
	// the workflow is visible, of trigger gateway, and the inventory
	// certificate holds no key and is linked to the token
	ws, _, err := e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	if err != nil || len(ws) != 1 || ws[0].Trigger != "gateway" || ws[0].State != storage.StateIssued {
		t.Fatalf("workflows: %v %+v", err, ws)
	}
	c, err := e.app.Store().Certificates().Get(t.Context(), ws[0].CertificateID)
	if err != nil || !c.PrivateKey.IsZero() {
		t.Fatalf("inventory certificate: %v", err)
	}
	got, _ := e.app.Tokens().Get(t.Context(), tok.ID)
	if got.CertificateID != c.ID {
		t.Fatalf("token certificate %q, want %q", got.CertificateID, c.ID)
	}
	if got.LastUsedAt.IsZero() || got.LastUsedAt.Before(c.CreatedAt.Add(-time.Minute)) {
		t.Fatalf("the token's last use is %v after a pull", got.LastUsedAt)
	}
	accts, _ := e.app.Tokens().Accounts(t.Context(), tok.ID)
	if len(accts) != 1 {
		t.Fatalf("%d accounts bound", len(accts))
	}
	audit, _, _ := e.app.Store().Audit().List(t.Context(), storage.AuditFilter{Target: tok.ID}, storage.Page{})
	seen := map[string]bool{}
	for _, a := range audit {
		seen[a.Action] = true
		if a.Action != "token.create" && !strings.Contains(string(a.Details), "127.0.0.1") {
			t.Fatalf("audit %s lacks the source address: %s", a.Action, a.Details)
		}
	}
	for _, want := range []string{"token.account_bound", "token.order", "token.finalize"} {
		if !seen[want] {
			t.Fatalf("audit lacks %s: %v", want, seen)
		}
	}
	e.noSecretsLogged(creds)
}

func (e *gwEnv) noSecretsLogged(creds *gateway.Credentials) {
	secret := strings.TrimSuffix(strings.TrimPrefix(creds.DirectoryPath, gateway.TokenPathPrefix), "/directory")
	for _, l := range e.logs.All() {
		b, _ := json.Marshal(l.ContextMap())
		s := l.Message + string(b)
		if strings.Contains(s, creds.EABHMACKey) || strings.Contains(s, secret) {
			e.t.Fatalf("a log line carries a token secret: %s", l.Message)
		}
	}
}

func TestPullThroughTokenURL(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	tok, creds := e.token("edge.example.test")
	cl := e.client(creds.DirectoryPath)
	dir, err := cl.GetDirectory(t.Context())
	if err != nil || (dir.Meta != nil && dir.Meta.ExternalAccountRequired) || !strings.Contains(dir.NewOrder, creds.DirectoryPath[:len(creds.DirectoryPath)-len("directory")]) {
		t.Fatalf("directory %+v, %v", dir, err)
	}
	acct, err := e.account(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P384())
	before := e.pebble.NewOrders()
	chain, err := e.pull(cl, acct, csrFor(t, key, "edge.example.test"), "edge.example.test")
	if err != nil {
		t.Fatal(err)
	}
	e.checkEdgeCert(chain, key, "edge.example.test")
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull", n)
	}
	if accts, _ := e.app.Tokens().Accounts(t.Context(), tok.ID); len(accts) != 1 || accts[0].AccountID == "" {
		t.Fatalf("accounts %+v", accts)
	}
	// a wrong URL secret is no directory
	bad := e.client(gateway.TokenPathPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/directory")
	if _, err := bad.GetDirectory(t.Context()); err == nil {
		t.Fatal("a wrong URL secret served a directory")
	}
	e.noSecretsLogged(creds)
}

func problemType(err error) string {
	var p acme.Problem
	if errors.As(err, &p) {
		return strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:")
	}
	return "(not a problem: " + errString(err) + ")"
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func errorsAs(err error, p *acme.Problem) bool { return errors.As(err, p) }

func pemDecode(b []byte) ([]byte, []byte) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, rest
	}
	return blk.Bytes, rest
}

// A re-pull with the same key while the certificate is fresh returns it
// without an upstream order; a new key gets a new certificate.
func TestFreshRepullReuses(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("re.example.test")
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	first, err := e.pull(cl, acct, csrFor(t, key, "re.example.test"), "re.example.test")
	if err != nil {
		t.Fatal(err)
	}
	before := e.pebble.NewOrders()
	again, err := e.pull(cl, acct, csrFor(t, key, "re.example.test"), "re.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if again[0].SerialNumber.Cmp(first[0].SerialNumber) != 0 || e.pebble.NewOrders() != before {
		t.Fatalf("a fresh re-pull placed %d upstream orders (serial same: %v)", e.pebble.NewOrders()-before,
			again[0].SerialNumber.Cmp(first[0].SerialNumber) == 0)
	}
	e.checkEdgeCert(again, key, "re.example.test")
	other := newKey(t, elliptic.P256())
	fresh, err := e.pull(cl, acct, csrFor(t, other, "re.example.test"), "re.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if fresh[0].SerialNumber.Cmp(first[0].SerialNumber) == 0 || e.pebble.NewOrders() != before+1 {
		t.Fatal("a new key must get a new certificate, with one upstream order")
	}
	e.checkEdgeCert(fresh, other, "re.example.test")
}

func storageFilterAll() storage.WorkflowFilter { return storage.WorkflowFilter{} }
func storagePageAll() storage.Page             { return storage.Page{} }

// Account key rollover (smallstep answers 501): the new key works, the old
// one no longer does.
func TestKeyChange(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("kc.example.test")
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	old := acct
	newK := newKey(t, elliptic.P384())
	acct, err = cl.AccountKeyRollover(t.Context(), acct, newK)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	chain, err := e.pull(cl, acct, csrFor(t, key, "kc.example.test"), "kc.example.test")
	if err != nil {
		t.Fatal(err)
	}
	e.checkEdgeCert(chain, key, "kc.example.test")
	if _, err := cl.NewOrder(t.Context(), old, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "kc.example.test"}}}); err == nil {
		t.Fatal("the old account key still works")
	}
	// the new key is the account's: a new-account lookup finds it
	found, err := cl.GetAccount(t.Context(), acme.Account{PrivateKey: newK})
	if err != nil || found.Location != acct.Location {
		t.Fatalf("lookup by new key: %v %q", err, found.Location)
	}
}

// An edge's revocation, by its account or by the certificate's key, is
// forwarded to the upstream CA and marks the inventory certificate.
func TestRevokeForwardedUpstream(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("rv.example.test")
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.account(e.client(creds.DirectoryPath), nil) // the token's second account
	if err != nil {
		t.Fatal(err)
	}
	for i, byKey := range []bool{false, true} {
		key := newKey(t, elliptic.P256())
		chain, err := e.pull(cl, acct, csrFor(t, key, "rv.example.test"), "rv.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.RevokeCertificate(t.Context(), other, chain[0], nil, 0); problemType(err) != "unauthorized" {
			t.Fatalf("another account revoked: %v", err)
		}
		if byKey {
			err = cl.RevokeCertificate(t.Context(), acct, chain[0], key, 4)
		} else {
			err = cl.RevokeCertificate(t.Context(), acct, chain[0], nil, 1)
		}
		if err != nil {
			t.Fatalf("revoke %d: %v", i, err)
		}
		if err := cl.RevokeCertificate(t.Context(), acct, chain[0], nil, 1); problemType(err) != "alreadyRevoked" {
			t.Fatalf("second revoke: %v", err)
		}
		c, err := e.app.Store().Certificates().GetByFingerprint(t.Context(), fingerprint(chain[0]))
		if err != nil || c.Status != storage.CertStatusRevoked {
			t.Fatalf("inventory: %v %+v", err, c)
		}
	}
}

func fingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

// renewalInfo answers for edge certificates with the upstream CA's window;
// replaces is honoured once and passed on.
func TestRenewalInfoAndReplaces(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("ari.example.test")
	cl := e.client(creds.DirectoryPath)
	acct, err := e.account(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := cl.GetDirectory(t.Context())
	if err != nil || !strings.HasPrefix(dir.RenewalInfo, e.srv.URL+strings.TrimSuffix(creds.DirectoryPath, "/directory")) {
		t.Fatalf("directory renewalInfo %q, %v", dir.RenewalInfo, err)
	}
	chain, err := e.pull(cl, acct, csrFor(t, newKey(t, elliptic.P256()), "ari.example.test"), "ari.example.test")
	if err != nil {
		t.Fatal(err)
	}
	start := chain[0].NotBefore.Add(time.Hour).UTC().Truncate(time.Second)
	end := start.Add(2 * time.Hour)
	if err := e.pebble.SetRenewalWindow(chain[0], start, end); err != nil {
		t.Fatal(err)
	}
	ri, err := cl.GetRenewalInfo(t.Context(), chain[0])
	if err != nil || !ri.SuggestedWindow.Start.Equal(start) || !ri.SuggestedWindow.End.Equal(end) {
		t.Fatalf("renewal info %+v, %v; want the upstream window %s–%s", ri.SuggestedWindow, err, start, end)
	}
	ariID, _ := acme.ARIUniqueIdentifier(chain[0])
	order, err := cl.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "ari.example.test"}}, Replaces: ariID})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	order, err = cl.FinalizeOrder(t.Context(), acct, order, csrFor(t, key, "ari.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "ari.example.test"}}, Replaces: ariID}); problemType(err) != "alreadyReplaced" {
		t.Fatalf("second replaces: %v", err)
	}
	if _, err := cl.NewOrder(t.Context(), acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "ari.example.test"}}, Replaces: "AAAA.AAAA"}); problemType(err) != "malformed" {
		t.Fatalf("unknown replaces: %v", err)
	}
	// the upstream order carried replaces: the replacing workflow names it
	ws, _, _ := e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	found := false
	for _, w := range ws {
		if strings.Contains(string(w.Data), ariID) {
			found = true
		}
	}
	if !found {
		t.Fatal("no workflow passed replaces upstream")
	}
}

// Per-token pacing: past the duplicate-certificate limit a new key's pull
// is rateLimited with Retry-After and reaches no CA; a fresh re-pull still
// works.
func TestDuplicatePacing(t *testing.T) {
	e := newGWEnv(t, gateway.Options{DuplicateLimit: 1, DuplicateWindow: time.Hour})
	_, creds := e.token("pace.example.test")
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	if _, err := e.pull(cl, acct, csrFor(t, key, "pace.example.test"), "pace.example.test"); err != nil {
		t.Fatal(err)
	}
	before := e.pebble.NewOrders()
	_, err = e.pull(cl, acct, csrFor(t, newKey(t, elliptic.P256()), "pace.example.test"), "pace.example.test")
	var p acme.Problem
	if !errors.As(err, &p) || p.Status != 429 || !strings.HasSuffix(p.Type, ":rateLimited") {
		t.Fatalf("second new certificate: %v", err)
	}
	if e.pebble.NewOrders() != before {
		t.Fatal("a paced pull reached the upstream CA")
	}
	if _, err := e.pull(cl, acct, csrFor(t, key, "pace.example.test"), "pace.example.test"); err != nil {
		t.Fatalf("a fresh re-pull is not paced: %v", err)
	}
}

// Two gateway nodes over one store behind one name: an account made on one
// pulls on the other, and a finalize that outlasted its wait on node A
// (answered processing) is finished by node B from the shared store: B
// answers a retried finalize with the same workflow and turns the order
// valid (no second upstream order).
func TestTwoNodesShareState(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	gwB, err := gateway.New(gateway.Options{Store: e.app.Store(), Engine: e.app.Workflows(), Node: "node-b",
		FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second, Clients: e.app.IssuerRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var useB atomic.Bool
	e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if useB.Load() {
			gwB.ServeHTTP(w, r)
			return
		}
		e.gw.ServeHTTP(w, r)
	})
	_, creds := e.token("ha.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)
	resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "ha.example.test"}}})
	if resp.StatusCode != 201 {
		t.Fatalf("newOrder: %d %s", resp.StatusCode, b)
	}
	orderURL, finalizeURL := resp.Header.Get("Location"), decode(t, b)["finalize"].(string)
	key := newKey(t, elliptic.P256())
	csr := base64.RawURLEncoding.EncodeToString(csrFor(t, key, "ha.example.test"))
	before := e.pebble.NewOrders()
	release := e.pebble.HoldIssuance()
	defer release()
	resp, b = h.post(finalizeURL, map[string]string{"csr": csr})
	if resp.StatusCode != 200 || decode(t, b)["status"] != "processing" {
		t.Fatalf("held finalize on node A: %d %s", resp.StatusCode, b)
	}
	useB.Store(true) // node A is gone; B answers from the shared store
	resp, b = h.post(finalizeURL, map[string]string{"csr": csr})
	if resp.StatusCode != 200 || decode(t, b)["status"] != "processing" {
		t.Fatalf("retried finalize on node B: %d %s", resp.StatusCode, b)
	}
	release()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, b = h.post(orderURL, nil)
		o := decode(t, b)
		if o["status"] == "valid" {
			resp, b = h.post(o["certificate"].(string), nil)
			if resp.StatusCode != 200 || !key.PublicKey.Equal(parseLeaf(t, b).PublicKey) {
				t.Fatalf("certificate from node B: %d", resp.StatusCode)
			}
			break
		}
		if o["status"] != "processing" || time.Now().After(deadline) {
			t.Fatalf("order on node B: %d %s", resp.StatusCode, b)
		}
	}
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders", n)
	}
}

// Nonces expire: one older than an hour is refused, and expired ones are
// removed from the store.
func TestNoncesExpire(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	e := newGWEnv(t, gateway.Options{Clock: clock})
	_, creds := e.token("nonce.example.test")
	cl := e.client(creds.DirectoryPath)
	if _, err := e.account(cl, nil); err != nil { // leaves a fresh nonce in the client
		t.Fatal(err)
	}
	kvs, _ := e.app.Store().ACME().List(t.Context(), "nonces")
	if len(kvs) == 0 {
		t.Fatal("no nonce stored")
	}
	// a nonce used after its hour is refused
	dir, _ := cl.GetDirectory(t.Context())
	resp, err := e.srv.Client().Head(dir.NewNonce)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	old := resp.Header.Get("Replay-Nonce")
	offset.Store(int64(2 * time.Hour))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: newKey(t, elliptic.P256())}, &jose.SignerOptions{EmbedJWK: true,
		ExtraHeaders: map[jose.HeaderKey]any{"nonce": old, "url": dir.NewAccount}})
	if err != nil {
		t.Fatal(err)
	}
	jws, _ := signer.Sign([]byte(`{"onlyReturnExisting":true}`))
	r2, err := e.srv.Client().Post(dir.NewAccount, "application/jose+json", strings.NewReader(jws.FullSerialize()))
	if err != nil {
		t.Fatal(err)
	}
	var prob map[string]any
	_ = json.NewDecoder(r2.Body).Decode(&prob)
	r2.Body.Close()
	if prob["type"] != "urn:ietf:params:acme:error:badNonce" {
		t.Fatalf("an expired nonce: %v", prob)
	}
	// the client's cached nonce is now expired: acmez retries badNonce
	// with a fresh one, and the fresh nonce's creation removes the old
	if _, err := e.account(cl, nil); err != nil {
		t.Fatal(err)
	}
	after, _ := e.app.Store().ACME().List(t.Context(), "nonces")
	for _, kv := range after {
		if kv.Key < fmt.Sprintf("%011x", clock().Add(-time.Hour).Unix()) {
			t.Fatalf("expired nonce %s kept", kv.Key)
		}
	}
}

// A node that died after recording the pull and before creating its
// workflow: the retried finalize creates the workflow under the recorded
// ID, one upstream order.
func TestFinalizeAfterCrashBeforeWorkflow(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	tok, creds := e.token("crash.example.test")
	cl := e.client(creds.DirectoryPath)
	acct, err := e.account(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	csr := csrFor(t, key, "crash.example.test")
	h := sha256.Sum256(csr)
	wfID := storage.NewID("wf")
	rec, _ := json.Marshal(map[string]any{"workflow_id": wfID, "token_id": tok.ID, "created": time.Now().UTC()})
	if err := e.app.Store().ACME().Set(t.Context(), "gateway_pulls", tok.ID+"/"+hex.EncodeToString(h[:]), rec); err != nil {
		t.Fatal(err)
	}
	before := e.pebble.NewOrders()
	chain, err := e.pull(cl, acct, csr, "crash.example.test")
	if err != nil {
		t.Fatal(err)
	}
	e.checkEdgeCert(chain, key, "crash.example.test")
	w, err := e.app.Workflows().Get(t.Context(), wfID)
	if err != nil || w.State != storage.StateIssued || w.Trigger != "gateway" {
		t.Fatalf("workflow %s: %v %+v", wfID, err, w)
	}
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("%d upstream orders", n)
	}
}

// After a rotation both the old and the new EAB key bind accounts during
// the grace period; with no grace the old one is refused at once.
func TestRotatedEABKeys(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	tok, old, err := e.app.Tokens().Create(t.Context(), "test", gateway.CreateRequest{Names: []string{"rot.example.test"},
		IssuerID: e.issuer, MaxAccounts: 10})
	if err != nil {
		t.Fatal(err)
	}
	_, fresh, err := e.app.Tokens().Rotate(t.Context(), "test", tok.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl := e.client(gateway.DirectoryPath)
	for _, c := range []*gateway.Credentials{old, fresh} {
		if _, err := e.account(cl, c); err != nil {
			t.Fatalf("during grace: %v", err)
		}
	}
	if _, err := e.account(e.client(old.DirectoryPath), nil); err != nil {
		t.Fatalf("old URL during grace: %v", err)
	}
	_, newest, err := e.app.Tokens().Rotate(t.Context(), "test", tok.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.account(cl, fresh); problemType(err) != "unauthorized" {
		t.Fatalf("replaced key without grace: %v", err)
	}
	if _, err := e.account(cl, newest); err != nil {
		t.Fatal(err)
	}
}
