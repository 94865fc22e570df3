package gateway_test

import (
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

// pebbleProfiles offers two profiles of distinct validity, so the issued
// certificate shows which one the upstream order carried.
var pebbleProfiles = map[string]acmetest.Profile{
	"classic":    {Description: "90-day certificates", Validity: 90 * 24 * time.Hour},
	"shortlived": {Description: "6-day certificates", Validity: 6 * 24 * time.Hour},
}

func directoryProfiles(t *testing.T, e *gwEnv, path string) map[string]string {
	t.Helper()
	resp, err := e.srv.Client().Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var dir struct {
		Meta struct {
			Profiles map[string]string `json:"profiles"`
		} `json:"meta"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &dir) != nil {
		t.Fatalf("directory %s: %d %s", path, resp.StatusCode, b)
	}
	return dir.Meta.Profiles
}

// ACME profiles (draft-ietf-acme-profiles) around smallstep, which has
// none: both directories list the profiles the token's CA offers; a new
// order's profile is checked against them (an unknown one is
// invalidProfile, a non-string malformed, and nothing is stored); the
// order echoes it; and it is carried to the upstream order, whose
// certificate has that profile's validity.
func TestProfiles(t *testing.T) {
	e := newGWEnvPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true, Profiles: pebbleProfiles}, gateway.Options{})
	_, creds := e.token("prof.example.test")
	want := map[string]string{"classic": "90-day certificates", "shortlived": "6-day certificates"}
	for _, path := range []string{creds.DirectoryPath, gateway.DirectoryPath} {
		if got := directoryProfiles(t, e, path); !maps.Equal(got, want) {
			t.Fatalf("directory %s meta.profiles = %v, want %v", path, got, want)
		}
	}

	t.Run("carried upstream", func(t *testing.T) {
		cl := e.client(creds.DirectoryPath)
		acct, err := e.account(cl, nil)
		if err != nil {
			t.Fatal(err)
		}
		order, err := cl.NewOrder(t.Context(), acct, acme.Order{Profile: "shortlived",
			Identifiers: []acme.Identifier{{Type: "dns", Value: "prof.example.test"}}})
		if err != nil {
			t.Fatal(err)
		}
		if order.Profile != "shortlived" {
			t.Fatalf("new order echoes profile %q", order.Profile)
		}
		key := newKey(t, elliptic.P256())
		order, err = cl.FinalizeOrder(t.Context(), acct, order, csrFor(t, key, "prof.example.test"))
		if err != nil {
			t.Fatal(err)
		}
		if order.Profile != "shortlived" {
			t.Fatalf("finalized order echoes profile %q", order.Profile)
		}
		if o, err := cl.GetOrder(t.Context(), acct, order); err != nil || o.Profile != "shortlived" {
			t.Fatalf("order GET: profile %q, %v", o.Profile, err)
		}
		chains, err := cl.GetCertificateChain(t.Context(), acct, order.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		leaf := parseLeaf(t, chains[0].ChainPEM)
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 7*24*time.Hour {
			t.Fatalf("certificate valid for %v: the upstream order did not carry profile shortlived", life)
		}
		ws, _, err := e.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{})
		if err != nil || len(ws) != 1 || ws[0].Profile != "shortlived" {
			t.Fatalf("gateway workflow: %v %+v", err, ws)
		}
		c, err := e.app.Store().Certificates().Get(t.Context(), ws[0].CertificateID)
		if err != nil || c.Profile != "shortlived" {
			t.Fatalf("inventory certificate profile: %v", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		h := startHAProxy33(t, e, creds.DirectoryPath)
		for _, tc := range []struct {
			name    string
			profile any
			typ     string
		}{
			{"unknown", "tlsserver", "urn:ietf:params:acme:error:invalidProfile"},
			{"not a string", 5, "urn:ietf:params:acme:error:malformed"},
		} {
			before := e.state()
			resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"profile": tc.profile,
				"identifiers": []map[string]string{{"type": "dns", "value": "prof.example.test"}}})
			p := decode(t, b)
			if resp.StatusCode != 400 || p["type"] != tc.typ {
				t.Fatalf("%s profile: %d %s, want 400 %s", tc.name, resp.StatusCode, b, tc.typ)
			}
			if tc.name == "unknown" {
				detail, _ := p["detail"].(string)
				for _, n := range slices.Sorted(maps.Keys(want)) {
					if !strings.Contains(detail, n) {
						t.Fatalf("detail %q does not list the offered profile %s", detail, n)
					}
				}
			}
			e.sameState(before)
		}
		// an order without a profile still works, and echoes none
		resp, b := h.post(h.dir["newOrder"].(string), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "prof.example.test"}}})
		o := decode(t, b)
		if resp.StatusCode != 201 || o["profile"] != nil {
			t.Fatalf("order without profile: %d %s", resp.StatusCode, b)
		}
		csr := csrFor(t, newKey(t, elliptic.P256()), "prof.example.test")
		if resp, b := h.post(o["finalize"].(string), map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csr)}); resp.StatusCode != 200 {
			t.Fatalf("finalize: %d %s", resp.StatusCode, b)
		}
	})
}
