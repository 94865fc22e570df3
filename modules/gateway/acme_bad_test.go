package gateway_test

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// state counts what the gateway stored: ACME accounts, orders,
// authorizations, challenges, and workflows.
func (e *gwEnv) state() map[string]int {
	out := map[string]int{}
	for _, b := range []string{"acme_accounts", "acme_orders", "acme_authzs", "acme_challenges"} {
		kvs, err := e.app.Store().ACME().List(e.t.Context(), b)
		if err != nil {
			e.t.Fatal(err)
		}
		out[b] = len(kvs)
	}
	ws, _, err := e.app.Workflows().List(e.t.Context(), storage.WorkflowFilter{}, storage.Page{})
	if err != nil {
		e.t.Fatal(err)
	}
	out["workflows"] = len(ws)
	return out
}

func (e *gwEnv) sameState(before map[string]int) {
	e.t.Helper()
	after := e.state()
	for k, v := range before {
		if after[k] != v {
			e.t.Fatalf("refused request left state behind: %s %d -> %d", k, v, after[k])
		}
	}
}

func TestBadInput(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	e := newGWEnv(t, gateway.Options{Clock: clock, MaxBodyBytes: 16 << 10})
	ctx := t.Context()
	_, creds := e.token("edge.example.test", "www.example.test")
	eabCl := e.client(gateway.DirectoryPath)

	t.Run("wrong MAC", func(t *testing.T) {
		before := e.state()
		wrong := *creds
		wrong.EABHMACKey = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
		_, err := e.account(eabCl, &wrong)
		if problemType(err) != "unauthorized" {
			t.Fatalf("got %v", err)
		}
		e.sameState(before)
	})
	t.Run("unknown key ID", func(t *testing.T) {
		before := e.state()
		unknown := *creds
		unknown.EABKeyID = "ctk_nope"
		if _, err := e.account(eabCl, &unknown); problemType(err) != "unauthorized" {
			t.Fatalf("got %v", err)
		}
		e.sameState(before)
	})
	t.Run("no EAB", func(t *testing.T) {
		before := e.state()
		if _, err := e.account(eabCl, nil); problemType(err) != "externalAccountRequired" {
			t.Fatalf("got %v", err)
		}
		e.sameState(before)
	})

	acct, err := e.account(eabCl, creds)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())

	t.Run("name outside scope in the order", func(t *testing.T) {
		before := e.state()
		for _, names := range [][]string{{"evil.example.test"}, {"edge.example.test", "evil.example.test"}, {"EDGE.example.test.", "a.www.example.test"}} {
			var ids []acme.Identifier
			for _, n := range names {
				ids = append(ids, acme.Identifier{Type: "dns", Value: n})
			}
			if _, err := eabCl.NewOrder(ctx, acct, acme.Order{Identifiers: ids}); problemType(err) != "rejectedIdentifier" {
				t.Fatalf("%v: got %v", names, err)
			}
		}
		e.sameState(before)
	})
	t.Run("name outside scope only in the CSR", func(t *testing.T) {
		order, err := eabCl.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "edge.example.test"}}})
		if err != nil {
			t.Fatal(err)
		}
		before := e.state()
		csr := csrFor(t, key, "edge.example.test", "evil.example.test")
		if _, err := eabCl.FinalizeOrder(ctx, acct, order, csr); problemType(err) != "rejectedIdentifier" {
			t.Fatalf("got %v", err)
		}
		e.sameState(before)
	})
	t.Run("weak CSR key", func(t *testing.T) {
		order, err := eabCl.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "edge.example.test"}}})
		if err != nil {
			t.Fatal(err)
		}
		before := e.state()
		csr := csrFor(t, newKey(t, elliptic.P521()), "edge.example.test")
		if _, err := eabCl.FinalizeOrder(ctx, acct, order, csr); problemType(err) != "badCSR" {
			t.Fatalf("got %v", err)
		}
		e.sameState(before)
	})

	// raw requests: malformed JWS, oversized body, replayed nonce
	post := func(url string, body []byte) (*http.Response, map[string]any) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/jose+json")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp, m
	}
	tokCl := e.client(creds.DirectoryPath)
	dir, err := tokCl.GetDirectory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nonce := func() string {
		resp, err := e.srv.Client().Head(dir.NewNonce)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Replay-Nonce")
	}
	t.Run("malformed JWS", func(t *testing.T) {
		before := e.state()
		for _, body := range []string{"not a jws", `{"protected":"!!","payload":"","signature":""}`, "{\"protected\":"} {
			resp, m := post(dir.NewAccount, []byte(body))
			if resp.StatusCode != 400 || m["type"] != "urn:ietf:params:acme:error:malformed" {
				t.Fatalf("%q: %d %v", body, resp.StatusCode, m)
			}
		}
		e.sameState(before)
	})
	t.Run("oversized body", func(t *testing.T) {
		before := e.state()
		resp, m := post(dir.NewAccount, bytes.Repeat([]byte("a"), 17<<10))
		if resp.StatusCode != http.StatusRequestEntityTooLarge || m["type"] != "urn:ietf:params:acme:error:malformed" {
			t.Fatalf("%d %v", resp.StatusCode, m)
		}
		e.sameState(before)
	})
	t.Run("replayed nonce", func(t *testing.T) {
		body := lookupJWS(t, nonce(), dir.NewAccount)
		resp, m := post(dir.NewAccount, body) // first use: the nonce is fine
		if m["type"] != "urn:ietf:params:acme:error:accountDoesNotExist" {
			t.Fatalf("first use: %d %v", resp.StatusCode, m)
		}
		before := e.state()
		resp, m = post(dir.NewAccount, body)
		if resp.StatusCode != 400 || m["type"] != "urn:ietf:params:acme:error:badNonce" {
			t.Fatalf("replay: %d %v", resp.StatusCode, m)
		}
		e.sameState(before)
	})

	t.Run("third account over the limit", func(t *testing.T) {
		if _, err := e.account(tokCl, nil); err != nil { // second, through the token URL
			t.Fatal(err)
		}
		before := e.state()
		if _, err := e.account(eabCl, creds); problemType(err) != "unauthorized" {
			t.Fatalf("got %v", err)
		}
		if _, err := e.account(tokCl, nil); problemType(err) != "unauthorized" {
			t.Fatalf("got %v", err)
		}
		e.sameState(before)
	})

	t.Run("expired token", func(t *testing.T) {
		exp := time.Now().Add(time.Hour)
		tok, c2, err := e.app.Tokens().Create(ctx, "test", gateway.CreateRequest{Names: []string{"exp.example.test"}, IssuerID: e.issuer, ExpiresAt: &exp})
		if err != nil {
			t.Fatal(err)
		}
		a2, err := e.account(eabCl, c2)
		if err != nil {
			t.Fatal(err)
		}
		offset.Store(int64(2 * time.Hour))
		defer offset.Store(0)
		before := e.state()
		if _, err := e.account(eabCl, c2); problemType(err) != "unauthorized" {
			t.Fatalf("new account: %v", err)
		}
		if _, err := eabCl.NewOrder(ctx, a2, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "exp.example.test"}}}); problemType(err) != "unauthorized" {
			t.Fatalf("order: %v", err)
		}
		if _, err := e.client(c2.DirectoryPath).GetDirectory(ctx); err == nil {
			t.Fatal("an expired token's directory answers")
		}
		e.sameState(before)
		_ = tok
	})

	t.Run("revoked token", func(t *testing.T) {
		tok, c3, err := e.app.Tokens().Create(ctx, "test", gateway.CreateRequest{Names: []string{"rev.example.test"}, IssuerID: e.issuer})
		if err != nil {
			t.Fatal(err)
		}
		a3, err := e.account(eabCl, c3)
		if err != nil {
			t.Fatal(err)
		}
		order, err := eabCl.NewOrder(ctx, a3, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "rev.example.test"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.app.Tokens().Revoke(ctx, "test", tok.ID); err != nil {
			t.Fatal(err)
		}
		before := e.state()
		if _, err := e.account(eabCl, c3); problemType(err) != "unauthorized" {
			t.Fatalf("new account: %v", err)
		}
		if _, err := eabCl.NewOrder(ctx, a3, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "rev.example.test"}}}); problemType(err) != "unauthorized" {
			t.Fatalf("order: %v", err)
		}
		csr := csrFor(t, key, "rev.example.test")
		if _, err := eabCl.FinalizeOrder(ctx, a3, order, csr); problemType(err) != "unauthorized" {
			t.Fatalf("finalize: %v", err)
		}
		e.sameState(before)
	})
	e.noSecretsLogged(creds)
}

func parseLeaf(t *testing.T, chainPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pemDecode(chainPEM)
	x, err := x509.ParseCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	return x
}
