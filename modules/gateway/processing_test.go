package gateway_test

import (
	"bytes"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// seen is what a watching transport saw of the gateway's order answers.
type seen struct {
	path   string // "finalize" or "order"
	status string // the order's status
	retry  string // Retry-After
}

// watchOrders wraps the env's HTTP client so that every order object the
// gateway answers (to a finalize or an order POST-as-GET) is reported on
// the returned channel.
func watchOrders(t *testing.T, e *gwEnv) (*http.Client, <-chan seen) {
	ch := make(chan seen, 1000)
	base := e.srv.Client()
	hc := *base
	hc.Transport = roundTripper(func(r *http.Request) (*http.Response, error) {
		resp, err := base.Transport.RoundTrip(r)
		if err != nil || !strings.Contains(r.URL.Path, "/order/") {
			return resp, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		var o struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(b, &o) == nil && o.Status != "" {
			kind := "order"
			if strings.HasSuffix(r.URL.Path, "/finalize") {
				kind = "finalize"
			}
			ch <- seen{kind, o.Status, resp.Header.Get("Retry-After")}
		}
		return resp, nil
	})
	return &hc, ch
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// await returns the first report matching want, failing after 30 s.
func await(t *testing.T, ch <-chan seen, want seen) seen {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case s := <-ch:
			if s.path == want.path && s.status == want.status {
				return s
			}
		case <-deadline:
			t.Fatalf("the gateway never answered a %s with status %s", want.path, want.status)
		}
	}
}

// A finalize that outlasts the wait answers the order in status processing
// (RFC 8555 §7.4) with Retry-After, while the workflow carries on; the
// order reports processing until the workflow is done and valid with the
// certificate after. acmez polls such an order to the end; the upstream
// CA saw one order.
func TestFinalizeProcessing(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	_, creds := e.token("slow.example.test")
	cl := e.client(creds.DirectoryPath)
	hc, orders := watchOrders(t, e)
	cl.HTTPClient = hc
	acct, err := e.account(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	order, err := cl.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "slow.example.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	before := e.pebble.NewOrders()
	release := e.pebble.HoldIssuance()
	defer release()
	type result struct {
		o   acme.Order
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := cl.FinalizeOrder(ctx, acct, order, csrFor(t, key, "slow.example.test"))
		done <- result{o, err}
	}()
	if s := await(t, orders, seen{path: "finalize", status: "processing"}); s.retry != "1" {
		t.Fatalf("processing finalize: Retry-After %q, want 1", s.retry)
	}
	await(t, orders, seen{path: "order", status: "processing"})
	release()
	var res result
	select {
	case res = <-done:
	case <-time.After(time.Minute):
		t.Fatal("acmez never saw the order valid")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.o.Status != "valid" || res.o.Certificate == "" {
		t.Fatalf("order %s, certificate %q", res.o.Status, res.o.Certificate)
	}
	chains, err := cl.GetCertificateChain(ctx, acct, res.o.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(parseLeaf(t, chains[0].ChainPEM).PublicKey) {
		t.Fatal("wrong key")
	}
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull", n)
	}
}

// HAProxy 3.3's way with a processing order: it polls the order with the
// integer Retry-After. A retried finalize with the same CSR waits for the
// same workflow (no second upstream order); one with another CSR is
// orderNotReady; the order then turns valid with the certificate.
func TestHAProxy33Processing(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	_, creds := e.token("hap-slow.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)
	resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "hap-slow.example.test"}}})
	if resp.StatusCode != 201 {
		t.Fatalf("newOrder: %d %s", resp.StatusCode, b)
	}
	orderURL := resp.Header.Get("Location")
	finalizeURL := decode(t, b)["finalize"].(string)
	certKey := newKey(t, elliptic.P384())
	csr := base64.RawURLEncoding.EncodeToString(csrFor(t, certKey, "hap-slow.example.test"))
	before := e.pebble.NewOrders()
	release := e.pebble.HoldIssuance()
	defer release()
	for i := range 2 { // the first finalize, and a retry with the same CSR
		resp, b = h.post(finalizeURL, map[string]string{"csr": csr})
		o := decode(t, b)
		if resp.StatusCode != 200 || o["status"] != "processing" || resp.Header.Get("Retry-After") != "1" ||
			resp.Header.Get("Location") != orderURL {
			t.Fatalf("finalize %d: %d %v %s", i+1, resp.StatusCode, resp.Header, b)
		}
	}
	resp, b = h.post(orderURL, nil)
	if o := decode(t, b); resp.StatusCode != 200 || o["status"] != "processing" || o["certificate"] != nil {
		t.Fatalf("order while processing: %d %s", resp.StatusCode, b)
	}
	other := base64.RawURLEncoding.EncodeToString(csrFor(t, newKey(t, elliptic.P384()), "hap-slow.example.test"))
	resp, b = h.post(finalizeURL, map[string]string{"csr": other})
	if p := decode(t, b); resp.StatusCode != 403 || p["type"] != "urn:ietf:params:acme:error:orderNotReady" {
		t.Fatalf("finalize with another CSR while processing: %d %s", resp.StatusCode, b)
	}
	release()
	o := h.pollValid(orderURL)
	resp, b = h.post(o["certificate"].(string), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("certificate: %d %s", resp.StatusCode, b)
	}
	if !certKey.PublicKey.Equal(parseLeaf(t, b).PublicKey) {
		t.Fatal("wrong key")
	}
	if n := e.pebble.NewOrders() - before; n != 1 {
		t.Fatalf("the upstream CA saw %d orders for one pull finalized twice", n)
	}
	ws, _, err := e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	if err != nil || len(ws) != 1 {
		t.Fatalf("workflows: %v %d, want one", err, len(ws))
	}
}

// A workflow that ends without a certificate turns its processing order
// invalid, with the reason; a new order with the same CSR then starts a new
// workflow.
func TestProcessingOrderFails(t *testing.T) {
	e := newGWEnv(t, gateway.Options{FinalizeWait: 300 * time.Millisecond, RetryAfter: time.Second})
	_, creds := e.token("fail.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)
	resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "fail.example.test"}}})
	if resp.StatusCode != 201 {
		t.Fatalf("newOrder: %d %s", resp.StatusCode, b)
	}
	orderURL := resp.Header.Get("Location")
	release := e.pebble.HoldIssuance()
	defer release()
	csr := base64.RawURLEncoding.EncodeToString(csrFor(t, newKey(t, elliptic.P256()), "fail.example.test"))
	resp, b = h.post(decode(t, b)["finalize"].(string), map[string]string{"csr": csr})
	if resp.StatusCode != 200 || decode(t, b)["status"] != "processing" {
		t.Fatalf("finalize: %d %s", resp.StatusCode, b)
	}
	ws, _, err := e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
	if err != nil || len(ws) != 1 {
		t.Fatalf("workflows: %v %d", err, len(ws))
	}
	if _, err := e.app.Workflows().Cancel(t.Context(), ws[0].ID, "test"); err != nil {
		t.Fatal(err)
	}
	resp, b = h.post(orderURL, nil)
	o := decode(t, b)
	oerr, _ := o["error"].(map[string]any)
	if resp.StatusCode != 200 || o["status"] != "invalid" || oerr == nil || !strings.Contains(oerr["detail"].(string), ws[0].ID) {
		t.Fatalf("order after the workflow was cancelled: %d %s", resp.StatusCode, b)
	}
	// a new order with the same CSR (same key) is a new attempt, not the
	// old failure again
	release()
	resp, b = h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "fail.example.test"}}})
	if resp.StatusCode != 201 {
		t.Fatalf("second newOrder: %d %s", resp.StatusCode, b)
	}
	orderURL = resp.Header.Get("Location")
	resp, b = h.post(decode(t, b)["finalize"].(string), map[string]string{"csr": csr})
	if o := decode(t, b); resp.StatusCode != 200 || (o["status"] != "valid" && o["status"] != "processing") {
		t.Fatalf("finalize of a new order with the failed pull's CSR: %d %s", resp.StatusCode, b)
	}
	h.pollValid(orderURL)
	if ws, _, err = e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{}); err != nil || len(ws) != 2 {
		t.Fatalf("workflows: %v %d, want the cancelled one and a new one", err, len(ws))
	}
}

// pollValid polls an order while it is processing (each answer with an
// integer Retry-After) and returns it once valid.
func (h *haproxy33) pollValid(orderURL string) map[string]any {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, b := h.post(orderURL, nil)
		o := decode(h.t, b)
		if o["status"] == "valid" {
			return o
		}
		if resp.StatusCode != 200 || o["status"] != "processing" || time.Now().After(deadline) {
			h.t.Fatalf("order: %d %s", resp.StatusCode, b)
		}
		if _, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil {
			h.t.Fatalf("processing order without an integer Retry-After: %v", resp.Header)
		}
	}
}
