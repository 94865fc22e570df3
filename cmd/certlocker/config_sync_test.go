package main_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/e2e"
)

// declaredApp declares one DNS provider client and one ACME client (config
// as code); neither is contacted while the config merely starts.
const declaredApp = `{
	"dns_providers": [{"name": "bind-main", "type": "rfc2136", "zones": ["example.test"],
		"credentials": {"server": "127.0.0.1:53", "key_name": "certlocker", "key": "{env.TSIG_KEY}"}}],
	"issuers": [{"name": "private-ca", "directory_url": "https://ca.example.test/acme/directory"}]
}`

// declared is what the admin API shows of the declared resources.
type declared struct {
	dnsID, dnsManagedBy string
	issuerID, issuerMBy string
}

func readDeclared(t *testing.T, n *e2e.Node) declared {
	t.Helper()
	var dns, iss struct {
		Items []struct {
			ID        string `json:"id"`
			Name      string `json:"name"`
			ManagedBy string `json:"managed_by"`
		} `json:"items"`
	}
	if code, body := n.Do("GET", "/certlocker/dns-providers", nil, &dns); code != http.StatusOK {
		t.Fatalf("GET dns-providers = %d %s", code, body)
	}
	if code, body := n.Do("GET", "/certlocker/issuers", nil, &iss); code != http.StatusOK {
		t.Fatalf("GET issuers = %d %s", code, body)
	}
	var d declared
	for _, p := range dns.Items {
		if p.Name == "bind-main" {
			d.dnsID, d.dnsManagedBy = p.ID, p.ManagedBy
		}
	}
	for _, i := range iss.Items {
		if i.Name == "private-ca" {
			d.issuerID, d.issuerMBy = i.ID, i.ManagedBy
		}
	}
	return d
}

// Commands that only provision a config (validate, adapt --validate, and
// rekey, with or without --config) never sync its declarations: a draft
// config that lacks the declared DNS provider and ACME client leaves both
// as they were, same IDs and still managed by the config, when the real
// config starts again.
func TestProvisioningCommandsChangeNothing(t *testing.T) {
	dir := t.TempDir()
	n := e2e.NewNode(t, dir)
	n.Env = []string{"TSIG_KEY=" + "c2VjcmV0LXRzaWcta2V5"}
	full := n.Config(declaredApp)
	if err := n.Start(full); err != nil {
		t.Fatal(err)
	}
	want := readDeclared(t, n)
	if want.dnsID == "" || want.issuerID == "" || want.dnsManagedBy != "config" || want.issuerMBy != "config" {
		t.Fatalf("the declared resources did not sync on start: %+v", want)
	}
	n.Stop()

	draft := filepath.Join(dir, "draft.json")
	if err := os.WriteFile(draft, []byte(n.Config(`{}`)), 0o600); err != nil {
		t.Fatal(err)
	}
	draftCaddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(draftCaddyfile, []byte("{\n\tadmin "+n.Admin+"\n\tcertlocker\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	commands := map[string][]string{
		"validate":         {"validate", "--config", draft},
		"adapt --validate": {"adapt", "--config", draftCaddyfile, "--adapter", "caddyfile", "--validate"},
		"rekey --config":   {"rekey", "--config", draft},
		"rekey":            {"rekey"},
	}
	for _, name := range []string{"validate", "adapt --validate", "rekey --config", "rekey"} {
		args := commands[name]
		out, err := n.Command(args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		if err := n.Start(full); err != nil {
			t.Fatalf("after %s the real config does not start: %v", name, err)
		}
		if got := readDeclared(t, n); got != want {
			t.Fatalf("after %s the declared resources changed: %+v, want %+v", name, got, want)
		}
		var audit auditList
		n.Do("GET", "/certlocker/audit?actor=config", nil, &audit)
		for _, e := range audit.Items {
			if !strings.HasSuffix(e.Action, ".create") {
				t.Fatalf("after %s the config actor did more than create: %+v", name, audit.Items)
			}
		}
		n.Stop()
	}
}

// A reload that drops apps.certlocker leaves no certlocker app running:
// the admin API answers 503, not 500 from a store the old configs closed.
func TestReloadWithoutTheApp(t *testing.T) {
	n := e2e.NewNode(t, t.TempDir())
	if err := n.Start(n.Config(`{}`)); err != nil {
		t.Fatal(err)
	}
	// reload to a changed certlocker config, then to one without it
	if code, body := n.Do("POST", "/load", n.Config(`{"workflow":{"scan_interval":"7s"}}`), nil); code != http.StatusOK {
		t.Fatalf("reload = %d %s", code, body)
	}
	if code, body := n.Do("GET", "/certlocker/health", nil, nil); code != http.StatusOK {
		t.Fatalf("health after the reload = %d %s", code, body)
	}
	without := `{"admin":{"listen":"` + n.Admin + `"},"apps":{}}`
	if code, body := n.Do("POST", "/load", without, nil); code != http.StatusOK {
		t.Fatalf("reload without the app = %d %s", code, body)
	}
	for _, path := range []string{"/certlocker/issuers", "/certlocker/health"} {
		code, body := n.Do("GET", path, nil, nil)
		if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "not running") {
			t.Fatalf("GET %s without the app = %d %s, want 503: not running", path, code, body)
		}
	}
}

// A reload that fails to start (its http app cannot bind a taken port)
// keeps the running config and its declarations: the API still serves
// them, same IDs, managed by the config. Apps start in map order, so the
// reload is tried until the certlocker app was among those started.
func TestFailedReloadKeepsTheDeclarations(t *testing.T) {
	n := e2e.NewNode(t, t.TempDir())
	n.Env = []string{"TSIG_KEY=" + "c2VjcmV0LXRzaWcta2V5"}
	if err := n.Start(n.Config(declaredApp)); err != nil {
		t.Fatal(err)
	}
	want := readDeclared(t, n)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	failing := `{"admin":{"listen":"` + n.Admin + `"},"apps":{"certlocker":{},
		"http":{"servers":{"taken":{"listen":["` + l.Addr().String() + `"],"automatic_https":{"disable":true}}}}}}`
	for attempt := 1; ; attempt++ {
		if code, body := n.Do("POST", "/load", failing, nil); code < 400 {
			t.Fatalf("the failing reload answered %d %s", code, body)
		}
		if got := readDeclared(t, n); got != want {
			t.Fatalf("after a failed reload the declared resources are %+v, want %+v", got, want)
		}
		if strings.Contains(n.Logs(), "dns provider sync reverted") {
			break
		}
		if attempt == 32 {
			t.Fatal("the certlocker app never started before the http app failed")
		}
	}
}
