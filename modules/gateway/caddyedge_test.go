package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

// A second Caddy (this module graph, in process) gets its site certificate
// from the gateway with acme_ca + acme_eab, and serves it.
func TestCaddyEdgeThroughEAB(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("caddy.example.test")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "caddy")},
		"apps": map[string]any{
			"http": map[string]any{"servers": map[string]any{"edge": map[string]any{
				"listen":                  []string{addr},
				"routes":                  []any{map[string]any{"handle": []any{map[string]any{"handler": "static_response", "body": "edge"}}}},
				"tls_connection_policies": []any{map[string]any{}},
				"automatic_https":         map[string]any{"disable_redirects": true},
			}}},
			"tls": map[string]any{
				"automation": map[string]any{"policies": []any{map[string]any{
					"subjects": []string{"caddy.example.test"},
					"issuers": []any{map[string]any{"module": "acme", "ca": e.srv.URL + gateway.DirectoryPath,
						"trusted_roots_pem_files": []string{e.gatewayCAFile()}, "email": "ops@example.com",
						"external_account": map[string]any{"key_id": creds.EABKeyID, "mac_key": creds.EABHMACKey}}},
				}}},
				"certificates": map[string]any{"automate": []string{"caddy.example.test"}},
			},
		},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "caddy.example.test", RootCAs: e.pebble.RootPool()})
		if err == nil {
			state := conn.ConnectionState()
			conn.Close()
			chain := state.PeerCertificates
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: e.pebble.RootPool(), Intermediates: inter, DNSName: "caddy.example.test"}); err != nil {
				t.Fatalf("the edge Caddy serves a certificate that does not chain to Pebble: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge Caddy has no certificate after a minute: %v", err)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(200 * time.Millisecond): // polling a real server, bounded by the deadline
		}
	}
	ws, _, _ := e.app.Workflows().List(t.Context(), storageFilterAll(), storagePageAll())
	if len(ws) != 1 || ws[0].Trigger != "gateway" {
		t.Fatalf("workflows %+v", ws)
	}
	e.noSecretsLogged(creds)
}
