package dnsproviders

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cfmodule "github.com/caddy-dns/cloudflare"
	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
)

// issue obtains a certificate for sans from Pebble through the solver, and
// returns the leaf.
func issue(t *testing.T, ca *acmetest.Pebble, solver acmez.Solver, sans ...string) *x509.Certificate {
	t.Helper()
	client := &acmez.Client{
		Client: &acme.Client{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), PollInterval: 20 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)},
		ChallengeSolvers: map[string]acmez.Solver{acme.ChallengeTypeDNS01: solver},
	}
	acctKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	acct, err := client.NewAccount(t.Context(), acme.Account{TermsOfServiceAgreed: true, PrivateKey: acctKey})
	if err != nil {
		t.Fatal(err)
	}
	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := acmez.NewCSR(certKey, sans)
	if err != nil {
		t.Fatal(err)
	}
	params, err := acmez.OrderParametersFromCSR(acct, csr)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := client.ObtainCertificate(t.Context(), params)
	if err != nil {
		t.Fatalf("obtaining a certificate for %v: %v", sans, err)
	}
	block, _ := pem.Decode(certs[0].ChainPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(slices.Values(leaf.DNSNames)), slices.Sorted(slices.Values(sans)); !slices.Equal(got, want) {
		t.Fatalf("leaf names %v, want %v", got, want)
	}
	return leaf
}

// Full DNS-01 issuance against the in-process Pebble, through each kind of
// provider client: built-in Cloudflare (fake API, harness DNS server), the
// caddy-dns/cloudflare module loaded by name, and RFC 2136 against a real
// BIND.
func TestIssueDNS01(t *testing.T) {
	t.Parallel()
	sans := []string{testZone, "*." + testZone, "www." + testZone}
	tests := []struct {
		name string
		// setup creates the provider client and returns it with the DNS
		// server Pebble must resolve with and a check that nothing is left.
		setup func(t *testing.T, e *env) (p *storage.DNSProvider, dnsAddr string, leftovers func() int)
	}{
		{"cloudflare", func(t *testing.T, e *env) (*storage.DNSProvider, string, func() int) {
			p := e.cloudflare("cf", nil)
			return p, e.dns.Addr(), func() int { return len(e.cf.Records(testZone)) + len(e.dns.TXT("_acme-challenge."+testZone)) }
		}},
		{"module dns.providers.cloudflare", func(t *testing.T, e *env) (*storage.DNSProvider, string, func() int) {
			e.svc.Configure(func(o *Options) {
				o.ConfigureModule = func(id string, m any) {
					m.(*cfmodule.Provider).HTTPClient = e.cf.HTTPClient()
				}
			})
			p, err := e.svc.Create(t.Context(), "tester", Config{Name: "cf-module", Type: "dns.providers.cloudflare",
				Credentials: creds(map[string]string{"api_token": cfToken}), Zones: []string{testZone}})
			if err != nil {
				t.Fatal(err)
			}
			return p, e.dns.Addr(), func() int { return len(e.cf.Records(testZone)) }
		}},
		{"rfc2136 with BIND", func(t *testing.T, e *env) (*storage.DNSProvider, string, func() int) {
			b := startBIND(t, testZone)
			e.svc.Configure(func(o *Options) {
				o.Resolvers, o.NameserverPort = []string{b.Addr}, port(t, b.Addr)
			})
			p, err := e.svc.Create(t.Context(), "tester", Config{Name: "bind", Type: TypeRFC2136, Zones: []string{testZone},
				TTL:         caddy.Duration(30 * time.Second),
				Credentials: creds(map[string]string{"server": b.Addr, "key_name": b.KeyName, "key_alg": "hmac-sha256", "key": b.Key})})
			if err != nil {
				t.Fatal(err)
			}
			return p, b.Addr, func() int {
				vals, err := lookupTXT(t.Context(), b.Addr, "_acme-challenge."+testZone)
				if err != nil {
					t.Fatalf("looking for leftover records: %v", err)
				}
				return len(vals)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			p, dnsAddr, leftovers := tc.setup(t, e)
			ca := acmetest.NewPebble(t, acmetest.PebbleOptions{DNSServer: dnsAddr})
			solver := newTestSolver(e.svc, p.ID, "wf_issue")
			leaf := issue(t, ca, solver, sans...)
			if leaf.NotAfter.Before(time.Now()) {
				t.Fatal("expired leaf")
			}
			props := solver.Propagations()
			for _, n := range []string{testZone, "www." + testZone} {
				if props[n] <= 0 {
					t.Fatalf("no propagation time measured for %s: %v", n, props)
				}
			}
			if n := leftovers(); n != 0 {
				t.Fatalf("%d challenge records left in DNS", n)
			}
			if recs, _ := e.st.DNSProviders().WorkflowRecords(t.Context(), "wf_issue"); len(recs) != 0 {
				t.Fatalf("%d challenge records still stored", len(recs))
			}
		})
	}
}

// lookupTXT asks a nameserver directly for the TXT values of name: none
// for NXDOMAIN or an empty answer, an error for any other failure (a
// SERVFAIL or REFUSED is not "no records left").
func lookupTXT(ctx context.Context, server, name string) ([]string, error) {
	in, err := exchange(ctx, server, dns.Fqdn(name), dns.TypeTXT, false)
	if err != nil {
		return nil, fmt.Errorf("asking %s for TXT %s: %w", server, name, err)
	}
	switch in.Rcode {
	case dns.RcodeNameError:
		return nil, nil
	case dns.RcodeSuccess:
	default:
		return nil, fmt.Errorf("%s answered %s for TXT %s", server, dns.RcodeToString[in.Rcode], name)
	}
	var vals []string
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			vals = append(vals, strings.Join(t.Txt, ""))
		}
	}
	return vals, nil
}

// lookupTXT tells records from their absence and a failed lookup, on the
// harness DNS server (which refuses names outside its zones).
func TestLookupTXT(t *testing.T) {
	t.Parallel()
	srv := acmetest.NewDNSServer(t, testZone)
	srv.AddTXT("_acme-challenge."+testZone, "a", "b")
	cases := map[string]struct {
		name    string
		want    int
		wantErr string
	}{
		"records": {name: "_acme-challenge." + testZone, want: 2},
		"none":    {name: "_acme-challenge.www." + testZone},
		"refused": {name: "_acme-challenge.elsewhere.example", wantErr: "REFUSED"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			vals, err := lookupTXT(t.Context(), srv.Addr(), c.name)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, %v; want an error with %s", vals, err, c.wantErr)
				}
				return
			}
			if err != nil || len(vals) != c.want {
				t.Fatalf("got %v, %v; want %d values", vals, err, c.want)
			}
		})
	}
	// nothing listening: an error, not "no records"
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if vals, err := lookupTXT(ctx, "127.0.0.1:"+strconv.Itoa(port), "_acme-challenge."+testZone); err == nil {
		t.Fatalf("a server that does not answer gave %v and no error", vals)
	}
}

// testSolver drives the service from acmez's high-level client: DNS-01
// through one provider client, as the workflow engine does step by step.
type testSolver struct {
	svc        *Service
	providerID string
	workflowID string

	mu    sync.Mutex
	recs  map[string]*storage.ChallengeRecord
	waits map[string]time.Duration
}

func newTestSolver(s *Service, providerID, workflowID string) *testSolver {
	return &testSolver{svc: s, providerID: providerID, workflowID: workflowID,
		recs: make(map[string]*storage.ChallengeRecord), waits: make(map[string]time.Duration)}
}

func challengeKey(c acme.Challenge) string { return c.Identifier.Value + "\x00" + c.Token }

func (v *testSolver) Present(ctx context.Context, chal acme.Challenge) error {
	rec, err := v.svc.Present(ctx, v.providerID, v.workflowID, chal.DNS01TXTRecordName(), chal.DNS01KeyAuthorization())
	if rec != nil {
		v.mu.Lock()
		v.recs[challengeKey(chal)] = rec
		v.mu.Unlock()
	}
	return err
}

func (v *testSolver) Wait(ctx context.Context, chal acme.Challenge) error {
	v.mu.Lock()
	rec := v.recs[challengeKey(chal)]
	v.mu.Unlock()
	if rec == nil {
		return fmt.Errorf("waiting for %s: nothing was presented", chal.DNS01TXTRecordName())
	}
	d, err := v.svc.WaitPropagation(ctx, rec)
	if err == nil {
		v.mu.Lock()
		v.waits[chal.Identifier.Value] = d
		v.mu.Unlock()
	}
	return err
}

func (v *testSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	v.mu.Lock()
	rec := v.recs[challengeKey(chal)]
	delete(v.recs, challengeKey(chal))
	v.mu.Unlock()
	if rec == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return v.svc.CleanUp(cctx, rec)
}

// Propagations returns the measured propagation time of each identifier.
func (v *testSolver) Propagations() map[string]time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.waits)
}

var (
	_ acmez.Solver = (*testSolver)(nil)
	_ acmez.Waiter = (*testSolver)(nil)
)

func TestRFC2136WithBIND(t *testing.T) {
	t.Parallel()
	b := startBIND(t, testZone)
	tests := []struct {
		name   string
		creds  map[string]string
		zones  []string
		wantOK bool
		kind   error
		want   string
	}{
		{"valid key", map[string]string{"key_name": b.KeyName, "key": b.Key}, nil, true, nil, "can publish and remove"},
		{"wrong secret", map[string]string{"key_name": b.KeyName, "key": randomKey()}, nil, false, ErrInvalidCredentials,
			"the server rejected the TSIG key"},
		{"unknown key name", map[string]string{"key_name": "nobody", "key": b.Key}, nil, false, ErrInvalidCredentials,
			"the server rejected the TSIG key"},
		{"key not allowed to update", map[string]string{"key_name": b.OtherName, "key": b.OtherKey}, nil, false, ErrPermission,
			"the server refused the update"},
		{"zone the server does not serve", map[string]string{"key_name": b.KeyName, "key": b.Key}, []string{"other.test"}, false, ErrZoneNotFound,
			"the server is not authoritative for zone other.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(o *Options) { o.Resolvers, o.NameserverPort = []string{b.Addr}, port(t, b.Addr) })
			tc.creds["server"] = b.Addr
			zones := tc.zones
			if zones == nil {
				zones = []string{testZone}
			}
			p, err := e.svc.Create(t.Context(), "tester", Config{Name: "bind", Type: TypeRFC2136, Zones: zones, Credentials: creds(tc.creds)})
			if err != nil {
				t.Fatal(err)
			}
			v, _, err := e.svc.Verify(t.Context(), "tester", p.ID)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK != tc.wantOK || !strings.Contains(v.Message, tc.want) {
				t.Fatalf("verification ok=%v %q, want ok=%v %q", v.OK, v.Message, tc.wantOK, tc.want)
			}
			noSecret(t, "verification", v.Message, b.Key, b.OtherKey, tc.creds["key"])
			if tc.kind != nil {
				rec, err := e.svc.Present(t.Context(), p.ID, "wf", "_acme-challenge."+zones[0], "v")
				if !errors.Is(err, tc.kind) {
					t.Fatalf("present: %v, want %v", err, tc.kind)
				}
				_ = e.svc.CleanUp(t.Context(), rec)
			}
		})
	}
}

// A module's own errors are scrubbed of the credentials it was given.
func TestModuleErrorsAreRedacted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const secret = "short-but-secret-token"
	_, err := e.svc.Create(t.Context(), "tester", Config{Name: "m", Type: "dns.providers.cloudflare",
		Credentials: creds(map[string]string{"api_token": secret}), Zones: []string{testZone}})
	var ie *InputError
	if !errors.As(err, &ie) || ie.Field != "credentials" || !strings.Contains(ie.Message, "(redacted)") {
		t.Fatalf("got %v", err)
	}
	noSecret(t, "error", err.Error(), secret)
	// a module that is not a DNS provider
	_, err = e.svc.Create(t.Context(), "tester", Config{Name: "m", Type: "http.handlers.static_response",
		Credentials: creds(map[string]string{}), Zones: []string{testZone}})
	if !errors.As(err, &ie) || ie.Field != "type" {
		t.Fatalf("non-dns module: %v", err)
	}
}

// An RFC 2136 server that does not answer is retried, then reported as
// unavailable (no BIND needed: nothing listens on the port).
func TestRFC2136ServerDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	server := "127.0.0.1:" + strconv.Itoa(port)
	p, err := e.svc.Create(t.Context(), "tester", Config{Name: "bind", Type: TypeRFC2136, Zones: []string{testZone},
		Credentials: creds(map[string]string{"server": server, "key_name": "k", "key": randomKey()})})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Present(t.Context(), p.ID, "wf", "_acme-challenge."+testZone, "v")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "the server did not answer") {
		t.Fatalf("got %v", err)
	}
	retries := 0
	for _, en := range e.logs.FilterMessage("retrying dns provider call").All() {
		if en.ContextMap()["dns_provider"] == "bind" {
			retries++
		}
	}
	if retries != DefaultRetries {
		t.Fatalf("%d retries logged, want %d", retries, DefaultRetries)
	}
}
