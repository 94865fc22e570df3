package inventory

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile reads the inventory block of the certlocker global
// option:
//
//	inventory {
//		key_export_roles <role>...
//		disable_key_export
//	}
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(1) {
		switch d.Val() {
		case "key_export_roles":
			roles := d.RemainingArgs()
			if len(roles) == 0 {
				return d.ArgErr()
			}
			for _, r := range roles {
				if !roleRe.MatchString(r) {
					return d.Errf("key_export_roles: %q is not a role name: use lowercase letters, digits, '.', '_' or '-'", r)
				}
			}
			c.KeyExportRoles = append(c.KeyExportRoles, roles...)
		case "disable_key_export":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.DisableKeyExport = true
		default:
			return d.Errf("unrecognized inventory subdirective: %s", d.Val())
		}
	}
	return nil
}
