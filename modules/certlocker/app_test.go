package certlocker

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/certlocker/caddy-certlocker/storage"
)

func TestDSNHasLiteralPassword(t *testing.T) {
	cases := map[string]bool{
		"postgres://u:{env.PW}@host/db":            false,
		"postgres://u:pw{env.X}@host/db":           true,
		"postgres://u:pw@{env.HOST}/db":            true,
		"{env.CERTLOCKER_DSN}":                     false,
		"host={env.HOST} password=secret":          true,
		"host=h password={file./run/secrets/pgpw}": false,
		"postgres://u@host/db?password={env.PW}":   false,
		"postgres://u:pw@host/db":                  true,
		"postgresql://u:pw@host/db":                true,
		"postgres://u@host/db?password=pw":         true,
		"host=h user=u password=pw dbname=d":       true,
		"password=pw host=h":                       true,
		"postgres://u@host/db":                     false,
		"host=h user=u dbname=d":                   false,
		"host=h user=u passfile=/etc/pgpass":       false,
		"postgres://u@host/db?sslmode=verify":      false,
	}
	for dsn, want := range cases {
		if got := dsnHasLiteralPassword(dsn); got != want {
			t.Errorf("dsnHasLiteralPassword(%q) = %v, want %v", dsn, got, want)
		}
	}
}

// provision loads the app from JSON the way Caddy does.
func provision(t *testing.T, raw string) *App {
	t.Helper()
	ctx, err := caddy.ProvisionContext(&caddy.Config{AppsRaw: caddy.ModuleMap{"certlocker": json.RawMessage(raw)}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := ctx.App("certlocker")
	if err != nil {
		t.Fatal(err)
	}
	return v.(*App)
}

// A config reload provisions a new App before the old one is cleaned up:
// both share the open store, which closes only when the last one goes.
func TestReloadReusesStore(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvEncryptionKey, "")
	cfg := `{"storage":{"path":"` + filepath.Join(dir, "c.db") + `"},"node_id":"n1"}`
	first := provision(t, cfg)
	second := provision(t, cfg)
	if first.Store() != second.Store() {
		t.Fatal("the reload opened a second store")
	}
	if !first.opened || second.opened {
		t.Fatalf("opened flags: first %v second %v", first.opened, second.opened)
	}
	if err := first.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Store().Health(t.Context()); err != nil {
		t.Fatalf("cleaning up the old config closed the store: %v", err)
	}
	if err := second.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Store().Health(t.Context()); err == nil {
		t.Fatal("the store is still open after the last config went away")
	}
	// after the last cleanup, a new config opens the store again
	third := provision(t, cfg)
	defer third.Cleanup()
	if third.Store() == second.Store() || !third.opened {
		t.Fatal("a config after the last cleanup reused a closed store")
	}
}

// running drives Caddy itself: configs are loaded, reloaded and stopped
// through caddy.Load and caddy.Stop, as the binary does.
type running struct {
	t   *testing.T
	dir string
}

func newRunning(t *testing.T) *running {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv(EnvEncryptionKey, "")
	t.Setenv("TSIG_TEST_KEY", "c2VjcmV0")
	t.Cleanup(func() { _ = caddy.Stop() })
	return &running{t: t, dir: dir}
}

// app returns a certlocker app config on the test's database, with the
// given extra fields ("" for none).
func (r *running) app(extra string) string {
	cfg := `"storage":{"path":"` + filepath.Join(r.dir, "c.db") + `"},"node_id":"n1"`
	if extra != "" {
		cfg += "," + extra
	}
	return "{" + cfg + "}"
}

// load runs a config of the given apps (a JSON object's members).
func (r *running) load(apps string) error {
	return caddy.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}},"apps":{`+apps+`}}`), true)
}

func (r *running) mustLoad(apps string) *App {
	r.t.Helper()
	if err := r.load(apps); err != nil {
		r.t.Fatal(err)
	}
	return Current()
}

// failingHTTP is an http app that cannot start: its port is taken.
func failingHTTP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return `"http":{"servers":{"taken":{"listen":["` + l.Addr().String() + `"],"automatic_https":{"disable":true}}}}`
}

// After a reload, stopping Caddy leaves no app running: the old app the
// reload replaced is closed and must not come back.
func TestStopAfterReload(t *testing.T) {
	r := newRunning(t)
	a := r.mustLoad(`"certlocker":` + r.app(""))
	b := r.mustLoad(`"certlocker":` + r.app(`"workflow":{"scan_interval":"7s"}`))
	if a == nil || b == nil || a == b {
		t.Fatalf("apps after the reload: %p then %p", a, b)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := Current(); got != nil {
		t.Fatalf("after stop the current app is %p (the reloaded-away app is %p)", got, a)
	}
}

// A reload to a config without apps.certlocker leaves no app running.
func TestReloadDroppingTheApp(t *testing.T) {
	r := newRunning(t)
	r.mustLoad(`"certlocker":` + r.app(""))
	r.mustLoad(`"certlocker":` + r.app(`"workflow":{"scan_interval":"7s"}`))
	if got := r.mustLoad(``); got != nil {
		t.Fatalf("after a reload without the app the current app is %p", got)
	}
	// and a later config with the app serves again
	if got := r.mustLoad(`"certlocker":` + r.app("")); got == nil {
		t.Fatal("no current app after the app came back")
	}
}

// declaration of the running config: two DNS provider clients and two ACME
// clients, all config as code.
const (
	dnsKeep   = `{"name":"keep","type":"rfc2136","zones":["keep.test"],"credentials":{"server":"127.0.0.1:53","key_name":"k","key":"{env.TSIG_TEST_KEY}"}}`
	dnsDrop   = `{"name":"drop","type":"rfc2136","zones":["drop.test"],"credentials":{"server":"127.0.0.1:53","key_name":"k","key":"{env.TSIG_TEST_KEY}"}}`
	dnsNew    = `{"name":"new","type":"rfc2136","zones":["new.test"],"credentials":{"server":"127.0.0.1:53","key_name":"k","key":"{env.TSIG_TEST_KEY}"}}`
	dnsKeepTT = `{"name":"keep","type":"rfc2136","zones":["keep.test"],"ttl":"300s","credentials":{"server":"127.0.0.1:53","key_name":"k","key":"{env.TSIG_TEST_KEY}"}}`
	issKeep   = `{"name":"ca-keep","directory_url":"https://ca.test/directory","profile":"classic"}`
	issKeepP  = `{"name":"ca-keep","directory_url":"https://ca.test/directory","profile":"shortlived"}`
	issDrop   = `{"name":"ca-drop","directory_url":"https://other.test/directory"}`
	issNew    = `{"name":"ca-new","directory_url":"https://new.test/directory"}`
)

// snapshot is what a test compares of the config-declared rows.
func snapshot(t *testing.T, a *App) map[string]string {
	t.Helper()
	out := map[string]string{}
	ps, err := a.Store().DNSProviders().List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		out["dns "+p.Name] = fmt.Sprintf("%s %s ttl=%s zones=%v", p.ID, p.ManagedBy, p.TTL, p.Zones)
	}
	is, err := a.Store().Issuers().List(t.Context(), storage.IssuerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range is {
		out["issuer "+i.Name] = fmt.Sprintf("%s %s profile=%s", i.ID, i.ManagedBy, i.Profile)
	}
	return out
}

// A reload whose new config fails to start after the certlocker app
// started (another app of the config fails): Caddy stops the new app and
// keeps the old config, which serves again, and the database is as the
// running config had it: what the new config removed, released, changed
// or added is back as it was, same IDs. Apps start in map order, so the
// reload is tried until the certlocker app was among those started.
func TestFailedReloadRestoresTheRunningConfig(t *testing.T) {
	r := newRunning(t)
	old := r.mustLoad(`"certlocker":` + r.app(`"dns_providers":[`+dnsKeep+`,`+dnsDrop+`],"issuers":[`+issKeep+`,`+issDrop+`]`))
	want := snapshot(t, old)
	if len(want) != 4 {
		t.Fatalf("the running config synced %v", want)
	}
	countConfigAudit := func() int {
		entries, _, err := old.Store().Audit().List(t.Context(), storage.AuditFilter{Actor: storage.ActorConfig}, storage.Page{Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	synced := countConfigAudit()
	next := `"certlocker":` + r.app(`"dns_providers":[`+dnsKeepTT+`,`+dnsNew+`],"issuers":[`+issKeepP+`,`+issNew+`]`) + `,` + failingHTTP(t)
	for attempt := 1; ; attempt++ {
		err := r.load(next)
		if err == nil || !strings.Contains(err.Error(), "http app module: start") {
			t.Fatalf("the reload did not fail on the http app: %v", err)
		}
		if Current() != old {
			t.Fatalf("after the failed reload the current app is %p, want the running one %p", Current(), old)
		}
		if _, err := old.Store().Health(t.Context()); err != nil {
			t.Fatalf("the running app's store is unusable after the failed reload: %v", err)
		}
		if got := snapshot(t, old); !maps.Equal(got, want) {
			t.Fatalf("after a failed reload (attempt %d) the database is\n%v\nwant\n%v", attempt, got, want)
		}
		if countConfigAudit() > synced {
			break // the new app had started, synced, and was rolled back
		}
		if attempt == 64 {
			t.Fatal("the certlocker app never started before the http app failed")
		}
	}
	// the running config still owns its declarations: a restart syncs nothing
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	again := r.mustLoad(`"certlocker":` + r.app(`"dns_providers":[`+dnsKeep+`,`+dnsDrop+`],"issuers":[`+issKeep+`,`+issDrop+`]`))
	if got := snapshot(t, again); !maps.Equal(got, want) {
		t.Fatalf("after a restart the database is\n%v\nwant\n%v", got, want)
	}
}

// caddy validate (Provision without Start) refuses a bad declaration and
// writes nothing for a good one.
func TestValidateWritesNothing(t *testing.T) {
	r := newRunning(t)
	running := r.mustLoad(`"certlocker":` + r.app(`"dns_providers":[`+dnsKeep+`,`+dnsDrop+`],"issuers":[`+issKeep+`,`+issDrop+`]`))
	want := snapshot(t, running)
	validate := func(app string) error {
		var cfg caddy.Config
		if err := json.Unmarshal([]byte(`{"admin":{"disabled":true,"config":{"persist":false}},"apps":{"certlocker":`+app+`}}`), &cfg); err != nil {
			t.Fatal(err)
		}
		return caddy.Validate(&cfg)
	}
	if err := validate(r.app(`"dns_providers":[` + dnsNew + `],"issuers":[` + issNew + `]`)); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"dns zones":      `"dns_providers":[{"name":"x","type":"rfc2136","credentials":{"server":"127.0.0.1:53","key_name":"k","key":"{env.TSIG_TEST_KEY}"}}]`,
		"dns name twice": `"dns_providers":[` + dnsKeep + `,` + dnsKeep + `]`,
		"issuer url":     `"issuers":[{"name":"x","directory_url":"http://ca.test/directory"}]`,
		"issuer twice":   `"issuers":[` + issKeep + `,` + issKeep + `]`,
	}
	for name, extra := range bad {
		if err := validate(r.app(extra)); err == nil {
			t.Errorf("%s: validate accepted a bad declaration", name)
		}
	}
	if got := snapshot(t, running); !maps.Equal(got, want) {
		t.Fatalf("after validate the database is\n%v\nwant\n%v", got, want)
	}
}

// A reload whose new config fails to start after this app started: Caddy
// stops the new app and keeps the old config, which must serve again.
func TestFailedReloadRestoresTheRunningApp(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"storage":{"path":"` + filepath.Join(dir, "c.db") + `"},"node_id":"n1"}`
	old := provision(t, cfg)
	defer old.Cleanup()
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	defer old.Stop()
	if Current() != old {
		t.Fatal("the started app is not current")
	}
	next := provision(t, cfg)
	if err := next.Start(); err != nil {
		t.Fatal(err)
	}
	if Current() != next {
		t.Fatal("the new app is not current after it started")
	}
	next.Stop() // the rest of the new config failed to start
	next.Cleanup()
	if Current() != old {
		t.Fatalf("after a failed reload the current app is %p, want the old one %p", Current(), old)
	}
}
