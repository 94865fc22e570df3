// Package caddyfile parses CertLocker's Caddyfile syntax. The global option
// `certlocker` configures the app:
//
//	{
//		certlocker {
//			storage sqlite [<path>]
//			storage postgres <dsn> {
//				max_connections <n>
//			}
//			encryption_key <placeholder>
//			previous_encryption_keys <placeholder>...
//			node_id <id>
//			user <id> admin|operator|viewer [groups <group>...]
//			inventory {
//				key_export_roles <role>...
//				disable_key_export
//			}
//			dns_provider <name> <type> {
//				...
//			}
//			issuer <name> {
//				catalog <id> | directory <url>
//				...
//			}
//			workflow {
//				concurrency <n>
//				per_issuer_concurrency <n>
//				max_attempts <n>
//				lease_ttl <duration>
//				scan_interval <duration>
//				renewal_interval <duration>
//			}
//			notifier webhook {
//				url <url>
//				events <event>...
//				format generic|slack
//				secret <placeholder>
//				max_attempts <n>
//				timeout <duration>
//			}
//		}
//	}
//
// encryption_key and the DSN should be placeholders such as
// {env.CERTLOCKER_ENCRYPTION_KEY} so no secret lands in the adapted JSON.
package caddyfile

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("certlocker", parseGlobal)
}

func parseGlobal(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the certlocker global option may appear only once")
	}
	app := new(certlocker.App)
	d.Next() // option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "storage":
			if app.Storage != nil {
				return nil, d.Err("storage may be set only once")
			}
			sc := &certlocker.StorageConfig{}
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			sc.Backend = d.Val()
			switch sc.Backend {
			case certlocker.BackendSQLite:
				if d.NextArg() {
					sc.Path = d.Val()
				}
			case certlocker.BackendPostgres:
				if !d.NextArg() {
					return nil, d.Err("storage postgres needs a DSN, e.g. {env.CERTLOCKER_DSN}")
				}
				sc.DSN = d.Val()
			default:
				return nil, d.Errf("unknown storage backend %q: use sqlite or postgres", sc.Backend)
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			for d.NextBlock(1) {
				switch d.Val() {
				case "max_connections":
					if !d.NextArg() {
						return nil, d.ArgErr()
					}
					n, err := strconv.Atoi(d.Val())
					if err != nil || n < 1 {
						return nil, d.Errf("max_connections must be a positive number, not %q", d.Val())
					}
					sc.MaxConnections = n
					if d.NextArg() {
						return nil, d.ArgErr()
					}
				default:
					return nil, d.Errf("unrecognized storage subdirective: %s", d.Val())
				}
			}
			app.Storage = sc
		case "encryption_key":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			app.EncryptionKey = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "user":
			// user <id> <role> [groups <group>...]
			args := d.RemainingArgs()
			if len(args) < 2 || (len(args) > 2 && args[2] != "groups") || len(args) == 3 {
				return nil, d.Err("usage: user <id> admin|operator|viewer [groups <group>...]")
			}
			u := certlocker.User{ID: args[0], Role: args[1]}
			if len(args) > 3 {
				u.Groups = args[3:]
			}
			app.Users = append(app.Users, u)
		case "previous_encryption_keys":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			app.PreviousEncryptionKeys = append(app.PreviousEncryptionKeys, args...)
		case "node_id":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			app.NodeID = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		// Config-declared resources: one case per kind.
		case "inventory":
			if app.Inventory != nil {
				return nil, d.Err("inventory may be set only once")
			}
			c := new(inventory.Config)
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return nil, err
			}
			app.Inventory = c
		case "issuer":
			var c issuers.Config
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return nil, err
			}
			for _, other := range app.Issuers {
				if other.Name == c.Name {
					return nil, d.Errf("issuer %s is declared twice", c.Name)
				}
			}
			app.Issuers = append(app.Issuers, c)
		case "dns_provider":
			var c dnsproviders.Config
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return nil, err
			}
			app.DNSProviders = append(app.DNSProviders, c)
		case "challenge_zone":
			var c certlocker.ChallengeZoneConfig
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return nil, err
			}
			app.ChallengeZones = append(app.ChallengeZones, c)
		case "workflow":
			if app.Workflow != nil {
				return nil, d.Err("workflow may be set only once")
			}
			wc, err := parseWorkflow(d)
			if err != nil {
				return nil, err
			}
			app.Workflow = wc
		case "notifier":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "certlocker.notifiers."+name)
			if err != nil {
				return nil, err
			}
			app.NotifiersRaw = append(app.NotifiersRaw, caddyconfig.JSONModuleObject(unm, "notifier", name, nil))
		default:
			return nil, d.Errf("unrecognized certlocker option: %s", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "certlocker", Value: caddyconfig.JSON(app, nil)}, nil
}

// parseWorkflow reads
//
//	workflow {
//		concurrency <n>
//		per_issuer_concurrency <n>
//		max_attempts <n>
//		lease_ttl <duration>
//		scan_interval <duration>
//		renewal_interval <duration>
//	}
func parseWorkflow(d *caddyfile.Dispenser) (*certlocker.WorkflowConfig, error) {
	wc := new(certlocker.WorkflowConfig)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(1) {
		opt := d.Val()
		if !d.NextArg() {
			return nil, d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		switch opt {
		case "concurrency", "per_issuer_concurrency", "max_attempts":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return nil, d.Errf("%s must be a positive number, not %q", opt, val)
			}
			switch opt {
			case "concurrency":
				wc.Concurrency = n
			case "per_issuer_concurrency":
				wc.PerIssuerConcurrency = n
			default:
				wc.MaxAttempts = n
			}
		case "lease_ttl", "scan_interval", "renewal_interval":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return nil, d.Errf("%s: %v", opt, err)
			}
			switch opt {
			case "lease_ttl":
				wc.LeaseTTL = caddy.Duration(dur)
			case "scan_interval":
				wc.ScanInterval = caddy.Duration(dur)
			default:
				wc.RenewalInterval = caddy.Duration(dur)
			}
		default:
			return nil, d.Errf("unrecognized workflow option: %s", opt)
		}
	}
	return wc, nil
}

// Adapt adapts a Caddyfile to indented JSON, as `certlocker adapt` does;
// the golden tests of this package and of examples/ compare against it.
func Adapt(input []byte, filename string) ([]byte, error) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(input, map[string]any{"filename": filename})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// Interface guards
var _ httpcaddyfile.UnmarshalGlobalFunc = parseGlobal
var _ caddy.Module = (*certlocker.App)(nil)
