package dnsproviders

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
)

func TestCreateRefusesBadInput(t *testing.T) {
	e := newEnv(t)
	ok := func(mod func(*Config)) Config {
		c := Config{Name: "cf", Type: TypeCloudflare, Credentials: creds(map[string]string{"api_token": cfToken}), Zones: []string{testZone}}
		mod(&c)
		return c
	}
	rfc := func(m map[string]string) Config {
		return Config{Name: "bind", Type: TypeRFC2136, Credentials: creds(m), Zones: []string{testZone}}
	}
	tests := []struct {
		name, field, want string
		c                 Config
	}{
		{"bad name", "name", "name must be", ok(func(c *Config) { c.Name = "has space" })},
		{"no zones", "zones", "at least one zone", ok(func(c *Config) { c.Zones = nil })},
		{"bad zone", "zones[1]", "not a valid domain name", ok(func(c *Config) { c.Zones = []string{"a.test", "*.b.test"} })},
		{"no type", "type", "type is required", ok(func(c *Config) { c.Type = "" })},
		{"unknown type", "type", `type "bind9" is not supported`, ok(func(c *Config) { c.Type = "bind9" })},
		{"module not installed", "type", "no such module is installed", ok(func(c *Config) { c.Type = "dns.providers.route53" })},
		{"no credentials", "credentials", "credentials are required", ok(func(c *Config) { c.Credentials = nil })},
		{"credentials not object", "credentials", "must be a JSON object", ok(func(c *Config) { c.Credentials = json.RawMessage(`"tok"`) })},
		{"no api token", "credentials.api_token", "api_token is required", ok(func(c *Config) { c.Credentials = creds(map[string]string{"zone_token": cfZoneTok}) })},
		{"malformed token", "credentials.api_token", "not a Cloudflare API token", ok(func(c *Config) {
			c.Credentials = creds(map[string]string{"api_token": "Bearer " + cfToken})
		})},
		{"unknown credential", "credentials", `unknown field "apitoken"`, ok(func(c *Config) {
			c.Credentials = creds(map[string]string{"api_token": cfToken, "apitoken": cfToken})
		})},
		{"cloudflare ttl", "ttl", "60s to 24h", ok(func(c *Config) { c.TTL = caddy.Duration(30 * time.Second) })},
		{"fractional ttl", "ttl", "whole number of seconds", ok(func(c *Config) { c.TTL = caddy.Duration(1500 * time.Millisecond) })},
		{"timeout too long", "propagation_timeout", "from 1s to 30m", ok(func(c *Config) { c.PropagationTimeout = caddy.Duration(2 * time.Hour) })},
		{"bad resolver", "resolvers[0]", "invalid port", ok(func(c *Config) { c.Resolvers = []string{"1.1.1.1:99999"} })},
		{"bad account", "account_id", "account_id must be", ok(func(c *Config) { c.AccountID = "a b" })},
		{"rfc2136 no server", "credentials.server", "server is required", rfc(map[string]string{"key_name": "k", "key": "c2VjcmV0"})},
		{"rfc2136 no key", "credentials.key", "key is required", rfc(map[string]string{"server": "127.0.0.1:53", "key_name": "k"})},
		{"rfc2136 key not base64", "credentials.key", "base64", rfc(map[string]string{"server": "127.0.0.1:53", "key_name": "k", "key": "not base64!"})},
		{"rfc2136 bad alg", "credentials.key_alg", "key_alg must be", rfc(map[string]string{"server": "127.0.0.1:53", "key_name": "k", "key_alg": "rot13", "key": "c2VjcmV0"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Create(t.Context(), "tester", tc.c)
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v, want an InputError", err)
			}
			if ie.Field != tc.field || !strings.Contains(ie.Message, tc.want) {
				t.Fatalf("error %q on %q, want %q on %q", ie.Message, ie.Field, tc.want, tc.field)
			}
			noSecret(t, "error", err.Error(), cfToken, cfZoneTok, "c2VjcmV0")
		})
	}
	// nothing was saved, nothing audited
	if list, _ := e.svc.List(t.Context(), ""); len(list) != 0 {
		t.Fatalf("%d providers saved from bad input", len(list))
	}
	if entries, _, _ := e.st.Audit().List(t.Context(), storage.AuditFilter{}, storage.Page{}); len(entries) != 0 {
		t.Fatalf("%d audit entries from bad input", len(entries))
	}
}

func TestCreateUpdateDelete(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.cf.AddToken(cfZoneTok, acmetest.PermZoneRead(acmetest.AllZones))
	p := e.cloudflare("cf-main", func(c *Config) {
		c.Credentials = creds(map[string]string{"api_token": cfToken, "zone_token": cfZoneTok})
		c.Zones = []string{"Example.TEST.", "example.test"}
		c.Group = "web"
		c.TTL = caddy.Duration(2 * time.Minute)
		c.Resolvers = []string{"1.1.1.1"}
	})
	v := NewView(p)
	if v.Status != StatusUnverified || v.ManagedBy != storage.ManagedByAPI || len(v.Zones) != 1 || v.Zones[0] != testZone ||
		v.TTL != "2m0s" || v.Resolvers[0] != "1.1.1.1:53" || v.PropagationTimeout != "10s" {
		t.Fatalf("view = %+v", v)
	}
	if strings.Join(v.CredentialFields, ",") != "api_token,zone_token" {
		t.Fatalf("credential fields = %v", v.CredentialFields)
	}
	b, _ := json.Marshal(v)
	noSecret(t, "view", string(b), cfToken, cfZoneTok)

	got, err := e.svc.Get(ctx, "cf-main") // by name
	if err != nil || got.ID != p.ID || string(got.Credentials.Reveal()) != `{"api_token":"`+cfToken+`","zone_token":"`+cfZoneTok+`"}` {
		t.Fatalf("get by name: %v %+v", err, got)
	}
	if _, err := e.svc.Create(ctx, "tester", configOf(got)); !errors.Is(err, storage.ErrDuplicate) {
		t.Fatalf("duplicate name: %v", err)
	}

	// a verified provider whose zones change is unverified again
	got.Status, got.VerifiedAt = StatusVerified, time.Now()
	if err := e.st.DNSProviders().Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	group := "ops"
	up, err := e.svc.Update(ctx, "tester", p.ID, Patch{Group: &group})
	if err != nil || up.Status != StatusVerified || up.Group != "ops" {
		t.Fatalf("group change: %v %+v", err, up)
	}
	zones := []string{testZone, "other.test"}
	up, err = e.svc.Update(ctx, "tester", p.ID, Patch{Zones: &zones, Version: up.Version})
	if err != nil || up.Status != StatusUnverified || len(up.Zones) != 2 || string(up.Credentials.Reveal()) != string(got.Credentials.Reveal()) {
		t.Fatalf("zones change: %v %+v", err, up)
	}
	if _, err := e.svc.Update(ctx, "tester", p.ID, Patch{Group: &group, Version: 1}); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("stale version: %v", err)
	}
	bad := []string{}
	if _, err := e.svc.Update(ctx, "tester", p.ID, Patch{Zones: &bad}); err == nil {
		t.Fatal("update to no zones accepted")
	}

	// not deletable while a challenge record waits for cleanup
	rec, err := e.svc.Present(ctx, p.ID, "wf_1", "_acme-challenge.www.example.test", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, "tester", p.ID); !errors.Is(err, storage.ErrInUse) {
		t.Fatalf("delete with a pending record: %v", err)
	}
	if err := e.svc.CleanUp(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, "tester", p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, p.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}

	entries, _, err := e.st.Audit().List(ctx, storage.AuditFilter{Target: p.ID}, storage.Page{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, en := range entries {
		actions = append(actions, en.Action)
		noSecret(t, "audit details", string(en.Details), cfToken, cfZoneTok)
		if en.Actor != "tester" || en.Node != "node-test" {
			t.Fatalf("audit entry %+v", en)
		}
	}
	if strings.Join(actions, ",") != "dns_provider.delete,dns_provider.update,dns_provider.update,dns_provider.create" {
		t.Fatalf("audit actions = %v", actions)
	}
}

func TestSyncConfigAsCode(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	t.Setenv("TEST_CF_TOKEN", cfToken)
	t.Setenv("TEST_TSIG", "c2VjcmV0c2VjcmV0")
	repl := caddy.NewReplacer()
	expand := func(cs ...Config) []Config {
		t.Helper()
		var out []Config
		for i, c := range cs {
			x, err := ExpandConfig(repl, c, i)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
		return out
	}
	cf := Config{Name: "cf", Type: TypeCloudflare, Credentials: json.RawMessage(`{"api_token":"{env.TEST_CF_TOKEN}"}`), Zones: []string{testZone}}
	bind := Config{Name: "bind", Type: TypeRFC2136, Zones: []string{"corp.test"},
		Credentials: json.RawMessage(`{"server":"127.0.0.1:53","key_name":"certlocker","key":"{env.TEST_TSIG}"}`)}

	if err := e.svc.Sync(ctx, expand(cf, bind)); err != nil {
		t.Fatal(err)
	}
	p, err := e.svc.Get(ctx, "cf")
	if err != nil || p.ManagedBy != storage.ManagedByConfig || string(p.Credentials.Reveal()) != `{"api_token":"`+cfToken+`"}` {
		t.Fatalf("synced provider: %v %+v", err, p)
	}
	// unchanged config: no write
	if err := e.svc.Sync(ctx, expand(cf, bind)); err != nil {
		t.Fatal(err)
	}
	if p2, _ := e.svc.Get(ctx, "cf"); p2.Version != p.Version {
		t.Fatalf("unchanged config rewrote the provider (version %d → %d)", p.Version, p2.Version)
	}
	// the API cannot change or delete it
	g := "x"
	if _, err := e.svc.Update(ctx, "tester", p.ID, Patch{Group: &g}); !errors.Is(err, ErrManagedByConfig) {
		t.Fatalf("update of a config provider: %v", err)
	}
	if err := e.svc.Delete(ctx, "tester", p.ID); !errors.Is(err, ErrManagedByConfig) {
		t.Fatalf("delete of a config provider: %v", err)
	}

	// a bad config changes nothing at all
	broken := bind
	broken.Zones = nil
	cf2 := cf
	cf2.Group = "changed"
	if err := e.svc.Sync(ctx, expand(cf2, broken)); err == nil || !strings.Contains(err.Error(), "dns_providers[1] (bind)") {
		t.Fatalf("bad config: %v", err)
	}
	if p2, _ := e.svc.Get(ctx, "cf"); p2.Group != "" {
		t.Fatal("a failed sync changed a provider")
	}

	// removed from the config: removed from the store; an API provider of
	// the same name is never taken over
	if err := e.svc.Sync(ctx, expand(cf)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, "bind"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("provider removed from the config: %v", err)
	}
	e.cloudflare("api-one", nil)
	clash := cf
	clash.Name = "api-one"
	if err := e.svc.Sync(ctx, expand(cf, clash)); err == nil || !strings.Contains(err.Error(), "managed through the API") {
		t.Fatalf("clash with an API provider: %v", err)
	}
	entries, _, _ := e.st.Audit().List(ctx, storage.AuditFilter{Actor: storage.ActorConfig}, storage.Page{})
	if len(entries) != 3 { // create cf, create bind, delete bind
		t.Fatalf("config audit entries = %d", len(entries))
	}
}

func TestExpandConfigRefusesLiteralSecrets(t *testing.T) {
	t.Setenv("TEST_KEY", "s3cr3t-value")
	tsig := filepath.Join(t.TempDir(), "tsig")
	if err := os.WriteFile(tsig, []byte("s3cr3t-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	repl := caddy.NewReplacer()
	tests := []struct {
		name, creds, want, err string
	}{
		{"placeholder", `{"api_token":"{env.TEST_KEY}"}`, `{"api_token":"s3cr3t-value"}`, ""},
		{"file placeholder", `{"key":"{file.` + tsig + `}"}`, `{"key":"s3cr3t-value"}`, ""},
		{"spaces around placeholder", `{"api_token":" {env.TEST_KEY} "}`, `{"api_token":" s3cr3t-value "}`, ""},
		{"two placeholders", `{"password":"{env.TEST_KEY}{env.TEST_KEY}"}`, `{"password":"s3cr3t-values3cr3t-value"}`, ""},
		{"literal before placeholder", `{"api_token":"abc{env.TEST_KEY}"}`, "", "credentials.api_token must be a placeholder"},
		{"literal after placeholder", `{"api_token":"{env.TEST_KEY}def"}`, "", "credentials.api_token must be a placeholder"},
		{"literal between placeholders", `{"key":"{env.TEST_KEY}:{env.TEST_KEY}"}`, "", "credentials.key must be a placeholder"},
		{"non-secret around placeholder", `{"server":"{env.TEST_KEY}:53","key":"{env.TEST_KEY}","key_name":"k"}`, `{"key":"s3cr3t-value","key_name":"k","server":"s3cr3t-value:53"}`, ""},
		{"literal token", `{"api_token":"s3cr3t-value"}`, "", "credentials.api_token must be a placeholder"},
		{"literal nested secret", `{"auth":{"secret_access_key":"x"}}`, "", "credentials.auth"},
		{"non-secret literal", `{"server":"10.0.0.1:53","key_name":"k","key":"{env.TEST_KEY}"}`, `{"key":"s3cr3t-value","key_name":"k","server":"10.0.0.1:53"}`, ""},
		{"unknown placeholder", `{"api_token":"{env.NOPE_NOT_SET}"}`, "", "credentials.api_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ExpandConfig(repl, Config{Name: "p", Credentials: json.RawMessage(tc.creds)}, 0)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				noSecret(t, "error", err.Error(), "s3cr3t-value", "abc", "def")
				return
			}
			if err != nil || string(c.Credentials) != tc.want {
				t.Fatalf("got %s, %v; want %s", c.Credentials, err, tc.want)
			}
		})
	}
}
