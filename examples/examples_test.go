// Package examples_test checks every example config: a Caddyfile adapts to
// its golden JSON twin (<name>.caddyfile.json), and every config, JSON or
// adapted, loads and provisions for real.
package examples_test

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	_ "github.com/certlocker/caddy-certlocker"
	"github.com/certlocker/caddy-certlocker/caddyfile"
	"github.com/certlocker/caddy-certlocker/internal/pgtest"
)

var update = flag.Bool("update", false, "rewrite the golden twins")

func TestExamples(t *testing.T) {
	files, _ := filepath.Glob("*")
	n := 0
	for _, f := range files {
		var cfgJSON []byte
		switch {
		case strings.HasSuffix(f, ".caddyfile"):
			in, _ := os.ReadFile(f)
			got, err := caddyfile.Adapt(in, f)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			twin := f + ".json"
			if *update {
				os.WriteFile(twin, got, 0o644)
			}
			want, err := os.ReadFile(twin)
			if err != nil {
				t.Fatalf("%s has no golden twin %s (run go test ./examples -update): %v", f, twin, err)
			}
			if string(got) != string(want) {
				t.Fatalf("%s adapts to\n%s\nnot its twin %s:\n%s", f, got, twin, want)
			}
			cfgJSON = got
		case strings.HasSuffix(f, ".json") && !strings.HasSuffix(f, ".caddyfile.json"):
			cfgJSON, _ = os.ReadFile(f)
		default:
			continue
		}
		n++
		t.Run(f, func(t *testing.T) { validate(t, cfgJSON) })
	}
	if n < 3 {
		t.Fatalf("only %d examples checked", n)
	}
}

// validate provisions the config as `certlocker validate` does, with its
// own data directory and the environment the examples expect.
func validate(t *testing.T, cfgJSON []byte) {
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	t.Setenv("CERTLOCKER_ENCRYPTION_KEY", hex.EncodeToString(key))
	// what the examples read from their environment
	t.Setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/example")
	t.Setenv("CERTLOCKER_HOOK_SECRET", "example-hook-secret")
	if strings.Contains(string(cfgJSON), "CERTLOCKER_DSN") {
		t.Setenv("CERTLOCKER_DSN", pgtest.DSN(t))
	}
	var cfg caddy.Config
	if err := caddy.StrictUnmarshalJSON(cfgJSON, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatal(err)
	}
}
