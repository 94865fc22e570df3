package caddyfile_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	_ "github.com/certlocker/caddy-certlocker"
	"github.com/certlocker/caddy-certlocker/caddyfile"
)

var update = flag.Bool("update", false, "rewrite the golden files from the adapter's output")

// Adapt adapts with the file name the error messages use.
func Adapt(t *testing.T, input []byte) ([]byte, error) {
	t.Helper()
	return caddyfile.Adapt(input, "Caddyfile")
}

// Golden files in testdata: a Caddyfile, a line of dashes, the JSON it
// adapts to.
func TestGoldenAdapt(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.caddyfiletest")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(b), "\n----------\n")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			got, err := Adapt(t, []byte(in))
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				os.WriteFile(f, []byte(in+"\n----------\n"+string(got)), 0o644)
				return
			}
			if string(got) != want {
				t.Fatalf("adapted JSON differs from the golden file\ngot:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestAdaptErrors(t *testing.T) {
	cases := map[string]struct{ in, want, at string }{
		"unknown option":      {"{\n\tcertlocker {\n\t\tcolour blue\n\t}\n}\n", "unrecognized certlocker option: colour", "at Caddyfile:3"},
		"unknown backend":     {"{\n\tcertlocker {\n\t\tstorage mysql\n\t}\n}\n", "unknown storage backend \"mysql\"", "at Caddyfile:3"},
		"postgres no dsn":     {"{\n\tcertlocker {\n\t\tstorage postgres\n\t}\n}\n", "needs a DSN", "at Caddyfile:3"},
		"extra arg":           {"{\n\tcertlocker {\n\t\tnode_id a b\n\t}\n}\n", "wrong argument count", "at Caddyfile:3"},
		"missing key":         {"{\n\tcertlocker {\n\t\tencryption_key\n\t}\n}\n", "wrong argument count", "at Caddyfile:3"},
		"bad max_connections": {"{\n\tcertlocker {\n\t\tstorage postgres {env.DSN} {\n\t\t\tmax_connections lots\n\t\t}\n\t}\n}\n", "max_connections must be a positive number", "at Caddyfile:4"},
		"twice":               {"{\n\tcertlocker {\n\t\tstorage sqlite\n\t\tstorage sqlite\n\t}\n}\n", "storage may be set only once", "at Caddyfile:4"},
		"workflow option":     {"{\n\tcertlocker {\n\t\tworkflow {\n\t\t\tspeed fast\n\t\t}\n\t}\n}\n", "unrecognized workflow option: speed", "at Caddyfile:4"},
		"bad concurrency":     {"{\n\tcertlocker {\n\t\tworkflow {\n\t\t\tconcurrency 0\n\t\t}\n\t}\n}\n", "concurrency must be a positive number", "at Caddyfile:4"},
		"bad lease":           {"{\n\tcertlocker {\n\t\tworkflow {\n\t\t\tlease_ttl soon\n\t\t}\n\t}\n}\n", "lease_ttl", "at Caddyfile:4"},
		"unknown notifier":    {"{\n\tcertlocker {\n\t\tnotifier pager {\n\t\t}\n\t}\n}\n", "certlocker.notifiers.pager", ""},
		"webhook without url": {"{\n\tcertlocker {\n\t\tnotifier webhook {\n\t\t\tformat slack\n\t\t}\n\t}\n}\n", "webhook needs a url", ""},
		"argument on option":  {"{\n\tcertlocker now\n}\n", "wrong argument count", "at Caddyfile:2"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Adapt(t, []byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.at) {
				t.Fatalf("error %v, want it to contain %q %q", err, c.want, c.at)
			}
		})
	}
}
