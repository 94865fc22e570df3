package gateway_test

import (
	"bytes"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"go.step.sm/crypto/jose"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
)

// lookupJWS is a newAccount request looking up the account of a new key
// (onlyReturnExisting), signed with nonce for url: accountDoesNotExist
// when the nonce is good, badNonce when not.
func lookupJWS(t *testing.T, nonce, url string) []byte {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: newKey(t, elliptic.P256())}, &jose.SignerOptions{EmbedJWK: true,
		ExtraHeaders: map[jose.HeaderKey]any{"nonce": nonce, "url": url}})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte(`{"termsOfServiceAgreed":true,"onlyReturnExisting":true}`))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(jws.FullSerialize())
}

// twoNodes serves gateway node A (the env's) and a node B over the same
// store behind one name: a request with header X-Node: b goes to B.
func twoNodes(t *testing.T, e *gwEnv, b *gateway.Gateway) {
	t.Helper()
	a := e.gw
	e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Node") == "b" {
			b.ServeHTTP(w, r)
			return
		}
		a.ServeHTTP(w, r)
	})
}

// A nonce is shared by every node of one database: issued by node A it is
// accepted once on node B, and its replay is refused on either node.
func TestNonceAcrossNodes(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	gwB, err := gateway.New(gateway.Options{Store: e.app.Store(), Engine: e.app.Workflows(), Node: "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	twoNodes(t, e, gwB)
	_, creds := e.token("nonce-ha.example.test")
	dir, err := e.client(creds.DirectoryPath).GetDirectory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	send := func(node, method, url string, body []byte) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/jose+json")
		req.Header.Set("X-Node", node)
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
	resp, _ := send("a", http.MethodHead, dir.NewNonce, nil)
	nonce := resp.Header.Get("Replay-Nonce")
	if _, err := base64.RawURLEncoding.DecodeString(nonce); nonce == "" || err != nil {
		t.Fatalf("node A's nonce %q is not base64url (RFC 8555 6.5.1; certbot refuses it): %v", nonce, err)
	}
	body := lookupJWS(t, nonce, dir.NewAccount)
	if _, m := send("b", http.MethodPost, dir.NewAccount, body); m["type"] != "urn:ietf:params:acme:error:accountDoesNotExist" {
		t.Fatalf("node A's nonce on node B: %v", m)
	}
	for _, node := range []string{"a", "b"} {
		before := e.state()
		resp, m := send(node, http.MethodPost, dir.NewAccount, body)
		if resp.StatusCode != http.StatusBadRequest || m["type"] != "urn:ietf:params:acme:error:badNonce" {
			t.Fatalf("replay on node %s: %d %v", node, resp.StatusCode, m)
		}
		if resp.Header.Get("Replay-Nonce") == "" {
			t.Fatalf("node %s's badNonce carries no fresh nonce", node)
		}
		e.sameState(before)
	}
	// an invented nonce (right shape, never issued) is refused too
	if resp, m := send("b", http.MethodPost, dir.NewAccount, lookupJWS(t, nonce[:len(nonce)-4]+"AAAA", dir.NewAccount)); resp.StatusCode != http.StatusBadRequest ||
		m["type"] != "urn:ietf:params:acme:error:badNonce" {
		t.Fatalf("an invented nonce: %d %v", resp.StatusCode, m)
	}
}

// Two nodes that issue their first nonces at the same moment agree on the
// nonce key (the first to store it wins; the other reads it): each node's
// nonce is accepted by the other.
func TestNonceKeyAgreedAtFirstUse(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	if kvs, _ := e.app.Store().ACME().List(t.Context(), "gateway_keys"); len(kvs) != 0 {
		t.Fatalf("a nonce key exists before any nonce: %d", len(kvs))
	}
	gwB, err := gateway.New(gateway.Options{Store: e.app.Store(), Engine: e.app.Workflows(), Node: "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	twoNodes(t, e, gwB)
	_, creds := e.token("nonce-key.example.test")
	dir, err := e.client(creds.DirectoryPath).GetDirectory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	head := func(node string) string {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodHead, dir.NewNonce, nil)
		req.Header.Set("X-Node", node)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return ""
		}
		resp.Body.Close()
		return resp.Header.Get("Replay-Nonce")
	}
	nonces := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := head(node)
			mu.Lock()
			nonces[node] = n
			mu.Unlock()
		}()
	}
	wg.Wait()
	for from, to := range map[string]string{"a": "b", "b": "a"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, dir.NewAccount, bytes.NewReader(lookupJWS(t, nonces[from], dir.NewAccount)))
		req.Header.Set("Content-Type", "application/jose+json")
		req.Header.Set("X-Node", to)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if m["type"] != "urn:ietf:params:acme:error:accountDoesNotExist" {
			t.Fatalf("node %s's first nonce on node %s: %v", from, to, m)
		}
	}
	if kvs, _ := e.app.Store().ACME().List(t.Context(), "gateway_keys"); len(kvs) != 1 {
		t.Fatalf("%d nonce keys stored, want 1", len(kvs))
	}
}

// A finalize waits for its workflow through the store, not only through
// this node's engine: here node A's engine never runs anything, the
// workflow runs on the app's engine (another node as far as A can tell),
// and A's finalize still answers with the certificate within its wait.
func TestFinalizeWaitsForWorkflowOnAnotherNode(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	idle, err := workflow.New(workflow.Options{Store: e.app.Store(), Node: "node-a-idle"})
	if err != nil {
		t.Fatal(err)
	}
	gwA, err := gateway.New(gateway.Options{Store: e.app.Store(), Engine: idle, Node: "node-a", FinalizeWait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.gw = gwA
	var finalizes atomic.Int32
	e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/finalize") {
			finalizes.Add(1)
		}
		gwA.ServeHTTP(w, r)
	})
	_, creds := e.token("elsewhere.example.test")
	cl := e.client(creds.DirectoryPath)
	acct, err := e.account(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, elliptic.P256())
	chain, err := e.pull(cl, acct, csrFor(t, key, "elsewhere.example.test"), "elsewhere.example.test")
	var p acme.Problem
	if errors.As(err, &p) {
		t.Fatalf("finalize on node A: %d %s (the workflow's end never reached node A)", p.Status, p.Detail)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n := finalizes.Load(); n != 1 {
		t.Fatalf("%d finalize requests: the first outlasted its wait (the workflow's end never reached node A)", n)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		t.Fatal("the certificate is not for the edge's key")
	}
}
