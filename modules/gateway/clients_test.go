package gateway_test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

// gatewayCAFile writes the gateway's TLS certificate for the clients to trust.
func (e *gwEnv) gatewayCAFile() string {
	f := filepath.Join(e.t.TempDir(), "gateway-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw})
	if err := os.WriteFile(f, pemBytes, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return f
}

// checkFiles asserts that the client's certificate matches its own key and
// chains to Pebble's root.
func (e *gwEnv) checkFiles(chainFile, keyFile, name string) {
	e.t.Helper()
	chainPEM, err := os.ReadFile(chainFile)
	if err != nil {
		e.t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		e.t.Fatal(err)
	}
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			e.t.Fatal(err)
		}
		chain = append(chain, x)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		e.t.Fatal("no key PEM")
	}
	var key crypto.Signer
	if k, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		key = k.(crypto.Signer)
	} else if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		key = k
	} else {
		e.t.Fatalf("parsing the client's key: %v", err)
	}
	if len(chain) < 2 {
		e.t.Fatalf("the client stored %d certificates; want the full chain", len(chain))
	}
	if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		e.t.Fatal("the certificate does not carry the client's own key")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: e.pebble.RootPool(), Intermediates: inter, DNSName: name}); err != nil {
		e.t.Fatalf("the certificate does not chain to Pebble's root: %v", err)
	}
}

func TestCertbotThroughEAB(t *testing.T) {
	certbot := acmetest.NeedProgram(t, "certbot", "certbot")
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("certbot.example.test")
	dir := t.TempDir()
	env := []string{"REQUESTS_CA_BUNDLE=" + e.gatewayCAFile()}
	common := []string{"--non-interactive", "--config-dir", filepath.Join(dir, "config"), "--work-dir", filepath.Join(dir, "work"),
		"--logs-dir", filepath.Join(dir, "logs"), "--server", e.srv.URL + gateway.DirectoryPath}
	before := e.pebble.NewOrders()
	acmetest.RunProgram(t, env, certbot, append([]string{"certonly", "--agree-tos", "-m", "ops@example.com", "--eab-kid", creds.EABKeyID,
		"--eab-hmac-key", creds.EABHMACKey, "--manual", "--preferred-challenges", "http", "--manual-auth-hook", "true",
		"-d", "certbot.example.test"}, common...)...)
	live := filepath.Join(dir, "config", "live", "certbot.example.test")
	e.checkFiles(filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem"), "certbot.example.test")
	first, _ := os.ReadFile(filepath.Join(live, "cert.pem"))
	// renew: a new key and certificate through the same account
	acmetest.RunProgram(t, env, certbot, append([]string{"renew", "--force-renewal", "--no-random-sleep-on-renew", "--manual-auth-hook", "true"}, common...)...)
	e.checkFiles(filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem"), "certbot.example.test")
	second, _ := os.ReadFile(filepath.Join(live, "cert.pem"))
	if string(first) == string(second) {
		t.Fatal("renew kept the certificate")
	}
	if n := e.pebble.NewOrders() - before; n != 2 {
		t.Fatalf("the upstream CA saw %d orders for two pulls", n)
	}
	// revoke: forwarded upstream, the inventory certificate marked
	acmetest.RunProgram(t, env, certbot, append([]string{"revoke", "--cert-path", filepath.Join(live, "cert.pem"), "--no-delete-after-revoke",
		"--reason", "keycompromise"}, common...)...)
	e.checkRevoked(filepath.Join(live, "cert.pem"))
	e.noSecretsLogged(creds)
}

// checkRevoked asserts the inventory marks the certificate in file revoked.
func (e *gwEnv) checkRevoked(file string) {
	e.t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		e.t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		e.t.Fatal("no certificate PEM")
	}
	x, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.app.Store().Certificates().GetByFingerprint(e.t.Context(), fingerprint(x))
	if err != nil || c.Status != "revoked" {
		e.t.Fatalf("inventory after revoke: %v %+v", err, c)
	}
}

func TestLegoThroughEAB(t *testing.T) {
	lego := acmetest.NeedProgram(t, "lego", "lego")
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("lego.example.test")
	dir := t.TempDir()
	env := []string{"LEGO_CA_CERTIFICATES=" + e.gatewayCAFile()}
	args := func(cmd ...string) []string {
		return append([]string{"--server", e.srv.URL + gateway.DirectoryPath, "--eab", "--kid", creds.EABKeyID, "--hmac", creds.EABHMACKey,
			"--email", "ops@example.com", "--accept-tos", "--path", dir, "--http", "--http.port", "127.0.0.1:0", "--key-type", "ec256",
			"--domains", "lego.example.test"}, cmd...)
	}
	before := e.pebble.NewOrders()
	out := acmetest.RunProgram(t, env, lego, args("run")...)
	certs := filepath.Join(dir, "certificates")
	e.checkFiles(filepath.Join(certs, "lego.example.test.crt"), filepath.Join(certs, "lego.example.test.key"), "lego.example.test")
	first, _ := os.ReadFile(filepath.Join(certs, "lego.example.test.crt"))
	out += acmetest.RunProgram(t, env, lego, args("renew", "--days", "3650", "--no-random-sleep")...)
	e.checkFiles(filepath.Join(certs, "lego.example.test.crt"), filepath.Join(certs, "lego.example.test.key"), "lego.example.test")
	second, _ := os.ReadFile(filepath.Join(certs, "lego.example.test.crt"))
	if string(first) == string(second) {
		t.Fatal("renew kept the certificate")
	}
	if n := e.pebble.NewOrders() - before; n != 2 {
		t.Fatalf("the upstream CA saw %d orders for two pulls", n)
	}
	_ = out
	acmetest.RunProgram(t, env, lego, args("revoke", "--keep")...)
	e.checkRevoked(filepath.Join(certs, "lego.example.test.crt"))
	e.noSecretsLogged(creds)
}
