package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/internal/e2e"
	"github.com/certlocker/caddy-certlocker/modules/notify"
)

// The operator's path end to end, through the real binary: an ACME client
// for a private CA (in-process Pebble, its own root), a workflow with
// http-01 answered by the binary's certlocker_challenge handler, the live
// timeline over Server-Sent Events, and the certificate in the inventory.
func TestWorkflowThroughTheBinary(t *testing.T) {
	dns := acmetest.NewDNSServer(t, "example.test")
	httpAddr := e2e.FreeAddr(t)
	_, portStr, _ := net.SplitHostPort(httpAddr)
	port, _ := strconv.Atoi(portStr)
	pebble := acmetest.NewPebble(t, acmetest.PebbleOptions{DNSServer: dns.Addr(), HTTPPort: port})
	dns.SetAddrs("www.example.test", netip.MustParseAddr("127.0.0.1"))

	// a webhook receiver for the notifier
	hooks := make(chan hook, 64)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks <- hook{body: b, sig: r.Header.Get("X-CertLocker-Signature")}
	}))
	defer receiver.Close()

	n := e2e.NewNode(t, t.TempDir())
	n.Env = []string{"HOOK_SECRET=e2e-hook-secret"}
	cfg := fmt.Sprintf(`{"admin":{"listen":%q},
		"apps":{"certlocker":{"workflow":{"scan_interval":"1s"},
			"notifiers":[{"notifier":"webhook","url":%q,"secret":"{env.HOOK_SECRET}","events":["certlocker.cert_issued"]}]},
		"http":{"servers":{"challenges":{"listen":[%q],"automatic_https":{"disable":true},
			"routes":[{"handle":[{"handler":"certlocker_challenge"},{"handler":"static_response","status_code":404}]}]}}}}}`,
		n.Admin, receiver.URL, httpAddr)
	if err := n.Start(cfg); err != nil {
		t.Fatal(err)
	}

	var iss struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	code, body := n.Do("POST", "/certlocker/issuers", map[string]any{"name": "pebble", "catalog_id": "custom",
		"directory_url": pebble.DirectoryURL(), "custom_roots_pem": string(pebble.WFECertPEM()),
		"contacts": []string{"mailto:ops@example.test"}, "agree_terms": true}, &iss)
	if code != http.StatusCreated || iss.ID == "" {
		t.Fatalf("creating the ACME client: %d %s", code, body)
	}

	var wf struct {
		ID            string `json:"id"`
		State         string `json:"state"`
		Status        string `json:"status"`
		CertificateID string `json:"certificate_id"`
		Timeline      []struct {
			State, Step, Message, Node string
		} `json:"timeline"`
	}
	code, body = n.Do("POST", "/certlocker/workflows", map[string]any{"issuer_id": iss.ID,
		"identifiers": []map[string]string{{"value": "www.example.test", "challenge": "http-01"}}}, &wf)
	if code != http.StatusCreated || wf.State != "pending" {
		t.Fatalf("creating the workflow: %d %s", code, body)
	}

	// follow the live timeline until the stream ends
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.Admin+"/certlocker/workflows/"+wf.ID+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events content type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
			if ev == "end" {
				break
			}
		}
	}
	if len(events) == 0 || events[len(events)-1] != "end" {
		t.Fatalf("the event stream did not end: %v (%v)\n%s", events, sc.Err(), n.Logs())
	}
	for _, want := range []string{"state.ordering", "state.authorizing", "state.finalizing", "state.issued"} {
		found := false
		for _, ev := range events {
			found = found || ev == want
		}
		if !found {
			t.Errorf("no %s event in the stream: %v", want, events)
		}
	}

	code, body = n.Do("GET", "/certlocker/workflows/"+wf.ID, nil, &wf)
	if code != 200 || wf.State != "issued" || wf.CertificateID == "" || len(wf.Timeline) < 8 {
		t.Fatalf("workflow after the stream: %d %s", code, body)
	}
	var cert struct {
		ID       string   `json:"id"`
		Names    []string `json:"names"`
		IssuerID string   `json:"issuer_id"`
		NotAfter string   `json:"not_after"`
		KeyType  string   `json:"key_type"`
		Rating   any      `json:"rating"`
	}
	code, body = n.Do("GET", "/certlocker/certificates/"+wf.CertificateID, nil, &cert)
	if code != 200 || cert.IssuerID != iss.ID || len(cert.Names) != 1 || cert.Names[0] != "www.example.test" {
		t.Fatalf("certificate: %d %s", code, body)
	}
	if strings.Contains(string(body), "PRIVATE KEY") {
		t.Fatal("the certificate view shows the private key")
	}
	// workflow views never show the key either, nor does the config
	for _, path := range []string{"/certlocker/workflows/" + wf.ID, "/certlocker/workflows", "/config/"} {
		if _, b := n.Do("GET", path, nil, nil); strings.Contains(string(b), "PRIVATE KEY") {
			t.Fatalf("%s shows a private key", path)
		}
	}

	// bad requests are refused with the field at fault, nothing stored
	bad := map[string]struct {
		body  any
		field string
	}{
		"unknown issuer":     {map[string]any{"issuer_id": "iss_nope", "identifiers": []map[string]string{{"value": "a.example.test"}}}, "issuer_id"},
		"wildcard over http": {map[string]any{"issuer_id": iss.ID, "identifiers": []map[string]string{{"value": "*.example.test", "challenge": "http-01"}}}, "identifiers[0].challenge"},
		"no identifiers":     {map[string]any{"issuer_id": iss.ID}, "identifiers"},
		"unknown field":      {map[string]any{"issuer_id": iss.ID, "names": []string{"x"}}, "names"},
	}
	for name, c := range bad {
		var e struct{ Error, Field string }
		if code, b := n.Do("POST", "/certlocker/workflows", c.body, &e); code != 400 || e.Field != c.field {
			t.Errorf("%s: %d %s, want 400 on %s", name, code, b, c.field)
		}
	}
	var list struct{ Items []any }
	n.Do("GET", "/certlocker/workflows", nil, &list)
	if len(list.Items) != 1 {
		t.Fatalf("%d workflows stored, want 1", len(list.Items))
	}
	if code, _ := n.Do("POST", "/certlocker/workflows/"+wf.ID+"/actions/cancel", nil, nil); code != http.StatusConflict {
		t.Fatalf("cancelling an issued workflow: %d, want 409", code)
	}

	// the notifier posted the issued certificate, signed
	select {
	case h := <-hooks:
		var ev struct {
			Event string         `json:"event"`
			Data  map[string]any `json:"data"`
		}
		if err := json.Unmarshal(h.body, &ev); err != nil || ev.Event != "certlocker.cert_issued" || ev.Data["certificate_id"] != wf.CertificateID {
			t.Fatalf("webhook body %s: %v", h.body, err)
		}
		if h.sig != notify.Sign([]byte("e2e-hook-secret"), h.body) {
			t.Fatalf("webhook signature %q does not match", h.sig)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook for the issued certificate")
	}
	// the engine's metrics are in Caddy's registry
	_, metrics := n.Do("GET", "/metrics", nil, nil)
	for _, want := range []string{`certlocker_workflows{state="issued"} 1`, "certlocker_workflow_order_to_issued_seconds_count"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("GET /metrics lacks %s", want)
		}
	}
}

type hook struct {
	body []byte
	sig  string
}
