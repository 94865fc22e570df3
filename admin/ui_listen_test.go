package admin

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"                  // the caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"                // basic_auth
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy/forwardauth" // forward_auth
	"golang.org/x/crypto/bcrypt"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
)

// A real Caddy config load: certlocker_ui on a loopback listener without
// authentication starts (the UI answers loopback clients, with a banner);
// on a non-loopback listener without authentication the config refuses to
// start, naming the listener and what to add; behind basic_auth (or with
// a trusted identity header, or inside a subroute after basic_auth) it
// starts.
func TestUIListenerWithoutAuthRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv(certlocker.EnvEncryptionKey, "")
	hash, err := bcrypt.GenerateFromPassword([]byte("pw-of-root"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	basicAuth := map[string]any{"handler": "authentication", "providers": map[string]any{"http_basic": map[string]any{
		"accounts": []any{map[string]any{"username": "root", "password": string(hash)}}}}}
	ui := map[string]any{"handler": "certlocker_ui"}
	freePort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		return port
	}
	config := func(listen string, routes ...any) []byte {
		return []byte(mustJSON(map[string]any{
			"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
			"apps": map[string]any{
				"certlocker": map[string]any{"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
					"users": []any{map[string]any{"id": "root", "role": "admin"}}},
				"http": map[string]any{"servers": map[string]any{"ops": map[string]any{
					"listen": []string{listen}, "automatic_https": map[string]any{"disable": true}, "routes": routes}}},
			},
		}))
	}
	get := func(url, authz string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	rootAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("root:pw-of-root"))
	cases := map[string]struct {
		listen  string
		routes  []any
		refused bool
		check   func(t *testing.T, port string)
		// caddyfile, if set, is the site (PORT: the port) instead of routes
		caddyfile string
	}{
		"forward_auth from a Caddyfile starts":      {caddyfile: "http://:PORT {\n\tforward_auth 127.0.0.1:9 {\n\t\turi /verify\n\t\tcopy_headers Remote-User\n\t}\n\tcertlocker_ui\n}\n"},
		"a Caddyfile site without auth refuses":     {caddyfile: "http://:PORT {\n\tcertlocker_ui\n}\n", refused: true, listen: ":"},
		"a Caddyfile site bound to loopback starts": {caddyfile: "http://localhost:PORT {\n\tbind 127.0.0.1 [::1]\n\tcertlocker_ui\n}\n"},
		"loopback without auth starts, with the banner": {listen: "127.0.0.1:", routes: []any{map[string]any{"handle": []any{ui}}},
			check: func(t *testing.T, port string) {
				if code, body := get("http://127.0.0.1:"+port+"/workflows", ""); code != 200 || !strings.Contains(body, "No authentication is in front of this UI") {
					t.Fatalf("%d %s", code, body)
				}
			}},
		"all interfaces without auth refuses to start": {listen: "0.0.0.0:", routes: []any{map[string]any{"handle": []any{ui}}}, refused: true},
		"an unspecified host is every interface":       {listen: ":", routes: []any{map[string]any{"handle": []any{ui}}}, refused: true},
		"auth only on another path does not count": {listen: "0.0.0.0:", refused: true, routes: []any{
			map[string]any{"match": []any{map[string]any{"path": []string{"/private/*"}}}, "handle": []any{basicAuth}},
			map[string]any{"handle": []any{ui}}}},
		"all interfaces behind basic_auth starts": {listen: "0.0.0.0:", routes: []any{map[string]any{"handle": []any{basicAuth, ui}}},
			check: func(t *testing.T, port string) {
				if code, _ := get("http://127.0.0.1:"+port+"/workflows", ""); code != http.StatusUnauthorized {
					t.Fatalf("without credentials: %d", code)
				}
				if code, body := get("http://127.0.0.1:"+port+"/workflows", rootAuth); code != 200 || !strings.Contains(body, `id="user">root<`) {
					t.Fatalf("signed in: %d %s", code, body)
				}
			}},
		"basic_auth in an earlier route, UI in a subroute": {listen: "0.0.0.0:", routes: []any{
			map[string]any{"handle": []any{basicAuth}},
			map[string]any{"handle": []any{map[string]any{"handler": "subroute", "routes": []any{map[string]any{"handle": []any{ui}}}}}}}},
		"a subroute without auth refuses": {listen: "0.0.0.0:", refused: true, routes: []any{
			map[string]any{"handle": []any{map[string]any{"handler": "subroute", "routes": []any{map[string]any{"handle": []any{ui}}}}}}}},
		"a trusted identity header starts": {listen: "0.0.0.0:", routes: []any{map[string]any{"handle": []any{
			map[string]any{"handler": "certlocker_ui", "identity_header": "Remote-User", "trusted_proxies": []string{"10.0.0.0/8"}}}}}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			port := freePort()
			cfg := config(c.listen+port, c.routes...)
			if c.caddyfile != "" {
				cfg = fromCaddyfile(t, strings.ReplaceAll(c.caddyfile, "PORT", port), dir)
			}
			err := caddy.Load(cfg, true)
			t.Cleanup(func() { _ = caddy.Stop() })
			if c.refused {
				if err == nil {
					t.Fatal("the config started")
				}
				for _, want := range []string{"certlocker_ui", `server "`, c.listen + port, "not loopback", "basic_auth", "forward_auth"} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("the error does not say %q: %v", want, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.check != nil {
				c.check(t, port)
			}
		})
	}
}

// fromCaddyfile adapts a Caddyfile site and adds the certlocker app (its
// store in dir) and a disabled admin endpoint.
func fromCaddyfile(t *testing.T, site, dir string) []byte {
	t.Helper()
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(site), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["admin"] = map[string]any{"disabled": true, "config": map[string]any{"persist": false}}
	cfg["apps"].(map[string]any)["certlocker"] = map[string]any{"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1"}
	return []byte(mustJSON(cfg))
}
