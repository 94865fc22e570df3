package workflow_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
)

// caProxy is a real HTTP hop in front of Pebble: every ACME request of the
// engine goes through it to the CA and back (Pebble builds its URLs from the
// Host header, which the hop keeps, so the client only ever talks to the
// hop). Tests read what the engine sent in its newOrder requests and what
// the CA answered, and can have a newOrder answered with a problem instead
// of reaching the CA, as a CA's rate limiter in front of it would.
type caProxy struct {
	t        testing.TB
	srv      *httptest.Server
	upstream *url.URL
	next     http.RoundTripper

	mu     sync.Mutex
	orders []sentOrder
	faults map[string]orderFault // by identifier, answered once
}

// sentOrder is one newOrder request and the status it was answered with.
type sentOrder struct {
	Identifiers []string
	Replaces    string
	Status      int
}

// orderFault is a problem document answered to a newOrder.
type orderFault struct {
	Status      int
	ProblemType string
	Detail      string
	RetryAfter  string
}

func newCAProxy(t testing.TB, p *acmetest.Pebble) *caProxy {
	t.Helper()
	up, err := url.Parse(p.URL())
	if err != nil {
		t.Fatal(err)
	}
	cp := &caProxy{t: t, upstream: up, next: p.HTTPClient().Transport, faults: map[string]orderFault{}}
	cp.srv = httptest.NewTLSServer(http.HandlerFunc(cp.serve))
	t.Cleanup(cp.srv.Close)
	return cp
}

func (cp *caProxy) DirectoryURL() string { return cp.srv.URL + "/dir" }

// failNewOrder answers f, once, to the next newOrder naming identifier.
func (cp *caProxy) failNewOrder(identifier string, f orderFault) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.faults[identifier] = f
}

// sent returns the newOrder requests naming identifier, in order.
func (cp *caProxy) sent(identifier string) []sentOrder {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []sentOrder
	for _, o := range cp.orders {
		if slices.Contains(o.Identifiers, identifier) {
			out = append(out, o)
		}
	}
	return out
}

// created counts the orders the CA created naming identifier.
func (cp *caProxy) created(identifier string) int {
	n := 0
	for _, o := range cp.sent(identifier) {
		if o.Status == http.StatusCreated {
			n++
		}
	}
	return n
}

func (cp *caProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	var order *sentOrder
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/order-plz") {
		order = newOrderOf(body)
		cp.mu.Lock()
		for _, id := range order.Identifiers {
			if f, ok := cp.faults[id]; ok {
				delete(cp.faults, id)
				order.Status = f.Status
				cp.orders = append(cp.orders, *order)
				cp.mu.Unlock()
				if f.RetryAfter != "" {
					w.Header().Set("Retry-After", f.RetryAfter)
				}
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(f.Status)
				json.NewEncoder(w).Encode(map[string]any{"type": f.ProblemType, "detail": f.Detail, "status": f.Status})
				return
			}
		}
		cp.mu.Unlock()
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = cp.upstream.Scheme, cp.upstream.Host
	out.Host = r.Host // Pebble builds its URLs (and checks the JWS url) from it
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	resp, err := cp.next.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if order != nil {
		order.Status = resp.StatusCode
		cp.mu.Lock()
		cp.orders = append(cp.orders, *order)
		cp.mu.Unlock()
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// newOrderOf reads the identifiers and replaces of a newOrder JWS body.
func newOrderOf(body []byte) *sentOrder {
	var jws struct{ Payload string }
	_ = json.Unmarshal(body, &jws)
	raw, _ := base64.RawURLEncoding.DecodeString(jws.Payload)
	var p struct {
		Identifiers []struct{ Value string }
		Replaces    string
	}
	_ = json.Unmarshal(raw, &p)
	o := &sentOrder{Replaces: p.Replaces}
	for _, id := range p.Identifiers {
		o.Identifiers = append(o.Identifiers, id.Value)
	}
	return o
}

// proxyClients gives the engine ACME clients that reach Pebble through the
// hop, one account per ACME client ID.
type proxyClients struct {
	cp    *caProxy
	mu    sync.Mutex
	accts map[string]acme.Account
}

func (c *proxyClients) Client(ctx context.Context, issuerID string) (*acme.Client, acme.Account, error) {
	cl := &acme.Client{Directory: c.cp.DirectoryURL(), HTTPClient: c.cp.srv.Client()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.accts[issuerID]; ok {
		return cl, a, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, acme.Account{}, err
	}
	a, err := cl.NewAccount(ctx, acme.Account{PrivateKey: key, TermsOfServiceAgreed: true, Contact: []string{"mailto:ops@example.test"}})
	if err != nil {
		return nil, acme.Account{}, err
	}
	if c.accts == nil {
		c.accts = map[string]acme.Account{}
	}
	c.accts[issuerID] = a
	return cl, a, nil
}

// deactivate deactivates the account of an ACME client at the CA, which
// then refuses its orders (unauthorized).
func (c *proxyClients) deactivate(t *testing.T, issuerID string) {
	t.Helper()
	cl, acct, err := c.Client(t.Context(), issuerID)
	if err != nil {
		t.Fatal(err)
	}
	acct.Status = "deactivated"
	if _, err := cl.UpdateAccount(t.Context(), acct); err != nil {
		t.Fatal(err)
	}
}

// throughProxy puts a new hop in front of e's Pebble and returns it with
// ACME clients that reach the CA through it.
func (e *env) throughProxy(t *testing.T) (*caProxy, *proxyClients) {
	t.Helper()
	cp := newCAProxy(t, e.pebble)
	return cp, &proxyClients{cp: cp}
}

// engineWith returns an engine on e with these ACME clients and DNS
// presenter (nil: the harness presenter).
func (e *env) engineWith(t *testing.T, opts workflow.Options, clients workflow.ACMEClients, dns workflow.DNSPresenter) *workflow.Engine {
	t.Helper()
	if dns == nil {
		dns = e.pres
	}
	eng, err := workflow.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetDeps(workflow.Deps{Clients: clients, DNS: dns, Inventory: e.inv})
	return eng
}

// realDNS is the DNS provider store (the real service) with one Cloudflare
// provider client, served by the Cloudflare API stand-in, publishing into
// the authoritative DNS server the CA queries.
func realDNS(t *testing.T, e *env, node string) (*dnsproviders.Service, string) {
	t.Helper()
	cf := acmetest.NewCloudflare(t, e.dns, acmetest.WithCloudflareZones(zone))
	const token = "cf-crash-test-token-0123456789abcdef"
	cf.AddToken(token, acmetest.PermZoneRead(zone), acmetest.PermDNSEdit(zone))
	_, portStr, _ := net.SplitHostPort(e.dns.Addr())
	nsPort, _ := strconv.Atoi(portStr)
	dns := dnsproviders.New(e.store, dnsproviders.Options{Node: node, HTTPClient: cf.HTTPClient(),
		Resolvers: []string{e.dns.Addr()}, NameserverPort: nsPort, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	creds, _ := json.Marshal(map[string]string{"api_token": token})
	prov, err := dns.Create(t.Context(), "test", dnsproviders.Config{Name: "cf-" + node, Type: "cloudflare", Credentials: creds, Zones: []string{zone}})
	if err != nil {
		t.Fatal(err)
	}
	return dns, prov.ID
}
