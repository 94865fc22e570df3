package certlocker

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
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
