package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

func TestBundleDelivery(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	ctx := t.Context()
	w, err := e.app.Workflows().Create(ctx, workflow.Request{IssuerID: e.issuer, Identifiers: []storage.Identifier{{Value: "bundle.example.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for w.State != storage.StateIssued {
		ch, stop := e.app.Workflows().Watch(w.ID)
		if w, err = e.app.Workflows().Get(ctx, w.ID); err != nil || storage.IsTerminal(w.State) && w.State != storage.StateIssued || time.Now().After(deadline) {
			stop()
			t.Fatalf("workflow: %v %s %s", err, w.State, w.Status)
		}
		if w.State != storage.StateIssued {
			select {
			case <-ch:
			case <-time.After(time.Second): // the engine's pace, with a bound
			}
		}
		stop()
	}
	tok, creds, err := e.app.Tokens().Create(ctx, "test", gateway.CreateRequest{CertificateID: w.CertificateID, AllowBundle: true})
	if err != nil {
		t.Fatal(err)
	}
	get := func(srv *httptest.Server, bearer string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+gateway.BundlePathPrefix+tok.ID+"/bundle", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := get(e.srv, creds.EABHMACKey)
	if status != 200 || !strings.Contains(body, "BEGIN CERTIFICATE") || !strings.Contains(body, "PRIVATE KEY") {
		t.Fatalf("bundle: %d %.80s", status, body)
	}
	if status, _ := get(e.srv, "d3Jvbmc"); status != 401 {
		t.Fatalf("wrong bearer: %d", status)
	}
	if status, _ := get(e.srv, ""); status != 401 {
		t.Fatalf("no bearer: %d", status)
	}
	plain := httptest.NewServer(e.gw)
	defer plain.Close()
	if status, body := get(plain, creds.EABHMACKey); status != 403 || strings.Contains(body, "PRIVATE KEY") {
		t.Fatalf("plain HTTP: %d", status)
	}
	off := false
	if _, err := e.app.Tokens().Update(ctx, "test", tok.ID, gateway.UpdateRequest{AllowBundle: &off}); err != nil {
		t.Fatal(err)
	}
	if status, _ := get(e.srv, creds.EABHMACKey); status != 403 {
		t.Fatalf("bundle off: %d", status)
	}
	audit, _, _ := e.app.Store().Audit().List(ctx, storage.AuditFilter{Target: tok.ID}, storage.Page{})
	counts := map[string]int{}
	for _, a := range audit {
		counts[a.Action]++
	}
	if counts["token.bundle"] != 1 || counts["token.bundle_refused"] != 4 {
		t.Fatalf("audit %v", counts)
	}
	e.noSecretsLogged(creds)
}
