package acmetest

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Pebble's defaults that the harness keeps when an option is left zero.
const (
	defaultPebbleHTTPPort = 5002
	defaultPebbleTLSPort  = 5001
	defaultPebbleKeyAlg   = "rsa"
	defaultPebbleProfile  = "default"
	defaultPebbleCAAIdent = "pebble.letsencrypt.org"
)

// Environment variables through which Pebble 2.10.3 reads some of its
// settings. va.New and wfe.New read them once, at construction; the harness
// sets them around those two calls only (see NewPebble).
const (
	envVANoSleep        = "PEBBLE_VA_NOSLEEP"
	envVASleepTime      = "PEBBLE_VA_SLEEPTIME"
	envVAAlwaysValid    = "PEBBLE_VA_ALWAYS_VALID"
	envWFENonceReject   = "PEBBLE_WFE_NONCEREJECT"
	envWFEAuthzReuse    = "PEBBLE_AUTHZREUSE"
	envWFEOrdersPerPage = "PEBBLE_WFE_ORDERS_PER_PAGE"
)

// pebbleEnvMu serialises the set-construct-restore sequence of NewPebble so
// that Pebbles started by parallel tests each see their own settings.
var pebbleEnvMu sync.Mutex

// PebbleOptions configures NewPebble. The zero value is a deterministic test
// CA: no EAB, one profile named "default", no VA sleeps, no nonce rejection,
// no authorization reuse, the system resolver, and the VA dialing ports 5002
// (HTTP-01) and 5001 (TLS-ALPN-01). Note that the nonce-rejection and
// authorization-reuse defaults differ from the pebble binary's (5% and 50%).
type PebbleOptions struct {
	// DNSServer is the host:port of the DNS server the VA resolves challenge
	// names with (TXT for DNS-01, A/AAAA for HTTP-01 and TLS-ALPN-01). Pebble
	// sends these queries over TCP only. Empty means the system resolver,
	// which is only useful for IP identifiers in an offline test.
	DNSServer string
	// HTTPPort is the port the VA dials for HTTP-01 (default 5002). Run the
	// challenge server on a random loopback port and put that port here.
	HTTPPort int
	// TLSPort is the port the VA dials for TLS-ALPN-01 (default 5001).
	TLSPort int

	// RequireEAB makes newAccount refuse requests without an external
	// account binding, and sets meta.externalAccountRequired.
	RequireEAB bool
	// EABKeys are external account MAC keys to register, by key ID; each key
	// is base64url (unpadded) as an ACME client is given it.
	EABKeys map[string]string

	// Profiles are the certificate profiles offered in meta.profiles. Empty
	// means one profile named "default". Orders that name no profile get a
	// random one, as in Pebble.
	Profiles map[string]Profile

	// NonceRejectPercent is how often, in percent, a valid nonce is rejected
	// as badNonce (PEBBLE_WFE_NONCEREJECT); 100 rejects every nonce.
	NonceRejectPercent int
	// AuthzReusePercent is how often, in percent, Pebble tries to reuse a
	// valid authorization for an identifier (PEBBLE_AUTHZREUSE).
	AuthzReusePercent int
	// OrdersPerPage is the page size of the account's orders list
	// (PEBBLE_WFE_ORDERS_PER_PAGE); zero means Pebble's default of 3.
	OrdersPerPage int
	// VASleepMax, when positive, restores Pebble's random delay before each
	// validation of up to this long, rounded up to whole seconds
	// (PEBBLE_VA_SLEEPTIME). Zero means no delay (PEBBLE_VA_NOSLEEP=1).
	VASleepMax time.Duration
	// VAAlwaysValid makes every challenge succeed without the VA contacting
	// anything (PEBBLE_VA_ALWAYS_VALID).
	VAAlwaysValid bool

	// KeyAlgorithm is the key type of the CA hierarchy: "rsa" (default),
	// "ecdsa" or "mldsa".
	KeyAlgorithm string
	// AlternateRoots is the number of extra root chains (cross-signed
	// alternate chains offered through Link rel="alternate").
	AlternateRoots int
	// ChainLength is the number of intermediates between the root and the
	// leaf in each chain; zero means 1.
	ChainLength int

	// RetryAfterAuthz and RetryAfterOrder are the Retry-After values, rounded
	// down to whole seconds, that Pebble sends while authorizations and
	// orders are processing. Zero omits the header.
	RetryAfterAuthz time.Duration
	// RetryAfterOrder: see RetryAfterAuthz.
	RetryAfterOrder time.Duration

	// CAAIdentities are the issuer domain names in meta.caaIdentities; empty
	// means "pebble.letsencrypt.org".
	CAAIdentities []string
	// BlockedDomains are refused with rejectedIdentifier, subdomains included.
	BlockedDomains []string
	// Strict enables Pebble's strict mode (upcoming breaking API changes).
	Strict bool

	// Log receives Pebble's log output; nil discards it. Writes stop at
	// Cleanup, so testing.TB.Output() is safe to use.
	Log io.Writer
}

// Profile is a certificate profile offered by the in-process Pebble.
type Profile struct {
	// Description is shown in the directory's meta.profiles.
	Description string
	// Validity is the lifetime of certificates issued under the profile,
	// rounded down to whole seconds; zero means Pebble's 90 days.
	Validity time.Duration
	// PromoteCommonName copies the first identifier into the subject CN.
	PromoteCommonName bool
}

// Pebble is an in-process Pebble ACME server (github.com/letsencrypt/pebble/v2
// v2.10.3) whose web front end is served over TLS on a random 127.0.0.1 port.
// Its VA performs real validations: DNS-01 over TCP against
// PebbleOptions.DNSServer, and HTTP-01 and TLS-ALPN-01 against the configured
// ports. Its directory includes renewalInfo (ARI) and meta.profiles.
//
// Pebble 2.10.3 can deadlock when about 32 orders of one account are in
// flight at the same time; keep concurrent orders per account well below
// that, or spread them over several accounts.
type Pebble struct {
	t        testing.TB
	srv      *httptest.Server
	db       *db.MemoryStore
	ca       *ca.CAImpl
	va       *va.VAImpl
	wfe      *wfe.WebFrontEndImpl
	opts     PebbleOptions
	profiles []string
	gate     *issuanceGate
	// newOrders counts newOrder requests the CA received
	newOrders atomic.Int64
	// challengePOSTs counts POSTs to challenge URLs (requests to validate)
	challengePOSTs atomic.Int64
}

// issuanceGate passes the CA's log lines on, and while held blocks the one
// Pebble's CA writes after signing a certificate and before attaching it to
// the order ("Issued certificate serial ..."): the order stays processing.
type issuanceGate struct {
	w    io.Writer
	mu   sync.Mutex
	held chan struct{}
}

func (g *issuanceGate) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("Issued certificate serial")) {
		g.mu.Lock()
		held := g.held
		g.mu.Unlock()
		if held != nil {
			<-held
		}
	}
	return g.w.Write(b)
}

func (g *issuanceGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}

// HoldIssuance keeps every order finalized from now on in status
// processing (Pebble signs the certificate but does not attach it to the
// order) until release is called; release may be called more than once,
// and Cleanup releases too. It makes a client's handling of a processing
// order testable without timing: Pebble otherwise issues within
// milliseconds.
func (p *Pebble) HoldIssuance() (release func()) {
	p.gate.mu.Lock()
	defer p.gate.mu.Unlock()
	if p.gate.held == nil {
		p.gate.held = make(chan struct{})
	}
	return p.gate.open
}

// NewPebble starts an in-process Pebble configured by opts and stops it with
// t.Cleanup. It fails the test on invalid options.
//
// Pebble reads its VA-sleep, always-valid, nonce-rejection, authz-reuse and
// page-size settings only from environment variables, once, in va.New and
// wfe.New. NewPebble sets all six variables from opts around those calls,
// under a package mutex, and restores them afterwards, so Pebbles started by
// parallel tests do not interfere and ambient PEBBLE_* variables are ignored.
// The one thing that cannot run in parallel with NewPebble is another piece
// of code in the same test binary changing PEBBLE_* variables itself (e.g.
// t.Setenv), which is unnecessary with these options.
func NewPebble(t testing.TB, opts PebbleOptions) *Pebble {
	t.Helper()
	opts, err := resolvePebbleOptions(opts)
	if err != nil {
		t.Fatalf("starting pebble: %v", err)
	}

	logOut := &stoppableWriter{w: opts.Log}
	if opts.Log == nil {
		logOut.w = io.Discard
	}
	logger := log.New(logOut, "pebble ", log.Lmicroseconds)

	profiles := make(map[string]ca.Profile, len(opts.Profiles))
	names := make([]string, 0, len(opts.Profiles))
	for name, p := range opts.Profiles {
		profiles[name] = ca.Profile{
			Description:       p.Description,
			ValidityPeriod:    uint64(p.Validity / time.Second),
			PromoteCommonName: p.PromoteCommonName,
		}
		names = append(names, name)
	}
	slices.Sort(names)

	store := db.NewMemoryStore()
	// the CA logs through the issuance gate (see HoldIssuance)
	gate := &issuanceGate{w: logOut}
	caImpl := ca.New(log.New(gate, "pebble ", log.Lmicroseconds), store, "", opts.KeyAlgorithm, opts.AlternateRoots, opts.ChainLength, profiles)

	var (
		vaImpl  *va.VAImpl
		wfeImpl wfe.WebFrontEndImpl
	)
	err = withEnv(pebbleEnv(opts), func() {
		vaImpl = va.New(logger, opts.HTTPPort, opts.TLSPort, opts.Strict, opts.DNSServer, store)
		wfeImpl = wfe.New(logger, store, vaImpl, caImpl, opts.CAAIdentities, opts.Strict, opts.RequireEAB,
			int(opts.RetryAfterAuthz/time.Second), int(opts.RetryAfterOrder/time.Second))
	})
	if err != nil {
		t.Fatalf("starting pebble: %v", err)
	}

	p := &Pebble{t: t, db: store, ca: caImpl, va: vaImpl, wfe: &wfeImpl, opts: opts, profiles: names, gate: gate}
	// Registered first so it runs last: the VA dispatcher may only be stopped
	// once the web front end can no longer queue validations.
	t.Cleanup(func() {
		gate.open()
		stopVA(vaImpl)
		logOut.stop()
	})

	for id, key := range opts.EABKeys {
		if err := store.AddExternalAccountKeyByID(id, key); err != nil {
			t.Fatalf("starting pebble: adding eab key %q: %v", id, err)
		}
	}
	for _, d := range opts.BlockedDomains {
		if err := store.AddBlockedDomain(d); err != nil {
			t.Fatalf("starting pebble: blocking domain %q: %v", d, err)
		}
	}

	h := p.wfe.Handler()
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			p.newOrders.Add(1)
		}
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/chalZ/") {
			p.challengePOSTs.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	p.srv.Config.ErrorLog = logger
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

// resolvePebbleOptions validates opts and fills in defaults.
func resolvePebbleOptions(opts PebbleOptions) (PebbleOptions, error) {
	if opts.HTTPPort == 0 {
		opts.HTTPPort = defaultPebbleHTTPPort
	}
	if opts.TLSPort == 0 {
		opts.TLSPort = defaultPebbleTLSPort
	}
	if opts.KeyAlgorithm == "" {
		opts.KeyAlgorithm = defaultPebbleKeyAlg
	}
	if opts.ChainLength == 0 {
		opts.ChainLength = 1
	}
	if len(opts.Profiles) == 0 {
		opts.Profiles = map[string]Profile{defaultPebbleProfile: {Description: "The default profile"}}
	}
	if len(opts.CAAIdentities) == 0 {
		opts.CAAIdentities = []string{defaultPebbleCAAIdent}
	}
	switch {
	case opts.HTTPPort < 0 || opts.HTTPPort > math.MaxUint16:
		return opts, fmt.Errorf("invalid http port %d", opts.HTTPPort)
	case opts.TLSPort < 0 || opts.TLSPort > math.MaxUint16:
		return opts, fmt.Errorf("invalid tls port %d", opts.TLSPort)
	case !slices.Contains([]string{"rsa", "ecdsa", "mldsa"}, opts.KeyAlgorithm):
		return opts, fmt.Errorf("invalid key algorithm %q", opts.KeyAlgorithm)
	case opts.NonceRejectPercent < 0 || opts.NonceRejectPercent > 100:
		return opts, fmt.Errorf("invalid nonce reject percentage %d", opts.NonceRejectPercent)
	case opts.AuthzReusePercent < 0 || opts.AuthzReusePercent > 100:
		return opts, fmt.Errorf("invalid authz reuse percentage %d", opts.AuthzReusePercent)
	case opts.OrdersPerPage < 0:
		return opts, fmt.Errorf("invalid orders per page %d", opts.OrdersPerPage)
	case opts.AlternateRoots < 0:
		return opts, fmt.Errorf("invalid alternate roots %d", opts.AlternateRoots)
	case opts.ChainLength < 0:
		return opts, fmt.Errorf("invalid chain length %d", opts.ChainLength)
	case opts.VASleepMax < 0:
		return opts, fmt.Errorf("invalid va sleep %v", opts.VASleepMax)
	case opts.RetryAfterAuthz < 0 || opts.RetryAfterOrder < 0:
		return opts, fmt.Errorf("invalid retry-after %v/%v", opts.RetryAfterAuthz, opts.RetryAfterOrder)
	}
	for name, p := range opts.Profiles {
		if name == "" || p.Validity < 0 {
			return opts, fmt.Errorf("invalid profile %q", name)
		}
	}
	return opts, nil
}

// pebbleEnv maps opts onto the environment variables Pebble reads. Every
// variable is listed, with "" meaning unset, so ambient values never leak in.
func pebbleEnv(opts PebbleOptions) map[string]string {
	env := map[string]string{
		envVANoSleep:        "1",
		envVASleepTime:      "",
		envVAAlwaysValid:    "",
		envWFENonceReject:   strconv.Itoa(opts.NonceRejectPercent),
		envWFEAuthzReuse:    strconv.Itoa(opts.AuthzReusePercent),
		envWFEOrdersPerPage: "",
	}
	if opts.VASleepMax > 0 {
		env[envVANoSleep] = ""
		env[envVASleepTime] = strconv.Itoa(int((opts.VASleepMax + time.Second - 1) / time.Second))
	}
	if opts.VAAlwaysValid {
		env[envVAAlwaysValid] = "1"
	}
	if opts.OrdersPerPage > 0 {
		env[envWFEOrdersPerPage] = strconv.Itoa(opts.OrdersPerPage)
	}
	return env
}

// withEnv runs fn with the environment variables in env set ("" unsets) and
// restores their previous values afterwards, holding pebbleEnvMu throughout.
func withEnv(env map[string]string, fn func()) (err error) {
	pebbleEnvMu.Lock()
	defer pebbleEnvMu.Unlock()

	type saved struct {
		value string
		ok    bool
	}
	prev := make(map[string]saved, len(env))
	defer func() {
		for k, s := range prev {
			var rerr error
			if s.ok {
				rerr = os.Setenv(k, s.value)
			} else {
				rerr = os.Unsetenv(k)
			}
			if rerr != nil && err == nil {
				err = fmt.Errorf("restoring %s: %w", k, rerr)
			}
		}
	}()
	for k, v := range env {
		old, ok := os.LookupEnv(k)
		prev[k] = saved{old, ok}
		var serr error
		if v == "" {
			serr = os.Unsetenv(k)
		} else {
			serr = os.Setenv(k, v)
		}
		if serr != nil {
			return fmt.Errorf("setting %s: %w", k, serr)
		}
	}
	fn()
	return nil
}

// stopVA ends the task dispatcher goroutine that va.New starts. Pebble has
// no API for this, so it closes the VA's unexported task channel; the caller
// must ensure nothing can submit a validation any more (the WFE server is
// closed). If a Pebble upgrade changes the field, this does nothing and one
// idle goroutine per Pebble leaks instead of the test panicking.
func stopVA(v *va.VAImpl) {
	f := reflect.ValueOf(v).Elem().FieldByName("tasks")
	if !f.IsValid() || f.Kind() != reflect.Chan || !f.CanAddr() {
		return
	}
	ch := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	if ch.IsNil() {
		return
	}
	ch.Close()
}

// stoppableWriter forwards writes to w until stop is called, then drops them,
// so Pebble goroutines finishing after Cleanup never write to a dead test log.
type stoppableWriter struct {
	mu      sync.Mutex
	w       io.Writer
	stopped atomic.Bool
}

// Write implements io.Writer.
func (s *stoppableWriter) Write(b []byte) (int, error) {
	if s.stopped.Load() {
		return len(b), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped.Load() {
		return len(b), nil
	}
	return s.w.Write(b)
}

func (s *stoppableWriter) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped.Store(true)
}

// NewOrders is how many newOrder requests the CA received.
func (p *Pebble) NewOrders() int { return int(p.newOrders.Load()) }

// ChallengePOSTs is how many POSTs to challenge URLs (requests to
// validate, or POST-as-GET of a challenge) the CA received.
func (p *Pebble) ChallengePOSTs() int { return int(p.challengePOSTs.Load()) }

// DirectoryURL returns the URL of the ACME directory.
func (p *Pebble) DirectoryURL() string { return p.srv.URL + wfe.DirectoryPath }

// URL returns the base URL of the ACME server.
func (p *Pebble) URL() string { return p.srv.URL }

// HTTPClient returns an HTTP client that trusts the ACME server's TLS
// certificate. Its connections are closed at Cleanup.
func (p *Pebble) HTTPClient() *http.Client { return p.srv.Client() }

// TLSCertPool returns a pool holding the certificate of the ACME server's
// TLS endpoint (not the issuing CA; see Roots).
func (p *Pebble) TLSCertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.srv.Certificate())
	return pool
}

// WFECertPEM returns the ACME server's TLS certificate as PEM: what a
// client outside this process (lego, certbot) must trust, e.g. through
// LEGO_CA_CERTIFICATES or REQUESTS_CA_BUNDLE.
func (p *Pebble) WFECertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
}

// Roots returns the root certificates of the issuing CA: the default chain
// first, then the alternate chains.
func (p *Pebble) Roots() []*x509.Certificate {
	n := p.ca.GetNumberOfRootCerts()
	roots := make([]*x509.Certificate, 0, n)
	for i := range n {
		roots = append(roots, p.ca.GetRootCert(i).Cert)
	}
	return roots
}

// RootsPEM returns Roots PEM-encoded, concatenated.
func (p *Pebble) RootsPEM() []byte {
	var out []byte
	for _, c := range p.Roots() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// RootPool returns a pool of Roots, for verifying issued certificates.
func (p *Pebble) RootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range p.Roots() {
		pool.AddCert(c)
	}
	return pool
}

// Intermediates returns the leaf-signing intermediate of each chain, in the
// order of Roots.
func (p *Pebble) Intermediates() []*x509.Certificate {
	n := p.ca.GetNumberOfRootCerts()
	out := make([]*x509.Certificate, 0, n)
	for i := range n {
		out = append(out, p.ca.GetIntermediateCert(i).Cert)
	}
	return out
}

// ProfileNames returns the configured certificate profile names, sorted.
func (p *Pebble) ProfileNames() []string { return slices.Clone(p.profiles) }

// RequiresEAB reports whether newAccount requires external account binding.
func (p *Pebble) RequiresEAB() bool { return p.opts.RequireEAB }

// DNSServer returns the DNS server address the VA resolves with ("" for the
// system resolver).
func (p *Pebble) DNSServer() string { return p.opts.DNSServer }

// HTTPPort returns the port the VA dials for HTTP-01.
func (p *Pebble) HTTPPort() int { return p.opts.HTTPPort }

// TLSPort returns the port the VA dials for TLS-ALPN-01.
func (p *Pebble) TLSPort() int { return p.opts.TLSPort }

// AddExternalAccountKey registers an external account MAC key (base64url,
// unpadded) under keyID.
func (p *Pebble) AddExternalAccountKey(keyID, macKey string) error {
	if err := p.db.AddExternalAccountKeyByID(keyID, macKey); err != nil {
		return fmt.Errorf("adding eab key %q: %w", keyID, err)
	}
	return nil
}

// NewExternalAccountKey registers a random 256-bit MAC key under keyID and
// returns it base64url-encoded, as an ACME client expects it. It fails the
// test on error, so call it from the test goroutine.
func (p *Pebble) NewExternalAccountKey(keyID string) string {
	p.t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	mac := base64.RawURLEncoding.EncodeToString(key)
	if err := p.AddExternalAccountKey(keyID, mac); err != nil {
		p.t.Fatalf("creating eab key: %v", err)
	}
	return mac
}

// BlockDomain makes Pebble refuse orders for domain and its subdomains.
func (p *Pebble) BlockDomain(domain string) error {
	if err := p.db.AddBlockedDomain(domain); err != nil {
		return fmt.Errorf("blocking domain %q: %w", domain, err)
	}
	return nil
}

// SetRenewalInfo makes the renewalInfo (ARI) endpoint answer for cert with
// the given raw response body instead of Pebble's computed window. The body
// is served as is, so it may be deliberately malformed.
func (p *Pebble) SetRenewalInfo(cert *x509.Certificate, body string) error {
	if err := p.db.SetARIResponse(cert.SerialNumber, body); err != nil {
		return fmt.Errorf("setting renewal info: %w", err)
	}
	return nil
}

// SetRenewalWindow makes the renewalInfo (ARI) endpoint suggest renewing cert
// between start and end.
func (p *Pebble) SetRenewalWindow(cert *x509.Certificate, start, end time.Time) error {
	type window struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
	}
	body, err := json.Marshal(struct {
		SuggestedWindow window `json:"suggestedWindow"`
	}{window{start.UTC().Truncate(time.Second), end.UTC().Truncate(time.Second)}})
	if err != nil {
		return fmt.Errorf("encoding renewal window: %w", err)
	}
	return p.SetRenewalInfo(cert, string(body))
}
