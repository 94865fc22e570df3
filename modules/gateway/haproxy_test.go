package gateway_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

// haproxy33 replays the ACME exchange of HAProxy 3.3's client: no EAB, the
// per-token directory, an ES384 account key, onlyReturnExisting first, a
// POST {} to the (already valid) challenge of its configured type, integer
// Retry-After when polling.
type haproxy33 struct {
	t     *testing.T
	hc    *http.Client
	key   *ecdsa.PrivateKey
	kid   string
	nonce string
	dir   map[string]any
}

func (h *haproxy33) post(url string, payload any) (*http.Response, []byte) {
	h.t.Helper()
	hdr := map[jose.HeaderKey]any{"nonce": h.nonce, "url": url}
	opts := &jose.SignerOptions{ExtraHeaders: hdr}
	if h.kid == "" {
		opts.EmbedJWK = true
	} else {
		hdr["kid"] = h.kid
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: h.key}, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	var body []byte
	switch p := payload.(type) {
	case nil: // POST-as-GET
	case string:
		body = []byte(p)
	default:
		body, _ = json.Marshal(p)
	}
	jws, err := signer.Sign(body)
	if err != nil {
		h.t.Fatal(err)
	}
	// flattened JSON with an explicit (possibly empty) payload, as
	// HAProxy sends it
	compact, err := jws.CompactSerialize()
	if err != nil {
		h.t.Fatal(err)
	}
	parts := strings.Split(compact, ".")
	flat, _ := json.Marshal(map[string]string{"protected": parts[0], "payload": parts[1], "signature": parts[2]})
	resp, err := h.hc.Post(url, "application/jose+json", bytes.NewReader(flat))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if n := resp.Header.Get("Replay-Nonce"); n != "" {
		h.nonce = n
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if _, err := strconv.Atoi(ra); err != nil {
			h.t.Fatalf("Retry-After %q is not an integer (HAProxy 3.3 reads seconds)", ra)
		}
	}
	return resp, b
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return m
}

// startHAProxy33 reads the per-token directory at path and creates an
// account there the way HAProxy 3.3 does (onlyReturnExisting first).
func startHAProxy33(t *testing.T, e *gwEnv, path string) *haproxy33 {
	t.Helper()
	h := &haproxy33{t: t, hc: e.srv.Client(), key: newKey(t, elliptic.P384())}
	resp, err := h.hc.Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h.dir = decode(t, b)
	nr, err := h.hc.Head(h.dir["newNonce"].(string))
	if err != nil {
		t.Fatal(err)
	}
	nr.Body.Close()
	h.nonce = nr.Header.Get("Replay-Nonce")

	resp, b = h.post(h.dir["newAccount"].(string), map[string]any{"onlyReturnExisting": true})
	if m := decode(t, b); resp.StatusCode != 400 || m["type"] != "urn:ietf:params:acme:error:accountDoesNotExist" {
		t.Fatalf("onlyReturnExisting: %d %s", resp.StatusCode, b)
	}
	resp, b = h.post(h.dir["newAccount"].(string), map[string]any{"termsOfServiceAgreed": true, "contact": []string{"mailto:ops@example.com"}})
	if resp.StatusCode != 201 || resp.Header.Get("Location") == "" {
		t.Fatalf("newAccount: %d %s", resp.StatusCode, b)
	}
	h.kid = resp.Header.Get("Location")
	return h
}

func TestHAProxy33Sequence(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	_, creds := e.token("haproxy.example.test")
	h := startHAProxy33(t, e, creds.DirectoryPath)

	resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "haproxy.example.test"}}})
	order := decode(t, b)
	if resp.StatusCode != 201 {
		t.Fatalf("newOrder: %d %s", resp.StatusCode, b)
	}
	orderURL := resp.Header.Get("Location")
	authzs, _ := order["authorizations"].([]any)
	if len(authzs) != 1 {
		t.Fatalf("order authorizations %v (HAProxy 3.3 crashes on an empty list)", authzs)
	}
	resp, b = h.post(authzs[0].(string), nil)
	az := decode(t, b)
	if resp.StatusCode != 200 {
		t.Fatalf("authorization: %d %s", resp.StatusCode, b)
	}
	var chURL string
	for _, c := range az["challenges"].([]any) {
		ch := c.(map[string]any)
		if ch["type"] == "http-01" {
			chURL = ch["url"].(string)
		}
	}
	if az["status"] != "valid" || chURL == "" {
		t.Fatalf("authorization %s", b)
	}
	// HAProxy 3.3 posts {} to the challenge of its type although it is valid
	resp, b = h.post(chURL, map[string]any{})
	if ch := decode(t, b); resp.StatusCode != 200 || ch["status"] != "valid" {
		t.Fatalf("POST {} to a valid challenge: %d %s", resp.StatusCode, b)
	}
	resp, b = h.post(chURL, nil)
	if ch := decode(t, b); resp.StatusCode != 200 || ch["status"] != "valid" {
		t.Fatalf("POST-as-GET of the challenge: %d %s", resp.StatusCode, b)
	}

	certKey := newKey(t, elliptic.P384())
	csr := csrFor(t, certKey, "haproxy.example.test")
	resp, b = h.post(order["finalize"].(string), map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csr)})
	if resp.StatusCode != 200 {
		t.Fatalf("finalize: %d %s", resp.StatusCode, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	o := decode(t, b)
	for o["status"] != "valid" {
		if time.Now().After(deadline) {
			t.Fatalf("order stays %v", o["status"])
		}
		_, b = h.post(orderURL, nil)
		o = decode(t, b)
	}
	resp, b = h.post(o["certificate"].(string), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("certificate: %d %s", resp.StatusCode, b)
	}
	var chain []*x509.Certificate
	for rest := b; ; {
		der, r := pemDecode(rest)
		if der == nil {
			break
		}
		rest = r
		x, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, x)
	}
	e.checkEdgeCert(chain, certKey, "haproxy.example.test")
}
