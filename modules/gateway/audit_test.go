package gateway_test

import (
	"bytes"
	"crypto/elliptic"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Every token use at the gateway (account bound, order, finalize, and
// every refusal, an unknown key included) is in the audit log with the
// token's group, the edge's source address and the result.
func TestTokenUseAudit(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	ctx := t.Context()
	tok, creds, err := e.app.Tokens().Create(ctx, "test", gateway.CreateRequest{Names: []string{"edge.example.test"},
		IssuerID: e.issuer, Group: "edge-team"})
	if err != nil {
		t.Fatal(err)
	}
	cl := e.client(gateway.DirectoryPath)
	acct, err := e.account(cl, creds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pull(cl, acct, csrFor(t, newKey(t, elliptic.P256()), "edge.example.test"), "edge.example.test"); err != nil {
		t.Fatal(err)
	}
	wrong := *creds
	wrong.EABHMACKey = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	if _, err := e.account(cl, &wrong); problemType(err) != "unauthorized" {
		t.Fatalf("wrong MAC: %v", err)
	}
	unknown := *creds
	unknown.EABKeyID = "ctk_nope"
	if _, err := e.account(cl, &unknown); problemType(err) != "unauthorized" {
		t.Fatalf("unknown key: %v", err)
	}

	entries, _, err := e.app.Store().Audit().List(ctx, storage.AuditFilter{}, storage.Page{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	type want struct{ group, result string }
	wants := map[string]want{ // action and target
		"token.account_bound " + tok.ID: {"edge-team", storage.AuditOK},
		"token.order " + tok.ID:         {"edge-team", storage.AuditOK},
		"token.finalize " + tok.ID:      {"edge-team", storage.AuditOK},
		"token.refused " + tok.ID:       {"edge-team", storage.AuditRefused},
		"token.refused ctk_nope":        {"", storage.AuditRefused},
	}
	seen := map[string]bool{}
	for _, a := range entries {
		w, ok := wants[a.Action+" "+a.Target]
		if !ok {
			continue
		}
		seen[a.Action+" "+a.Target] = true
		if a.Group != w.group || a.Result != w.result || a.Source != "127.0.0.1" || !strings.HasPrefix(a.Actor, "acme@127.0.0.1") {
			t.Errorf("%s: group %q result %q source %q actor %q; want group %q, result %q, source 127.0.0.1",
				a.Action, a.Group, a.Result, a.Source, a.Actor, w.group, w.result)
		}
	}
	for action := range wants {
		if !seen[action] {
			t.Errorf("no %s entry in the audit log", action)
		}
	}
}
