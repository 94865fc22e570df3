package dnsproviders

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

const (
	testZone  = "example.test"
	cfToken   = "cf-api-token-0123456789abcdefghijklmnopqrstuv" // 44 chars: also valid for caddy-dns/cloudflare
	cfZoneTok = "cf-zone-token-0123456789abcdefghijklmnopqrstu"
)

// env is one test setup: a real SQLite store, the harness DNS server and
// fake Cloudflare API, and a service wired to them.
type env struct {
	t     *testing.T
	path  string
	st    storage.Store
	dns   *acmetest.DNSServer
	cf    *acmetest.Cloudflare
	svc   *Service
	logs  *observer.ObservedLogs
	clock *fakeClock
}

type envOption func(*Options)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, path: filepath.Join(t.TempDir(), "certlocker.db"), clock: &fakeClock{}}
	e.dns = acmetest.NewDNSServer(t, testZone, "other.test")
	e.cf = acmetest.NewCloudflare(t, e.dns, acmetest.WithCloudflareZones(testZone), acmetest.WithCloudflareAccount("acct-1", "Ops"))
	e.cf.AddToken(cfToken, acmetest.PermZoneRead(testZone), acmetest.PermDNSEdit(testZone))
	st, err := sqlite.Open(t.Context(), e.path, storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.st = st
	e.svc = e.newService(opts...)
	return e
}

// newService builds another service on the same store (a second node, or
// the same node after a restart).
func (e *env) newService(opts ...envOption) *Service {
	core, logs := observer.New(zapcore.DebugLevel)
	e.logs = logs
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	e.t.Cleanup(cancel)
	o := Options{
		Context:        cctx,
		Logger:         zap.New(core),
		Node:           "node-test",
		HTTPClient:     e.cf.HTTPClient(),
		Resolvers:      []string{e.dns.Addr()},
		NameserverPort: port(e.t, e.dns.Addr()),
		RetryBase:      time.Millisecond,
		RetryMax:       5 * time.Millisecond,
	}
	for _, fn := range opts {
		fn(&o)
	}
	return New(e.st, o)
}

func port(t testing.TB, addr string) int {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	n, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// sqliteOpen opens a fresh SQLite store closed at cleanup.
func sqliteOpen(tb testing.TB) (storage.Store, error) {
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "certlocker.db"), storagetest.NewSealer(tb))
	if err == nil {
		tb.Cleanup(func() { _ = st.Close() })
	}
	return st, err
}

// cloudflare creates a Cloudflare provider client for the test zone.
func (e *env) cloudflare(name string, mod func(*Config)) *storage.DNSProvider {
	e.t.Helper()
	c := Config{Name: name, Type: TypeCloudflare, Credentials: creds(map[string]string{"api_token": cfToken}),
		Zones: []string{testZone}, AccountID: "acct-1", PropagationTimeout: caddy.Duration(10 * time.Second)}
	if mod != nil {
		mod(&c)
	}
	p, err := e.svc.Create(e.t.Context(), "tester", c)
	if err != nil {
		e.t.Fatalf("creating provider %s: %v", name, err)
	}
	return p
}

func creds(m map[string]string) json.RawMessage {
	b, _ := json.Marshal(m)
	return b
}

// noSecret fails the test if any secret appears in s.
func noSecret(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Fatalf("%s reveals a secret: %s", what, s)
		}
	}
}

// logText renders every log entry with its fields.
func logText(logs *observer.ObservedLogs) string {
	var b bytes.Buffer
	for _, e := range logs.All() {
		b.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			b.WriteString(" " + k + "=")
			j, _ := json.Marshal(v)
			b.Write(j)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// fakeClock is a settable clock; zero means the real time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		return time.Now()
	}
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func withClock(c *fakeClock) envOption { return func(o *Options) { o.Now = c.Now } }
