package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

// Real clients against an order the gateway answers in status processing
// (RFC 8555 §7.4): the upstream CA is held from attaching the certificate
// (Pebble's HoldIssuance) past the gateway's finalize wait, so the
// finalize answers processing; the client must poll the order until it is
// valid and then download the certificate, and the upstream CA sees one
// order for the pull.

// tapWriter passes a response through and keeps a copy of its body.
type tapWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *tapWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *tapWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// watchedServer serves the env's gateway on a second TLS server (the
// gateway keeps no state per node, so it answers the same) that reports
// every order object it answers, to a finalize or an order POST-as-GET,
// on the returned channel: what the real client was told, seen from the
// server side.
func (e *gwEnv) watchedServer() (*httptest.Server, <-chan seen) {
	ch := make(chan seen, 1000)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &tapWriter{ResponseWriter: w}
		e.gw.ServeHTTP(tw, r)
		if !strings.Contains(r.URL.Path, "/order/") {
			return
		}
		var o struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(tw.body.Bytes(), &o) == nil && o.Status != "" {
			kind := "order"
			if strings.HasSuffix(r.URL.Path, "/finalize") {
				kind = "finalize"
			}
			ch <- seen{kind, o.Status, tw.Header().Get("Retry-After")}
		}
	}))
	e.t.Cleanup(srv.Close)
	return srv, ch
}

// caFile writes srv's TLS certificate for the clients to trust.
func caFile(t *testing.T, srv *httptest.Server) string {
	f := filepath.Join(t.TempDir(), "gateway-ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

type runResult struct {
	out string
	err error
}

// runAsync runs a client in the background; the test must receive from
// the returned channel before it ends.
func runAsync(t *testing.T, env []string, name string, args ...string) <-chan runResult {
	done := make(chan runResult, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	go func() {
		defer cancel()
		out, err := cmd.CombinedOutput()
		done <- runResult{string(out), err}
	}()
	return done
}

// awaitWhile is await that fails at once, with the client's output, if the
// client ends first.
func awaitWhile(t *testing.T, ch <-chan seen, want seen, done <-chan runResult, client string) seen {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case s := <-ch:
			if s.path == want.path && s.status == want.status {
				return s
			}
		case res := <-done:
			t.Fatalf("%s ended (%v) before the gateway answered a %s with status %s:\n%s", client, res.err, want.path, want.status, res.out)
		case <-deadline:
			t.Fatalf("the gateway never answered %s's %s with status %s", client, want.path, want.status)
		}
	}
}

// processingPull runs one pull by a real client while the upstream CA
// holds issuance: it waits until the gateway has answered the finalize
// with processing (with an integer Retry-After) and the client has polled
// the order while processing, releases the upstream CA, and returns once
// the client has succeeded and was answered the order valid. It asserts
// the upstream CA saw one order for the pull.
func (e *gwEnv) processingPull(t *testing.T, client string, orders <-chan seen, start func() <-chan runResult) string {
	t.Helper()
	before := e.pebble.NewOrders()
	release := e.pebble.HoldIssuance()
	defer release()
	done := start()
	if s := awaitWhile(t, orders, seen{path: "finalize", status: "processing"}, done, client); s.retry != "1" {
		t.Fatalf("processing finalize: Retry-After %q, want 1", s.retry)
	}
	// the client polls: it is told processing at least twice before the
	// certificate is there
	awaitWhile(t, orders, seen{path: "order", status: "processing"}, done, client)
	awaitWhile(t, orders, seen{path: "order", status: "processing"}, done, client)
	release()
	var res runResult
	select {
	case res = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("%s never finished", client)
	}
	if res.err != nil {
		t.Fatalf("%s: %v\n%s", client, res.err, res.out)
	}
	await(t, orders, seen{path: "order", status: "valid"})
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull by %s", n, client)
	}
	return res.out
}

// certbot 2.1 (Debian's) posts the finalize, ignores its answer unless it
// is an error, and polls the order once a second (it reads no
// Retry-After there) until it is valid or invalid, or its issuance
// timeout (90 s from the finalize) passes.
func TestCertbotProcessingOrder(t *testing.T) {
	certbot := acmetest.NeedProgram(t, "certbot", "certbot")
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	_, creds := e.token("certbot-slow.example.test")
	srv, orders := e.watchedServer()
	dir := t.TempDir()
	env := []string{"REQUESTS_CA_BUNDLE=" + caFile(t, srv)}
	e.processingPull(t, "certbot", orders, func() <-chan runResult {
		return runAsync(t, env, certbot, "certonly", "--non-interactive", "--config-dir", filepath.Join(dir, "config"),
			"--work-dir", filepath.Join(dir, "work"), "--logs-dir", filepath.Join(dir, "logs"),
			"--server", srv.URL+gateway.DirectoryPath, "--agree-tos", "-m", "ops@example.com",
			"--eab-kid", creds.EABKeyID, "--eab-hmac-key", creds.EABHMACKey, "--manual", "--preferred-challenges", "http",
			"--manual-auth-hook", "true", "-d", "certbot-slow.example.test")
	})
	live := filepath.Join(dir, "config", "live", "certbot-slow.example.test")
	e.checkFiles(filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem"), "certbot-slow.example.test")
	e.noSecretsLogged(creds)
}

// lego 4.9 (Debian's) takes the finalize's answer, and unless it is valid
// polls the order every cert.timeout/60 (0.5 s) for cert.timeout (30 s by
// default) after it, reading no Retry-After, until it is valid.
func TestLegoProcessingOrder(t *testing.T) {
	lego := acmetest.NeedProgram(t, "lego", "lego")
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	_, creds := e.token("lego-slow.example.test")
	srv, orders := e.watchedServer()
	dir := t.TempDir()
	env := []string{"LEGO_CA_CERTIFICATES=" + caFile(t, srv)}
	e.processingPull(t, "lego", orders, func() <-chan runResult {
		return runAsync(t, env, lego, "--server", srv.URL+gateway.DirectoryPath, "--eab", "--kid", creds.EABKeyID,
			"--hmac", creds.EABHMACKey, "--email", "ops@example.com", "--accept-tos", "--path", dir, "--http",
			"--http.port", "127.0.0.1:0", "--key-type", "ec256", "--domains", "lego-slow.example.test", "run")
	})
	certs := filepath.Join(dir, "certificates")
	e.checkFiles(filepath.Join(certs, "lego-slow.example.test.crt"), filepath.Join(certs, "lego-slow.example.test.key"),
		"lego-slow.example.test")
	e.noSecretsLogged(creds)
}
