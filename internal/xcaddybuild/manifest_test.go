package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const root = "../.."

// goModVersions reads the require lines of go.mod.
func goModVersions(t *testing.T) map[string]string {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && strings.Contains(f[0], ".") && strings.HasPrefix(f[1], "v") {
			out[f[0]] = f[1]
		}
	}
	return out
}

func imports(t *testing.T, file string) map[string]bool {
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, file), nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		out[p] = true
	}
	return out
}

// The xcaddy build and `go build ./cmd/certlocker` must give one binary:
// same Caddy, same plugin versions, same plugins imported.
func TestManifestMatchesGoMod(t *testing.T) {
	m, err := Load(filepath.Join(root, "xcaddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	mods := goModVersions(t)
	if got := mods["github.com/caddyserver/caddy/v2"]; got != m.CaddyVersion {
		t.Errorf("xcaddy.json builds Caddy %s, go.mod requires %s", m.CaddyVersion, got)
	}
	main := imports(t, "cmd/certlocker/main.go")
	self := false
	for _, mod := range m.Modules {
		if mod.Module == "github.com/certlocker/caddy-certlocker" {
			self = true
			if mod.Replace != "./" {
				t.Errorf("CertLocker must be built from the checkout (replace \"./\"), not %q", mod.Replace)
			}
			continue
		}
		if got := mods[mod.Module]; got != mod.Version {
			t.Errorf("xcaddy.json has %s %s, go.mod requires %q", mod.Module, mod.Version, got)
		}
		if !main[mod.Module] {
			t.Errorf("cmd/certlocker/main.go does not import %s, which xcaddy.json builds in", mod.Module)
		}
	}
	if !self {
		t.Error("xcaddy.json does not build CertLocker itself")
	}
	if !main["github.com/certlocker/caddy-certlocker"] || !main["github.com/caddyserver/caddy/v2/modules/standard"] {
		t.Error("cmd/certlocker/main.go must import the root package and Caddy's standard modules")
	}
	// every plugin the binary imports is in the manifest
	listed := map[string]bool{}
	for _, mod := range m.Modules {
		listed[mod.Module] = true
	}
	for imp := range main {
		if strings.HasPrefix(imp, "github.com/caddy-dns/") && !listed[imp] {
			t.Errorf("cmd/certlocker/main.go imports %s, which xcaddy.json lacks", imp)
		}
	}
	want := "build " + m.CaddyVersion + " --with github.com/certlocker/caddy-certlocker@v0.0.0=./ --with github.com/caddy-dns/cloudflare@v0.2.4 --output dist/certlocker"
	if got := strings.Join(m.Args(), " "); got != want {
		t.Errorf("xcaddy args = %s\nwant %s", got, want)
	}
}

var regRe = regexp.MustCompile(`caddy\.RegisterModule\(|httpcaddyfile\.RegisterGlobalOption\(|httpcaddyfile\.RegisterHandlerDirective\(|caddycmd\.RegisterCommand\(`)

// The root package must blank-import every package that registers a Caddy
// module, Caddyfile option or command, or an xcaddy build would silently
// lack it.
func TestRootImportsEveryModule(t *testing.T) {
	rootImports := imports(t, "certlocker.go")
	var registering []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "internal" || d.Name() == "cmd" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if regRe.Match(b) {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			registering = append(registering, "github.com/certlocker/caddy-certlocker/"+filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(registering)
	if len(registering) < 3 {
		t.Fatalf("found only %v registering modules", registering)
	}
	for _, p := range registering {
		if !rootImports[p] {
			t.Errorf("certlocker.go does not import %s, which registers a Caddy module", p)
		}
	}
}
