package workflow_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	inv "github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

const zone = "example.test"

// env is a real CA (in-process Pebble), a real authoritative DNS server,
// a real SQLite store and the engine's HTTP-01 handler on the port the
// CA's validator dials.
type env struct {
	t       testing.TB
	pebble  *acmetest.Pebble
	dns     *acmetest.DNSServer
	store   storage.Store
	issuer  *storage.Issuer
	clients *accountClients
	// cf is the Cloudflare API stand-in the DNS provider client "dns_test"
	// publishes through, into the DNS server the CA queries
	cf   *acmetest.Cloudflare
	pres *dnsPresenter
	inv  *inventory
	// memHTTP01 holds http-01 answers of clients other than the engine
	memHTTP01 sync.Map
	// stopHTTP01 frees the port the CA dials for http-01
	stopHTTP01 func()
}

func newEnv(t testing.TB, opts acmetest.PebbleOptions) *env {
	t.Helper()
	dns := acmetest.NewDNSServer(t, zone)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(strings.Split(l.Addr().String(), ":")[1])
	opts.DNSServer, opts.HTTPPort = dns.Addr(), port
	p := acmetest.NewPebble(t, opts)
	e := newEnvCA(t, dns, "pebble", p.DirectoryURL(), p.HTTPClient())
	e.pebble = p
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := e.memHTTP01.Load(strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")); ok {
			w.Write([]byte(v.(string)))
			return
		}
		if !workflow.ServeChallenge(e.store, nil, w, r) {
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e.stopHTTP01 = func() { srv.Close() }
	return e
}

// newEnvCA is the env around any ACME server (directory, and a client
// that trusts it) that validates dns-01 through dns.
func newEnvCA(t testing.TB, dns *acmetest.DNSServer, caName, directory string, hc *http.Client) *env {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "certlocker.db"), storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, dns: dns, store: st}
	iss := &storage.Issuer{Name: caName, DirectoryURL: directory, Status: "valid"}
	if err := st.Issuers().Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	e.issuer = iss
	// the DNS provider client the tests' dns-01 identifiers name: a real
	// Cloudflare client of the real DNS provider service, talking to the
	// API stand-in, which publishes into the DNS server the CA queries
	e.cf = acmetest.NewCloudflare(t, dns, acmetest.WithCloudflareZones(zone))
	e.cf.AddToken(cfToken, acmetest.PermZoneRead(zone), acmetest.PermDNSEdit(zone))
	if err := st.DNSProviders().Create(t.Context(), &storage.DNSProvider{ID: "dns_test", Name: "harness-cf", Type: dnsproviders.TypeCloudflare,
		Credentials: storage.NewSecret([]byte(`{"api_token":"` + cfToken + `"}`)), Zones: []string{zone}, Settings: []byte(`{}`),
		Status: dnsproviders.StatusUnverified}); err != nil {
		t.Fatal(err)
	}
	_, nsPort, _ := net.SplitHostPort(dns.Addr())
	port53, _ := strconv.Atoi(nsPort)
	e.clients = &accountClients{dir: directory, hc: hc}
	e.pres = &dnsPresenter{svc: dnsproviders.New(st, dnsproviders.Options{Node: "test", HTTPClient: e.cf.HTTPClient(),
		Resolvers: []string{dns.Addr()}, NameserverPort: port53, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})}
	invSvc, err := inv.New(st, inv.Options{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e.inv = &inventory{svc: invSvc}
	return e
}

// name returns a fresh host name under the zone that resolves to the
// HTTP-01 server.
func (e *env) name(label string) string {
	n := label + "." + zone
	e.dns.SetAddrs(n, netip.MustParseAddr("127.0.0.1"))
	return n
}

func (e *env) engine(node string, clock func() time.Time) (*workflow.Engine, workflow.Options) {
	opts := workflow.Options{Store: e.store, Node: node, Logger: zap.NewNop(), Clock: clock, Concurrency: 8,
		Retry: workflow.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Nanosecond, MaxDelay: time.Nanosecond}}
	return e.newEngine(opts), opts
}

func (e *env) newEngine(opts workflow.Options) *workflow.Engine {
	eng, err := workflow.New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	eng.SetDeps(workflow.Deps{Clients: e.clients, DNS: e.pres, Inventory: e.inv})
	return eng
}

// deactivateAccount deactivates the env issuer's account at the CA, which
// then refuses its orders.
func (e *env) deactivateAccount(t *testing.T) {
	t.Helper()
	cl, acct, err := e.clients.Client(t.Context(), e.issuer.ID)
	if err != nil {
		t.Fatal(err)
	}
	acct.Status = "deactivated"
	if _, err := cl.UpdateAccount(t.Context(), acct); err != nil {
		t.Fatal(err)
	}
}

// accountClients registers one account per issuer at the CA (Pebble, or
// another ACME server) and counts new orders and finalize requests.
type accountClients struct {
	dir       string
	hc        *http.Client
	mu        sync.Mutex
	accts     map[string]acme.Account // one account per issuer
	newOrders atomic.Int64
	finalizes atomic.Int64
	// afterFinalize, if set, runs once the CA answered a finalize request
	// and may turn its answer into an error (a node dying right then)
	afterFinalize func() error
	fail          error
}

type countingTransport struct {
	next http.RoundTripper
	c    *accountClients
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	finalize := r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/finalize")
	if r.Method == http.MethodPost && (strings.HasSuffix(r.URL.Path, "/order-plz") || strings.HasSuffix(r.URL.Path, "/new-order")) {
		t.c.newOrders.Add(1)
	}
	resp, err := t.next.RoundTrip(r)
	if finalize && err == nil {
		t.c.finalizes.Add(1)
		t.c.mu.Lock()
		after := t.c.afterFinalize
		t.c.mu.Unlock()
		if after != nil {
			if aerr := after(); aerr != nil {
				resp.Body.Close()
				return nil, aerr
			}
		}
	}
	return resp, err
}

func (c *accountClients) Client(ctx context.Context, issuerID string) (*acme.Client, acme.Account, error) {
	if c.fail != nil {
		return nil, acme.Account{}, c.fail
	}
	hc := *c.hc
	hc.Transport = countingTransport{next: hc.Transport, c: c}
	cl := &acme.Client{Directory: c.dir, HTTPClient: &hc}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.accts[issuerID]; ok {
		return cl, a, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, acme.Account{}, err
	}
	a, err := cl.NewAccount(ctx, acme.Account{PrivateKey: key, TermsOfServiceAgreed: true,
		Contact: []string{"mailto:ops@example.test"}})
	if err != nil {
		return nil, acme.Account{}, err
	}
	if c.accts == nil {
		c.accts = map[string]acme.Account{}
	}
	c.accts[issuerID] = a
	return cl, a, nil
}

const cfToken = "cf-harness-token-0123456789abcdef"

// dnsPresenter is the real DNS provider service, with failures injected
// in front of it.
type dnsPresenter struct {
	svc  *dnsproviders.Service
	fail atomic.Pointer[error]
}

func (p *dnsPresenter) Present(ctx context.Context, providerID, workflowID, fqdn, value string) (*storage.ChallengeRecord, error) {
	if f := p.fail.Load(); f != nil {
		return nil, *f
	}
	return p.svc.Present(ctx, providerID, workflowID, fqdn, value)
}

func (p *dnsPresenter) WaitPropagation(ctx context.Context, rec *storage.ChallengeRecord) (time.Duration, error) {
	return p.svc.WaitPropagation(ctx, rec)
}

func (p *dnsPresenter) CleanUpWorkflow(ctx context.Context, workflowID string) error {
	return p.svc.CleanUpWorkflow(ctx, workflowID)
}

func (p *dnsPresenter) CleanUp(ctx context.Context, rec *storage.ChallengeRecord) error {
	return p.svc.CleanUp(ctx, rec)
}

// inventory is the real inventory service behind the engine's interface.
type inventory struct{ svc *inv.Service }

func (i *inventory) AddIssued(ctx context.Context, chainPEM, keyPEM []byte, issuerID, workflowID, profile string) (*storage.Certificate, error) {
	return i.svc.AddIssued(ctx, chainPEM, keyPEM, issuerID, workflowID, profile)
}

// leaf parses the stored certificate of a workflow.
func leaf(t *testing.T, st storage.Store, certID string) *x509.Certificate {
	t.Helper()
	c, err := st.Certificates().Get(t.Context(), certID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(c.ChainPEM))
	x, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return x
}
