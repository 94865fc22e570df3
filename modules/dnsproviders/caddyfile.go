package dnsproviders

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/certlocker/caddy-certlocker/internal/placeholder"
)

// UnmarshalCaddyfile reads one dns_provider entry of the certlocker global
// option (the dispenser is on the word dns_provider):
//
//	dns_provider <name> <type> {
//		zones       <zone>...
//		api_token   <placeholder>           # cloudflare
//		zone_token  <placeholder>           # cloudflare
//		server      <host:port>             # rfc2136
//		key_name    <name>                  # rfc2136
//		key_alg     <algorithm>             # rfc2136
//		key         <placeholder>           # rfc2136
//		credential  <field> <value>         # any type, e.g. a module's field
//		credentials <json object>           # any type: the whole credentials
//		account_id  <id>
//		group       <group>
//		ttl         <duration>
//		resolvers   <host[:port]>...
//		nameservers <host[:port]>...
//		propagation_timeout <duration>
//	}
//
// Secret values (tokens, keys, passwords) must be placeholders such as
// {env.CF_API_TOKEN} or {file./run/secrets/tsig}, and nothing else: a
// literal part next to a placeholder is refused too.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("dns_provider needs a name and a type, e.g. dns_provider cf-main cloudflare { ... }")
	}
	c.Name = d.Val()
	if !d.NextArg() {
		return d.Err("dns_provider needs a type after its name: cloudflare, rfc2136 or a dns.providers.* module")
	}
	c.Type = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	creds := map[string]any{}
	if len(c.Credentials) > 0 {
		if err := json.Unmarshal(c.Credentials, &creds); err != nil {
			return d.Errf("credentials: %v", err)
		}
	}
	setCred := func(field, value string) error {
		if isSecretField(field) && !placeholder.Only(value) {
			return d.Errf(`%s must be a placeholder such as {env.VAR} or {file./path}: a secret written in the Caddyfile would be visible in GET /config/`, field)
		}
		if _, dup := creds[field]; dup {
			return d.Errf("%s is set twice", field)
		}
		creds[field] = value
		return nil
	}
	one := func() (string, error) {
		if !d.NextArg() {
			return "", d.ArgErr()
		}
		v := d.Val()
		if d.NextArg() {
			return "", d.ArgErr()
		}
		return v, nil
	}
	duration := func() (caddy.Duration, error) {
		v, err := one()
		if err != nil {
			return 0, err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil {
			return 0, d.Errf("%s: %q is not a duration such as 2m", d.Val(), v)
		}
		return caddy.Duration(dur), nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch sub := d.Val(); sub {
		case "zones":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Zones = append(c.Zones, args...)
		case "api_token", "zone_token", "server", "key_name", "key_alg", "key":
			v, err := one()
			if err != nil {
				return err
			}
			if err := setCred(sub, v); err != nil {
				return err
			}
		case "credential":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Err("credential takes a field name and a value")
			}
			if err := setCred(args[0], args[1]); err != nil {
				return err
			}
		case "credentials":
			v, err := one()
			if err != nil {
				return err
			}
			var obj map[string]any
			if err := json.Unmarshal([]byte(v), &obj); err != nil || obj == nil {
				return d.Err("credentials must be a JSON object, in backquotes")
			}
			for k, e := range obj {
				s, ok := e.(string)
				if ok && isSecretField(k) && !placeholder.Only(s) {
					return d.Errf(`credentials: %s must be a placeholder such as {env.VAR}: a secret written in the Caddyfile would be visible in GET /config/`, k)
				}
				creds[k] = e
			}
		case "account_id":
			v, err := one()
			if err != nil {
				return err
			}
			c.AccountID = v
		case "group":
			v, err := one()
			if err != nil {
				return err
			}
			c.Group = v
		case "ttl":
			v, err := duration()
			if err != nil {
				return err
			}
			c.TTL = v
		case "propagation_timeout":
			v, err := duration()
			if err != nil {
				return err
			}
			c.PropagationTimeout = v
		case "resolvers":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Resolvers = append(c.Resolvers, args...)
		case "nameservers":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Nameservers = append(c.Nameservers, args...)
		default:
			return d.Errf("unrecognized dns_provider subdirective: %s", sub)
		}
	}
	if len(creds) > 0 {
		b, err := json.Marshal(creds)
		if err != nil {
			return d.Errf("credentials: %v", err)
		}
		c.Credentials = b
	}
	return nil
}

// isSecretField reports whether a credentials field name looks like it
// holds a secret (and so must be a placeholder in config files).
func isSecretField(name string) bool {
	return name != "key_name" && name != "key_alg" && secretFieldRe.MatchString(name)
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Config)(nil)
