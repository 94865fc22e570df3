package dnsproviders

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cfmodule "github.com/caddy-dns/cloudflare"
	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

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
				vals, _ := (&Service{}).lookupTXT(t, b.Addr, "_acme-challenge."+testZone)
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
			solver := e.svc.Solver(p.ID, "wf_issue")
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

// lookupTXT asks a nameserver directly for the TXT values of name.
func (*Service) lookupTXT(t *testing.T, server, name string) ([]string, error) {
	t.Helper()
	ok, answer := queryTXT(t.Context(), []string{server}, name+".", "\x00")
	if ok {
		t.Fatal("impossible value found")
	}
	if answer == "NXDOMAIN" || strings.HasPrefix(answer, "0 TXT") {
		return nil, nil
	}
	if strings.HasSuffix(answer, "none with the value") {
		return []string{answer}, nil
	}
	return nil, errors.New(answer)
}

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
