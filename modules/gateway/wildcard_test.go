package gateway_test

import (
	"slices"
	"testing"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Challenges offered per authorization, pinned: RFC 8555 §7.1.4 forbids
// http-01 for a wildcard identifier ("must not" be offered; §8.3 has no
// way to serve it), so a wildcard's authorization carries dns-01 only; a
// plain name (also one pulled under a wildcard entry) carries http-01 and
// dns-01. Every authorization has at least one challenge, and every
// challenge answers both POST {} and POST-as-GET with valid.
func TestAuthorizationChallenges(t *testing.T) {
	e := newGWEnv(t, gateway.Options{})
	dp := &storage.DNSProvider{Name: "cf", Type: "cloudflare"}
	if err := e.app.Store().DNSProviders().Create(t.Context(), dp); err != nil {
		t.Fatal(err)
	}
	_, creds, err := e.app.Tokens().Create(t.Context(), "test", gateway.CreateRequest{
		Names: []string{"*.wild.example.test", "plain.example.test"}, IssuerID: e.issuer,
		Challenges: map[string]gateway.ChallengeSetting{"*.wild.example.test": {Challenge: "dns-01", DNSProviderID: dp.ID}}})
	if err != nil {
		t.Fatal(err)
	}
	h := startHAProxy33(t, e, creds.DirectoryPath)
	want := map[string][]string{ // identifier value (and wildcard flag) -> challenge types
		"wild.example.test*":  {"dns-01"},
		"plain.example.test":  {"dns-01", "http-01"},
		"a.wild.example.test": {"dns-01", "http-01"},
	}
	resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{
		{"type": "dns", "value": "*.wild.example.test"}, {"type": "dns", "value": "plain.example.test"},
		{"type": "dns", "value": "a.wild.example.test"}}})
	if resp.StatusCode != 201 {
		t.Fatalf("newOrder: %d %s", resp.StatusCode, b)
	}
	order := decode(t, b)
	authzs, _ := order["authorizations"].([]any)
	if len(authzs) != len(want) {
		t.Fatalf("order has %d authorizations, want %d", len(authzs), len(want))
	}
	seen := map[string]bool{}
	for _, u := range authzs {
		resp, b := h.post(u.(string), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("authorization: %d %s", resp.StatusCode, b)
		}
		az := decode(t, b)
		key := az["identifier"].(map[string]any)["value"].(string)
		if az["wildcard"] == true {
			key += "*"
		}
		seen[key] = true
		if az["status"] != "valid" {
			t.Fatalf("authorization %s is %v", key, az["status"])
		}
		chs, _ := az["challenges"].([]any)
		if len(chs) == 0 {
			t.Fatalf("authorization %s has no challenges", key)
		}
		var types []string
		for _, c := range chs {
			ch := c.(map[string]any)
			types = append(types, ch["type"].(string))
			for _, payload := range []any{map[string]any{}, nil} { // POST {}, then POST-as-GET
				resp, b := h.post(ch["url"].(string), payload)
				if got := decode(t, b); resp.StatusCode != 200 || got["status"] != "valid" {
					t.Fatalf("%s challenge %s, payload %v: %d %s", key, ch["type"], payload, resp.StatusCode, b)
				}
			}
		}
		slices.Sort(types)
		if w, ok := want[key]; !ok || !slices.Equal(types, w) {
			t.Fatalf("authorization %s offers %v, want %v", key, types, w)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("authorizations %v, want %v", seen, want)
	}
}
