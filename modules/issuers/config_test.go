package issuers

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/certlocker/caddy-certlocker/storage"
)

// The EAB MAC key must be placeholders and nothing else, in JSON and in
// the Caddyfile: a literal part would show in GET /config/.
func TestEABMACKeyMustBeOnlyPlaceholders(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		mac     string
		ok      bool
		want    string // the expanded MAC key, when ok
		literal string // the literal part the error must not show
	}{
		"env placeholder":     {mac: "{env.X}", ok: true, want: "bWFjLXg"},
		"file placeholder":    {mac: "{file./run/secrets/mac}", ok: true, want: "bWFjLWZpbGU"},
		"two placeholders":    {mac: "{env.X}{env.Y}", ok: true, want: "bWFjLXg" + "LXk"},
		"surrounding spaces":  {mac: " {env.X} ", ok: true, want: "bWFjLXg"},
		"literal before":      {mac: "abc{env.X}", literal: "abc"},
		"literal after":       {mac: "{env.X}def", literal: "def"},
		"literal between":     {mac: "{env.X}s3cr3t{env.Y}", literal: "s3cr3t"},
		"literal only":        {mac: "c2VjcmV0", literal: "c2VjcmV0"},
		"empty braces":        {mac: "{}", literal: "{}"},
		"nested placeholders": {mac: "{{env.X}}", literal: "{{"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			repl := caddy.NewEmptyReplacer()
			repl.Set("env.X", "bWFjLXg")
			repl.Set("env.Y", "LXk")
			repl.Set("file./run/secrets/mac", "bWFjLWZpbGU")
			cfg := Config{Name: "x", Catalog: "google", EAB: &EABConfig{KeyID: "kid", MACKey: c.mac}}
			spec, err := cfg.Spec(repl)
			switch {
			case c.ok && err != nil:
				t.Fatalf("JSON: %v", err)
			case c.ok && string(spec.EABMACKey.Reveal()) != c.want:
				t.Fatal("JSON: the MAC key was not expanded from its placeholders")
			case !c.ok && (err == nil || !strings.Contains(err.Error(), "must be a placeholder")):
				t.Fatalf("JSON: error %v, want a refusal", err)
			case !c.ok && strings.Contains(err.Error(), c.literal):
				t.Fatal("JSON: the error shows the literal part of the MAC key")
			}

			d := caddyfile.NewTestDispenser("issuer x {\n\tcatalog google\n\teab kid \"" + c.mac + "\"\n}")
			d.Next()
			var got Config
			err = got.UnmarshalCaddyfile(d)
			switch {
			case c.ok && err != nil:
				t.Fatalf("Caddyfile: %v", err)
			case c.ok && (got.EAB == nil || got.EAB.MACKey != c.mac):
				t.Fatalf("Caddyfile: eab %+v", got.EAB)
			case !c.ok && (err == nil || !strings.Contains(err.Error(), "must be a placeholder")):
				t.Fatalf("Caddyfile: error %v, want a refusal", err)
			case !c.ok && strings.Contains(err.Error(), c.literal):
				t.Fatal("Caddyfile: the error shows the literal part of the MAC key")
			}
		})
	}
}

// Declare validates without touching the store; Revert puts back what
// Apply changed: a created issuer is gone, a released one is config-managed
// again, and an updated one has its row back, registered account included.
func TestRevertPutsBackWhatApplyChanged(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := newStore(t)
	svc := New(st, WithNode("node-1"))
	spec := func(name, dir string) Spec { return Spec{Name: name, DirectoryURL: dir} }
	if _, err := svc.Declare([]Spec{spec("a", "https://ca.test/dir"), spec("a", "https://ca.test/dir")}); err == nil ||
		!strings.Contains(err.Error(), "declared twice") {
		t.Fatalf("a name declared twice: %v", err)
	}
	if _, err := svc.Declare([]Spec{spec("a", "http://ca.test/dir")}); err == nil || !strings.Contains(err.Error(), "directory_url") {
		t.Fatalf("an http directory: %v", err)
	}
	if n, a := counts(t, st); n != 0 || a != 0 {
		t.Fatalf("Declare wrote %d issuers and %d audit entries", n, a)
	}

	if err := svc.SyncConfig(ctx, []Spec{spec("keep", "https://ca.test/dir"), spec("drop", "https://other.test/dir")}); err != nil {
		t.Fatal(err)
	}
	// keep's account was registered since
	keep := mustGetByName(t, st, "keep")
	keep.AccountURL, keep.Status, keep.AccountKey = "https://ca.test/acct/1", StatusValid, storage.NewSecret([]byte("key-pem"))
	if err := st.Issuers().Update(ctx, keep); err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string]string {
		all, err := st.Issuers().List(ctx, storage.IssuerFilter{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, i := range all {
			out[i.Name] = fmt.Sprintf("%s %s %s %s %s key=%s", i.ID, i.ManagedBy, i.DirectoryURL, i.Status, i.AccountURL, i.AccountKey.Reveal())
		}
		return out
	}
	before := snapshot()

	// the next config moves keep to another directory, drops drop, adds new
	d, err := svc.Declare([]Spec{spec("keep", "https://ca.test/v2/dir"), spec("new", "https://new.test/dir")})
	if err != nil {
		t.Fatal(err)
	}
	applied, err := svc.Apply(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustGetByName(t, st, "keep"); got.AccountURL != "" || mustGetByName(t, st, "drop").ManagedBy != storage.ManagedByAPI {
		t.Fatalf("Apply did not reset keep's account or release drop: %v", snapshot())
	}
	if err := svc.Revert(ctx, applied); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(); !maps.Equal(got, before) {
		t.Fatalf("after Revert the store holds\n%v\nwant\n%v", got, before)
	}
}
