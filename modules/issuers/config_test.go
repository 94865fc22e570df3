package issuers

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
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
