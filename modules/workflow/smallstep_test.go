package workflow_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki/acmeserver" // http.handlers.acme_server
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage" // caddy.storage.file_system

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
)

// newSmallstepEnv is the env around Caddy's own ACME server (acme_server,
// smallstep), run in-process as Caddy runs it: the pki app's local CA
// and an HTTPS server on a loopback port with the acme_server handler,
// validating dns-01 through the harness DNS server. Caddy's config is
// process-wide, so tests using it do not run in parallel.
func newSmallstepEnv(t *testing.T) *env {
	t.Helper()
	dns := acmetest.NewDNSServer(t, zone)
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data")) // acme_server's database
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	storageRoot := filepath.Join(dir, "storage")
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"storage": map[string]any{"module": "file_system", "root": storageRoot},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"http": map[string]any{
				"https_port": port,
				"servers": map[string]any{"acme": map[string]any{
					"listen":          []string{fmt.Sprintf("127.0.0.1:%d", port)},
					"automatic_https": map[string]any{"disable_redirects": true},
					"routes": []any{map[string]any{
						"match": []any{map[string]any{"host": []string{"localhost"}}},
						"handle": []any{map[string]any{"handler": "acme_server", "ca": "local",
							"challenges": []string{"dns-01"}, "resolvers": []string{dns.Addr()}}},
					}},
				}},
			},
		},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		t.Fatalf("starting caddy's acme_server: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	// the root of Caddy's local CA, and a client that trusts it and reaches
	// "localhost" on the loopback port
	var roots *x509.CertPool
	deadline := time.Now().Add(30 * time.Second)
	for {
		pemBytes, err := os.ReadFile(filepath.Join(storageRoot, "pki", "authorities", "local", "root.crt"))
		if err == nil {
			roots = x509.NewCertPool()
			roots.AppendCertsFromPEM(pemBytes)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy's local CA root never appeared: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling for a file Caddy writes, with a deadline
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	directory := fmt.Sprintf("https://localhost:%d/acme/local/directory", port)
	for {
		resp, err := hc.Get(directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy's acme_server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // Caddy gets its own certificate in the background
	}
	return newEnvCA(t, dns, "caddy-acme-server", directory, hc)
}
