package dnsproviders

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/certlocker/caddy-certlocker/internal/placeholder"
)

func parse(input string) (Config, error) {
	d := caddyfile.NewTestDispenser(input)
	d.Next() // dns_provider
	var c Config
	err := c.UnmarshalCaddyfile(d)
	return c, err
}

func TestUnmarshalCaddyfile(t *testing.T) {
	c, err := parse(`dns_provider cf cloudflare {
		api_token {env.CF}
		zones example.com example.net
		zones example.org
		account_id acct
		group web
		ttl 90s
		propagation_timeout 5m
		resolvers 1.1.1.1
		nameservers ns1.example.com:53
		credential extra {env.X}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "cf" || c.Type != TypeCloudflare || string(c.Credentials) != `{"api_token":"{env.CF}","extra":"{env.X}"}` ||
		len(c.Zones) != 3 || c.AccountID != "acct" || c.Group != "web" || time.Duration(c.TTL) != 90*time.Second ||
		time.Duration(c.PropagationTimeout) != 5*time.Minute || c.Resolvers[0] != "1.1.1.1" || c.Nameservers[0] != "ns1.example.com:53" {
		t.Fatalf("parsed %+v", c)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
		line           int
	}{
		{"no name", "dns_provider", "needs a name and a type", 1},
		{"no type", "dns_provider cf", "needs a type after its name", 1},
		{"extra argument", "dns_provider cf cloudflare extra", "wrong argument count", 1},
		{"literal token", "dns_provider cf cloudflare {\n zones a.test\n api_token abc123\n}", "api_token must be a placeholder", 3},
		{"literal key", "dns_provider b rfc2136 {\n key c2VjcmV0\n}", "key must be a placeholder", 2},
		{"literal module secret", "dns_provider r dns.providers.route53 {\n credential secret_access_key abc\n}", "secret_access_key must be a placeholder", 2},
		{"literal secret in JSON", "dns_provider r dns.providers.x {\n credentials `{\"password\":\"p\"}`\n}", "password must be a placeholder", 2},
		{"literal before placeholder", "dns_provider cf cloudflare {\n zones a.test\n api_token abc{env.X}\n}", "api_token must be a placeholder", 3},
		{"literal after placeholder", "dns_provider b rfc2136 {\n key {env.X}def\n}", "key must be a placeholder", 2},
		{"literal around placeholder in JSON", "dns_provider r dns.providers.x {\n credentials `{\"password\":\"abc{env.X}\"}`\n}", "password must be a placeholder", 2},
		{"set twice", "dns_provider cf cloudflare {\n api_token {env.A}\n api_token {env.B}\n}", "api_token is set twice", 3},
		{"bad duration", "dns_provider cf cloudflare {\n ttl soon\n}", `"soon" is not a duration`, 2},
		{"credential arity", "dns_provider cf cloudflare {\n credential only_name\n}", "credential takes a field name and a value", 2},
		{"no zones", "dns_provider cf cloudflare {\n zones\n}", "wrong argument count", 2},
		{"unknown subdirective", "dns_provider cf cloudflare {\n colour blue\n}", "unrecognized dns_provider subdirective: colour", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if at := "Testfile:" + string(rune('0'+tc.line)); !strings.Contains(err.Error(), at) {
				t.Fatalf("error %v does not point at %s", err, at)
			}
			for _, secret := range []string{"abc", "def", "c2VjcmV0"} {
				noSecret(t, "error", err.Error(), secret)
			}
		})
	}
}

// A secret value must be placeholders and nothing else: a literal part
// next to one would show in GET /config/.
func TestPlaceholderOnly(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"{env.X}", true},
		{"{file./run/secrets/tsig}", true},
		{" {env.X}\t", true},
		{"{env.USER}{env.PASS}", true},
		{"abc{env.X}", false},
		{"{env.X}def", false},
		{"s3cr3t{env.X}", false},
		{"{env.X} {env.Y}", false},
		{"{env.X", false},
		{"{}", false},
		{"{{env.X}}", false},
		{"", false},
		{"abc123", false},
	} {
		if got := placeholder.Only(tc.in); got != tc.ok {
			t.Errorf("placeholder.Only(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
	// and the Caddyfile takes them
	c, err := parse("dns_provider b rfc2136 {\n server 10.0.0.1:53\n key_name k\n key {file./run/secrets/tsig}\n credential password {env.X}\n}")
	if err != nil || string(c.Credentials) != `{"key":"{file./run/secrets/tsig}","key_name":"k","password":"{env.X}","server":"10.0.0.1:53"}` {
		t.Fatalf("parsed %s, %v", c.Credentials, err)
	}
}
