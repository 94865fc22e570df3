package acmetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libdns/cloudflare"
	"github.com/libdns/libdns"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
)

// newACMEClient returns an acmez client for p with the given solvers.
func newACMEClient(p *Pebble, solvers map[string]acmez.Solver) *acmez.Client {
	return &acmez.Client{
		Client: &acme.Client{
			Directory:    p.DirectoryURL(),
			HTTPClient:   p.HTTPClient(),
			UserAgent:    "certlocker-acmetest",
			PollInterval: 20 * time.Millisecond,
			Logger:       slog.New(slog.DiscardHandler),
		},
		ChallengeSolvers: solvers,
	}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newAccount registers a fresh ACME account with c.
func newAccount(t *testing.T, c *acmez.Client) acme.Account {
	t.Helper()
	acct, err := c.NewAccount(t.Context(), acme.Account{TermsOfServiceAgreed: true, PrivateKey: newKey(t)})
	if err != nil {
		t.Fatalf("creating account: %v", err)
	}
	return acct
}

// obtain orders a certificate for sans (under profile, if set) and returns
// the parsed chain, leaf first.
func obtain(t *testing.T, c *acmez.Client, acct acme.Account, profile string, sans ...string) []*x509.Certificate {
	t.Helper()
	certKey := newKey(t)
	csr, err := acmez.NewCSR(certKey, sans)
	if err != nil {
		t.Fatal(err)
	}
	params, err := acmez.OrderParametersFromCSR(acct, csr)
	if err != nil {
		t.Fatal(err)
	}
	params.Profile = profile
	certs, err := c.ObtainCertificate(t.Context(), params)
	if err != nil {
		t.Fatalf("obtaining certificate for %v: %v", sans, err)
	}
	chain := parseChain(t, certs[0].ChainPEM)
	if !chain[0].PublicKey.(*ecdsa.PublicKey).Equal(certKey.Public()) {
		t.Fatal("leaf certificate is not for the CSR key")
	}
	return chain
}

func parseChain(t *testing.T, chainPEM []byte) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) < 2 {
		t.Fatalf("chain has %d certificates, want leaf and intermediate", len(chain))
	}
	return chain
}

// verifyChain checks that chain verifies against Pebble's roots for every
// host in hosts.
func verifyChain(t *testing.T, p *Pebble, chain []*x509.Certificate, hosts ...string) {
	t.Helper()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, h := range hosts {
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: h, Roots: p.RootPool(), Intermediates: inter}); err != nil {
			t.Errorf("verifying leaf for %s: %v", h, err)
		}
	}
}

// libdnsSolver solves dns-01 by publishing the TXT record through a libdns
// provider (here libdns/cloudflare against the fake API), the way
// certmagic's DNS01Solver does, and waits for the harness DNS server to
// serve it.
type libdnsSolver struct {
	provider interface {
		libdns.RecordAppender
		libdns.RecordDeleter
	}
	dns *DNSServer

	mu      sync.Mutex
	records map[string]zoneRecord // by identifier and token
}

type zoneRecord struct {
	zone   string
	record libdns.Record
}

func newLibdnsSolver(p *cloudflare.Provider, d *DNSServer) *libdnsSolver {
	return &libdnsSolver{provider: p, dns: d, records: make(map[string]zoneRecord)}
}

func (s *libdnsSolver) Present(ctx context.Context, chal acme.Challenge) error {
	fqdn := chal.DNS01TXTRecordName() + "."
	zone, ok := s.dns.Zone(fqdn)
	if !ok {
		return errors.New("finding zone: no zone for " + fqdn)
	}
	rec := libdns.TXT{Name: libdns.RelativeName(fqdn, zone), Text: chal.DNS01KeyAuthorization()}
	created, err := s.provider.AppendRecords(ctx, zone, []libdns.Record{rec})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[chal.Identifier.Value+"/"+chal.Token] = zoneRecord{zone: zone, record: created[0]}
	return nil
}

// Wait blocks until the harness DNS server serves the record: it is notified
// of every change, so there is no polling or sleeping.
func (s *libdnsSolver) Wait(ctx context.Context, chal acme.Challenge) error {
	return s.dns.WaitTXT(ctx, chal.DNS01TXTRecordName(), chal.DNS01KeyAuthorization())
}

func (s *libdnsSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	s.mu.Lock()
	zr, ok := s.records[chal.Identifier.Value+"/"+chal.Token]
	delete(s.records, chal.Identifier.Value+"/"+chal.Token)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	_, err := s.provider.DeleteRecords(ctx, zr.zone, []libdns.Record{zr.record})
	return err
}

// TestIssueDNS01ThroughCloudflare is the proof of the harness: a real
// certificate from the in-process Pebble, with dns-01 records published via
// libdns/cloudflare to the fake Cloudflare API, served by the harness DNS
// server and resolved there by Pebble's VA over TCP.
func TestIssueDNS01ThroughCloudflare(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		zones     []string
		apiPerms  []CloudflarePermission
		zonePerms []CloudflarePermission // for a separate zone token, if any
		profiles  map[string]Profile
		profile   string
		sans      []string
		hosts     []string // names the leaf must verify for
		validity  time.Duration
	}{
		{
			name:     "apex and wildcard in one order",
			zones:    []string{"example.test"},
			apiPerms: []CloudflarePermission{PermZoneRead("example.test"), PermDNSEdit("example.test")},
			sans:     []string{"example.test", "*.example.test"},
			hosts:    []string{"example.test", "www.example.test"},
		},
		{
			name:      "scoped dns token with a separate zone token",
			zones:     []string{"example.test", "other.test"},
			apiPerms:  []CloudflarePermission{PermDNSEdit("other.test")},
			zonePerms: []CloudflarePermission{PermZoneRead(AllZones)},
			sans:      []string{"www.other.test", "api.other.test"},
			hosts:     []string{"www.other.test", "api.other.test"},
		},
		{
			name:     "profile of the order",
			zones:    []string{"example.test"},
			apiPerms: []CloudflarePermission{PermZoneRead(AllZones), PermDNSEdit(AllZones)},
			profiles: map[string]Profile{"classic": {}, "shortlived": {Validity: 6 * 24 * time.Hour}},
			profile:  "shortlived",
			sans:     []string{"short.example.test"},
			hosts:    []string{"short.example.test"},
			validity: 6 * 24 * time.Hour,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := NewDNSServer(t, tc.zones...)
			cf := NewCloudflare(t, d)
			cf.AddToken("api-token", tc.apiPerms...)
			zoneToken := ""
			if tc.zonePerms != nil {
				zoneToken = "zone-token"
				cf.AddToken(zoneToken, tc.zonePerms...)
			}
			p := NewPebble(t, PebbleOptions{DNSServer: d.Addr(), Profiles: tc.profiles})
			solver := newLibdnsSolver(cf.Provider("api-token", zoneToken), d)
			client := newACMEClient(p, map[string]acmez.Solver{acme.ChallengeTypeDNS01: solver})

			chain := obtain(t, client, newAccount(t, client), tc.profile, tc.sans...)

			leaf := chain[0]
			if got, want := slices.Sorted(slices.Values(leaf.DNSNames)), slices.Sorted(slices.Values(tc.sans)); !slices.Equal(got, want) {
				t.Errorf("leaf SANs = %q, want %q", got, want)
			}
			verifyChain(t, p, chain, tc.hosts...)
			if tc.validity > 0 {
				if got := leaf.NotAfter.Sub(leaf.NotBefore); got < tc.validity-time.Hour || got > tc.validity+time.Hour {
					t.Errorf("validity = %v, want about %v", got, tc.validity)
				}
			}

			// Pebble's VA resolved every challenge name with the harness DNS
			// server, over TCP, and found the record.
			challengeNames := map[string]bool{}
			for _, san := range tc.sans {
				challengeNames["_acme-challenge."+strings.TrimPrefix(san, "*.")+"."] = true
			}
			for name := range challengeNames {
				found := slices.ContainsFunc(d.QueryLog(), func(q DNSQuery) bool {
					return q.Name == name && q.Type == "TXT" && q.Net == "tcp" && q.Rcode == "NOERROR"
				})
				if !found {
					t.Errorf("no successful TXT query over tcp for %s in %+v", name, d.QueryLog())
				}
				// Cleanup went through the API and withdrew the records.
				if got := d.TXT(name); len(got) != 0 {
					t.Errorf("TXT %s left after cleanup: %q", name, got)
				}
			}
			for _, z := range tc.zones {
				if recs := cf.Records(z); len(recs) != 0 {
					t.Errorf("records left in zone %s: %+v", z, recs)
				}
			}

			// libdns/cloudflare sent relative names and quoted TXT content.
			creates := 0
			for _, r := range cf.Requests() {
				if r.Endpoint != EndpointCreateRecord {
					continue
				}
				creates++
				var body struct{ Type, Name, Content string }
				if err := json.Unmarshal(r.Body, &body); err != nil {
					t.Fatal(err)
				}
				if body.Type != "TXT" || !strings.HasPrefix(body.Name, "_acme-challenge") || strings.Contains(body.Name, ".test") ||
					!strings.HasPrefix(body.Content, `"`) || !strings.HasSuffix(body.Content, `"`) {
					t.Errorf("create request body = %s", r.Body)
				}
			}
			if creates != len(tc.sans) || cf.RequestCount(EndpointDeleteRecord) != len(tc.sans) {
				t.Errorf("creates = %d, deletes = %d, want %d each", creates, cf.RequestCount(EndpointDeleteRecord), len(tc.sans))
			}
		})
	}
}

// httpSolver serves http-01 key authorizations.
type httpSolver struct {
	mu        sync.Mutex
	keyAuths  map[string]string // by token
	userAgent []string          // of the requests that fetched a key authorization
}

func (s *httpSolver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
	s.mu.Lock()
	keyAuth, found := s.keyAuths[token]
	if ok && found {
		s.userAgent = append(s.userAgent, r.UserAgent())
	}
	s.mu.Unlock()
	if !ok || !found || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(keyAuth))
}

func (s *httpSolver) Present(_ context.Context, chal acme.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyAuths[chal.Token] = chal.KeyAuthorization
	return nil
}

func (s *httpSolver) CleanUp(_ context.Context, chal acme.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keyAuths, chal.Token)
	return nil
}

// startHTTPSolver serves an httpSolver on a random loopback port.
func startHTTPSolver(t *testing.T) (*httpSolver, int) {
	t.Helper()
	s := &httpSolver{keyAuths: make(map[string]string)}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return s, n
}

func TestIssueHTTP01(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sans     []string
		resolved string // a name the VA must have resolved through the harness DNS server
	}{
		{name: "dns name resolved by the harness", sans: []string{"www.example.test"}, resolved: "www.example.test."},
		{name: "ip identifier", sans: []string{"127.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := NewDNSServer(t, "example.test")
			d.SetAddrs("www.example.test", netip.MustParseAddr("127.0.0.1"))
			solver, port := startHTTPSolver(t)
			p := NewPebble(t, PebbleOptions{DNSServer: d.Addr(), HTTPPort: port})
			client := newACMEClient(p, map[string]acmez.Solver{acme.ChallengeTypeHTTP01: solver})

			chain := obtain(t, client, newAccount(t, client), "", tc.sans...)

			leaf := chain[0]
			var got []string
			got = append(got, leaf.DNSNames...)
			for _, ip := range leaf.IPAddresses {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tc.sans) {
				t.Errorf("leaf SANs = %q, want %q", got, tc.sans)
			}
			solver.mu.Lock()
			uas := slices.Clone(solver.userAgent)
			solver.mu.Unlock()
			if len(uas) == 0 || !strings.HasPrefix(uas[0], "LetsEncrypt-Pebble-VA") {
				t.Errorf("key authorization fetched by %q, want Pebble's VA", uas)
			}
			if tc.resolved != "" {
				found := slices.ContainsFunc(d.QueryLog(), func(q DNSQuery) bool {
					return q.Name == tc.resolved && q.Type == "A" && q.Net == "tcp"
				})
				if !found {
					t.Errorf("VA did not resolve %s over tcp: %+v", tc.resolved, d.QueryLog())
				}
			}
		})
	}
}

func TestExternalAccountBinding(t *testing.T) {
	t.Parallel()
	p := NewPebble(t, PebbleOptions{RequireEAB: true, EABKeys: map[string]string{"preloaded": "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0zMmJ5dGVz"}})
	mac := p.NewExternalAccountKey("kid-1")
	otherMAC := p.NewExternalAccountKey("kid-2")

	tests := []struct {
		name        string
		eab         *acme.EAB
		wantProblem string
	}{
		{name: "without eab", wantProblem: acme.ProblemTypeExternalAccountRequired},
		{name: "with eab", eab: &acme.EAB{KeyID: "kid-1", MACKey: mac}},
		{name: "with preloaded eab", eab: &acme.EAB{KeyID: "preloaded", MACKey: "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0zMmJ5dGVz"}},
		{name: "wrong mac key", eab: &acme.EAB{KeyID: "kid-1", MACKey: otherMAC}, wantProblem: acme.ProblemTypeUnauthorized},
		{name: "unknown key id", eab: &acme.EAB{KeyID: "kid-404", MACKey: mac}, wantProblem: acme.ProblemTypeUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client := newACMEClient(p, nil)
			if _, err := client.GetDirectory(t.Context()); err != nil {
				t.Fatal(err)
			}
			acct := acme.Account{TermsOfServiceAgreed: true, PrivateKey: newKey(t)}
			if tc.eab != nil {
				if err := acct.SetExternalAccountBinding(t.Context(), client.Client, *tc.eab); err != nil {
					t.Fatal(err)
				}
			}
			acct, err := client.NewAccount(t.Context(), acct)
			if tc.wantProblem == "" {
				if err != nil {
					t.Fatalf("creating account: %v", err)
				}
				if acct.Status != acme.StatusValid {
					t.Fatalf("account status = %q", acct.Status)
				}
				return
			}
			var problem acme.Problem
			if !errors.As(err, &problem) || problem.Type != tc.wantProblem {
				t.Fatalf("error = %v, want problem %s", err, tc.wantProblem)
			}
		})
	}
	if err := p.AddExternalAccountKey("kid-1", mac); err == nil {
		t.Error("adding a duplicate key id succeeded")
	}
}

// countingSolver succeeds without doing anything and counts presentations;
// it is for a Pebble whose VA always validates.
type countingSolver struct{ presented atomic.Int32 }

func (s *countingSolver) Present(context.Context, acme.Challenge) error {
	s.presented.Add(1)
	return nil
}

func (s *countingSolver) CleanUp(context.Context, acme.Challenge) error { return nil }

func TestPebbleBehaviourOptions(t *testing.T) {
	t.Parallel()

	t.Run("authz reuse", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name     string
			percent  int
			presents int32
		}{
			{name: "never", percent: 0, presents: 2},
			{name: "always", percent: 100, presents: 1},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				p := NewPebble(t, PebbleOptions{AuthzReusePercent: tc.percent, VAAlwaysValid: true})
				solver := &countingSolver{}
				client := newACMEClient(p, map[string]acmez.Solver{acme.ChallengeTypeHTTP01: solver})
				acct := newAccount(t, client)
				obtain(t, client, acct, "", "reuse.example.test")
				obtain(t, client, acct, "", "reuse.example.test")
				if got := solver.presented.Load(); got != tc.presents {
					t.Fatalf("challenges presented = %d, want %d", got, tc.presents)
				}
			})
		}
	})

	t.Run("every nonce rejected", func(t *testing.T) {
		t.Parallel()
		p := NewPebble(t, PebbleOptions{NonceRejectPercent: 100})
		client := newACMEClient(p, nil)
		_, err := client.NewAccount(t.Context(), acme.Account{TermsOfServiceAgreed: true, PrivateKey: newKey(t)})
		var problem acme.Problem
		if !errors.As(err, &problem) || problem.Type != acme.ProblemTypeBadNonce {
			t.Fatalf("error = %v, want badNonce", err)
		}
	})

	t.Run("renewal info", func(t *testing.T) {
		t.Parallel()
		p := NewPebble(t, PebbleOptions{VAAlwaysValid: true})
		client := newACMEClient(p, map[string]acmez.Solver{acme.ChallengeTypeHTTP01: &countingSolver{}})
		leaf := obtain(t, client, newAccount(t, client), "", "ari.example.test")[0]

		info, err := client.GetRenewalInfo(t.Context(), leaf)
		if err != nil {
			t.Fatalf("getting computed renewal info: %v", err)
		}
		if !info.SuggestedWindow.Start.After(leaf.NotBefore) || !info.SuggestedWindow.End.Before(leaf.NotAfter) {
			t.Fatalf("computed window %v..%v outside validity", info.SuggestedWindow.Start, info.SuggestedWindow.End)
		}

		start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
		end := start.Add(2 * time.Hour)
		if err := p.SetRenewalWindow(leaf, start, end); err != nil {
			t.Fatal(err)
		}
		info, err = client.GetRenewalInfo(t.Context(), leaf)
		if err != nil {
			t.Fatalf("getting set renewal info: %v", err)
		}
		if !info.SuggestedWindow.Start.Equal(start) || !info.SuggestedWindow.End.Equal(end) {
			t.Fatalf("window = %v..%v, want %v..%v", info.SuggestedWindow.Start, info.SuggestedWindow.End, start, end)
		}
	})

	t.Run("blocked domain", func(t *testing.T) {
		t.Parallel()
		p := NewPebble(t, PebbleOptions{VAAlwaysValid: true, BlockedDomains: []string{"blocked.test"}})
		client := newACMEClient(p, map[string]acmez.Solver{acme.ChallengeTypeHTTP01: &countingSolver{}})
		acct := newAccount(t, client)
		csr, err := acmez.NewCSR(newKey(t), []string{"www.blocked.test"})
		if err != nil {
			t.Fatal(err)
		}
		params, err := acmez.OrderParametersFromCSR(acct, csr)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.ObtainCertificate(t.Context(), params)
		var problem acme.Problem
		if !errors.As(err, &problem) || problem.Type != acme.ProblemTypeRejectedIdentifier {
			t.Fatalf("error = %v, want rejectedIdentifier", err)
		}
	})
}

// TestCloudflareErrorsThroughLibdns drives the fake's error paths with the
// real libdns/cloudflare client, checking what reaches a caller.
func TestCloudflareErrorsThroughLibdns(t *testing.T) {
	t.Parallel()
	const zone = "example.test."
	txt := libdns.TXT{Name: "_acme-challenge", Text: "digest"}
	appendTXT := func(ctx context.Context, p *cloudflare.Provider) error {
		_, err := p.AppendRecords(ctx, zone, []libdns.Record{txt})
		return err
	}

	tests := []struct {
		name      string
		setup     func(t *testing.T, c *Cloudflare)
		apiToken  string
		zoneToken string
		run       func(ctx context.Context, p *cloudflare.Provider) error
		wantErr   []string // substrings of the error; none means success
		check     func(t *testing.T, d *DNSServer, c *Cloudflare)
	}{
		{
			name: "bad token", apiToken: "wrong-token", run: appendTXT,
			wantErr: []string{"HTTP 403", "Authentication error"},
		},
		{
			name: "empty token", apiToken: "", run: appendTXT,
			wantErr: []string{"HTTP 400", "Invalid request headers"},
		},
		{
			name: "token without zone read finds no zone", apiToken: "dns-only-token", run: appendTXT,
			wantErr: []string{"expected 1 zone, got 0"},
		},
		{
			name: "same token with a zone token works", apiToken: "dns-only-token", zoneToken: "zone-token", run: appendTXT,
			check: func(t *testing.T, d *DNSServer, _ *Cloudflare) {
				if got := d.TXT("_acme-challenge.example.test"); !slices.Equal(got, []string{"digest"}) {
					t.Fatalf("TXT = %q", got)
				}
			},
		},
		{
			name: "read-only token cannot create", apiToken: "read-token", run: appendTXT,
			wantErr: []string{"HTTP 403", "Unauthorized to access requested resource"},
		},
		{
			name: "rate limited on create",
			setup: func(t *testing.T, c *Cloudflare) {
				c.FailNext(1, withEndpoint(RateLimitFault(30*time.Second), EndpointCreateRecord))
			},
			apiToken: "edit-token", run: appendTXT,
			wantErr: []string{"HTTP 429", "971", "throttling"},
			check: func(t *testing.T, d *DNSServer, c *Cloudflare) {
				if got := d.TXT("_acme-challenge.example.test"); len(got) != 0 {
					t.Fatalf("TXT published despite the failure: %q", got)
				}
				if c.PendingFaults() != 0 {
					t.Fatal("fault not consumed")
				}
			},
		},
		{
			name: "rate limited on zone lookup",
			setup: func(t *testing.T, c *Cloudflare) {
				c.FailNext(1, withEndpoint(RateLimitFault(time.Second), EndpointListZones))
			},
			apiToken: "edit-token", run: appendTXT,
			wantErr: []string{"HTTP 429"},
		},
		{
			name:     "edge 502",
			setup:    func(t *testing.T, c *Cloudflare) { c.FailNext(1, EdgeErrorFault(http.StatusBadGateway)) },
			apiToken: "edit-token", run: appendTXT,
			wantErr: []string{"invalid character '<'"},
		},
		{
			name: "lost response after a committed create",
			setup: func(t *testing.T, c *Cloudflare) {
				c.FailNext(1, Fault{Endpoint: EndpointCreateRecord, Status: 500, Code: 10002, Message: "internal error", AfterCommit: true})
			},
			apiToken: "edit-token", run: appendTXT,
			wantErr: []string{"HTTP 500", "internal error"},
			check: func(t *testing.T, d *DNSServer, c *Cloudflare) {
				if got := d.TXT("_acme-challenge.example.test"); !slices.Equal(got, []string{"digest"}) {
					t.Fatalf("TXT = %q, want the committed record", got)
				}
				if n := len(c.Records(zone)); n != 1 {
					t.Fatalf("records = %d, want 1", n)
				}
			},
		},
		{
			name:     "record cleanup removes the TXT from the dns server",
			apiToken: "edit-token",
			run: func(ctx context.Context, p *cloudflare.Provider) error {
				if err := appendTXT(ctx, p); err != nil {
					return err
				}
				_, err := p.DeleteRecords(ctx, zone, []libdns.Record{txt})
				return err
			},
			check: func(t *testing.T, d *DNSServer, c *Cloudflare) {
				if err := d.WaitNoTXT(t.Context(), "_acme-challenge.example.test", "digest"); err != nil {
					t.Fatal(err)
				}
				vals, rcode, err := d.LookupTXT(t.Context(), "tcp", "_acme-challenge.example.test")
				if err != nil || len(vals) != 0 || rcode != "NXDOMAIN" {
					t.Fatalf("lookup after cleanup = %q %s %v", vals, rcode, err)
				}
				if c.RequestCount(EndpointDeleteRecord) != 1 || len(c.Records(zone)) != 0 {
					t.Fatalf("deletes = %d, records = %d", c.RequestCount(EndpointDeleteRecord), len(c.Records(zone)))
				}
			},
		},
		{
			name:     "set records updates in place",
			setup:    func(t *testing.T, c *Cloudflare) { mustAddRecord(t, c, zone, "TXT", "_acme-challenge", `"old"`) },
			apiToken: "edit-token",
			run: func(ctx context.Context, p *cloudflare.Provider) error {
				_, err := p.SetRecords(ctx, zone, []libdns.Record{txt})
				return err
			},
			check: func(t *testing.T, d *DNSServer, c *Cloudflare) {
				if got := d.TXT("_acme-challenge.example.test"); !slices.Equal(got, []string{"digest"}) {
					t.Fatalf("TXT = %q", got)
				}
				if c.RequestCount(EndpointPatchRecord) != 1 {
					t.Fatalf("patches = %d", c.RequestCount(EndpointPatchRecord))
				}
			},
		},
		{
			name: "get records reads every page",
			setup: func(t *testing.T, c *Cloudflare) {
				for _, n := range []string{"a", "b", "c"} {
					mustAddRecord(t, c, zone, "TXT", n, `"`+n+`"`)
				}
			},
			apiToken: "read-token",
			run: func(ctx context.Context, p *cloudflare.Provider) error {
				recs, err := p.GetRecords(ctx, zone)
				if err != nil {
					return err
				}
				if len(recs) != 3 {
					return errors.New("got " + strconv.Itoa(len(recs)) + " records, want 3")
				}
				for _, r := range recs {
					if tr, ok := r.(libdns.TXT); !ok || tr.Text != tr.Name {
						return errors.New("unexpected record " + r.RR().Name + " " + r.RR().Data)
					}
				}
				return nil
			},
		},
		{
			name:     "list zones",
			apiToken: "zone-token",
			run: func(ctx context.Context, p *cloudflare.Provider) error {
				zones, err := p.ListZones(ctx)
				if err != nil {
					return err
				}
				if len(zones) != 1 || zones[0].Name != zone {
					return errors.New("unexpected zones")
				}
				return nil
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := NewDNSServer(t, zone)
			c := NewCloudflare(t, d)
			c.AddToken("edit-token", PermZoneRead(zone), PermDNSEdit(zone))
			c.AddToken("read-token", PermZoneRead(zone), PermDNSRead(zone))
			c.AddToken("dns-only-token", PermDNSEdit(zone))
			c.AddToken("zone-token", PermZoneRead(AllZones))
			if tc.setup != nil {
				tc.setup(t, c)
			}
			err := tc.run(t.Context(), c.Provider(tc.apiToken, tc.zoneToken))
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one mentioning %q", tc.wantErr)
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("error %q does not mention %q", err, want)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, d, c)
			}
		})
	}
}

func withEndpoint(f Fault, e CloudflareEndpoint) Fault {
	f.Endpoint = e
	return f
}

func mustAddRecord(t *testing.T, c *Cloudflare, zone, typ, name, content string) {
	t.Helper()
	if _, err := c.AddRecord(zone, typ, name, content); err != nil {
		t.Fatal(err)
	}
}

// Interface checks for the test solvers.
var (
	_ acmez.Solver = (*libdnsSolver)(nil)
	_ acmez.Waiter = (*libdnsSolver)(nil)
	_ acmez.Solver = (*httpSolver)(nil)
	_ acmez.Solver = (*countingSolver)(nil)
)
