package gateway_test

import (
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// The product as an operator runs it: caddy.Load of the certlocker app and
// a site whose handler is certlocker_acme (TLS from Caddy's internal CA);
// an edge pulls through EAB.
func TestHandlerModuleInCaddy(t *testing.T) {
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true})
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv(certlocker.EnvEncryptionKey, "")
	rootsFile := filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(rootsFile, p.WFECertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "caddy")},
		"apps": map[string]any{
			"certlocker": map[string]any{"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
				"issuers": []any{map[string]any{"name": "pebble", "directory_url": p.DirectoryURL(), "agree_terms": true,
					"trusted_roots_pem_files": []string{rootsFile}}}},
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"tls": map[string]any{
				"automation":   map[string]any{"policies": []any{map[string]any{"subjects": []string{"127.0.0.1"}, "issuers": []any{map[string]any{"module": "internal"}}}}},
				"certificates": map[string]any{"automate": []string{"127.0.0.1"}},
			},
			"http": map[string]any{"servers": map[string]any{"gw": map[string]any{
				"listen":                  []string{addr},
				"tls_connection_policies": []any{map[string]any{}},
				"automatic_https":         map[string]any{"disable_redirects": true},
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "certlocker_acme", "finalize_wait": "10s"},
					map[string]any{"handler": "static_response", "status_code": 404},
				}}},
			}}},
		},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	v, err := caddy.ActiveContext().App("certlocker")
	if err != nil {
		t.Fatal(err)
	}
	app := v.(*certlocker.App)
	iss, err := app.IssuerRegistry().List(t.Context(), storage.IssuerFilter{})
	if err != nil || len(iss) != 1 {
		t.Fatalf("issuers %v %d", err, len(iss))
	}
	_, creds, err := app.Tokens().Create(t.Context(), "test", gateway.CreateRequest{Names: []string{"mod.example.test"}, IssuerID: iss[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	// Caddy's internal CA root, once it has issued the site certificate
	rootFile := filepath.Join(dir, "caddy", "pki", "authorities", "local", "root.crt")
	pool := x509.NewCertPool()
	deadline := time.Now().Add(time.Minute)
	for {
		if b, err := os.ReadFile(rootFile); err == nil && pool.AppendCertsFromPEM(b) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
			if err == nil {
				conn.Close()
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway site has no certificate after a minute")
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(100 * time.Millisecond): // polling a real server, bounded by the deadline
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	cl := &acme.Client{Directory: "https://" + addr + gateway.DirectoryPath, HTTPClient: hc, PollInterval: 20 * time.Millisecond}
	acct := acme.Account{TermsOfServiceAgreed: true, PrivateKey: newKey(t, elliptic.P256())}
	if err := acct.SetExternalAccountBinding(t.Context(), cl, acme.EAB{KeyID: creds.EABKeyID, MACKey: creds.EABHMACKey}); err != nil {
		t.Fatal(err)
	}
	if acct, err = cl.NewAccount(t.Context(), acct); err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	chain, err := pullWith(t, cl, acct, csrFor(t, key, "mod.example.test"), "mod.example.test")
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		t.Fatal("the edge certificate does not carry the edge's key")
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: p.RootPool(), Intermediates: inter, DNSName: "mod.example.test"}); err != nil {
		t.Fatal(err)
	}
}
