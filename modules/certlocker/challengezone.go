package certlocker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/certlocker/caddy-certlocker/modules/challengezone"
	"github.com/certlocker/caddy-certlocker/storage"
)

// ChallengeZoneConfig is one zone CertLocker's own DNS server is
// authoritative for (apps.certlocker.challenge_zones): a zone delegated to
// it (NS records in the parent zone, with glue), into which operators CNAME
// their names' _acme-challenge records, or a private zone it serves
// outright (direct mode). DNS provider clients of type "delegated" publish
// in these zones; the TXT answers come from the database, so every node
// answers the same.
type ChallengeZoneConfig struct {
	// Zone is the zone's apex, e.g. "acme.certlocker.example.net".
	Zone string `json:"zone"`

	// Listen are the addresses (host:port) the DNS server listens on, over
	// UDP and TCP; port 53 needs CAP_NET_BIND_SERVICE. Zones with the same
	// listen addresses share one server; two zones may not share some
	// addresses but not all.
	Listen []string `json:"listen"`

	// NS are the names of the zone's nameservers, as the parent zone
	// delegates with (at least one).
	NS []string `json:"ns"`

	// Addresses are answered as A/AAAA records for the NS names inside the
	// zone (what the parent's glue records say). Default: none.
	Addresses []string `json:"addresses,omitempty"`

	// Admin is the SOA's responsible mailbox in DNS form.
	// Default: hostmaster.<zone>.
	Admin string `json:"admin,omitempty"`

	// TTL of TXT and negative answers, in whole seconds. Default: 1s.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// CacheTTL is how long a TXT lookup in the database is reused by a
	// node; "off" is a negative value. Default: 500ms.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// RateLimit is the queries per second one source (an IPv4 address, an
	// IPv6 /64) may send; queries beyond are dropped. Negative: no limit.
	// Default: 100.
	RateLimit float64 `json:"rate_limit,omitempty"`

	// Burst is how many queries a source may send at once. Default: 200.
	Burst int `json:"burst,omitempty"`
}

// challengeZoneServers builds (without starting) the DNS servers of the
// challenge zones, one per set of listen addresses.
func (a *App) provisionChallengeZones() error {
	a.zoneServers = nil
	if len(a.ChallengeZones) == 0 {
		return nil
	}
	zs := storage.ChallengeZoneOf(a.store)
	type group struct {
		listen []string
		cfg    challengezone.Config
		first  int
	}
	var groups []*group
	owner := map[string]int{} // listen address → group
	for i, z := range a.ChallengeZones {
		where := fmt.Sprintf("challenge_zones[%d] (%s)", i, z.Zone)
		if len(z.Listen) == 0 {
			return fmt.Errorf("%s: listen must name at least one address, e.g. \":53\"", where)
		}
		ttl := time.Duration(z.TTL)
		if ttl < 0 || ttl%time.Second != 0 {
			return fmt.Errorf("%s: ttl must be a whole number of seconds", where)
		}
		listen := slices.Sorted(slices.Values(z.Listen))
		key := strings.Join(listen, ",")
		var g *group
		for _, o := range groups {
			if strings.Join(o.listen, ",") == key {
				g = o
			}
		}
		for _, l := range listen {
			if gi, ok := owner[l]; ok && (g == nil || groups[gi] != g) {
				return fmt.Errorf("%s: listen address %s is also a listen address of challenge_zones[%d] with other addresses: give zones that share an address the same listen addresses", where, l, groups[gi].first)
			}
		}
		if g == nil {
			g = &group{listen: listen, first: i, cfg: challengezone.Config{Listen: z.Listen, TTL: ttl,
				CacheTTL: time.Duration(z.CacheTTL), Rate: z.RateLimit, Burst: z.Burst, Logger: a.logger.Named("challenge_zone"),
				ReusePort: true}}
			groups = append(groups, g)
			for _, l := range listen {
				owner[l] = len(groups) - 1
			}
		} else if time.Duration(z.CacheTTL) != g.cfg.CacheTTL || z.RateLimit != g.cfg.Rate || z.Burst != g.cfg.Burst || ttl != g.cfg.TTL {
			return fmt.Errorf("%s: zones on the same listen addresses must have the same ttl, cache_ttl, rate_limit and burst as challenge_zones[%d]", where, g.first)
		}
		g.cfg.Zones = append(g.cfg.Zones, challengezone.Zone{Name: z.Zone, NS: z.NS, Addresses: z.Addresses, Admin: z.Admin})
	}
	for _, g := range groups {
		srv, err := challengezone.New(zs, g.cfg)
		if err != nil {
			return fmt.Errorf("challenge_zones[%d]: %w", g.first, err)
		}
		a.zoneServers = append(a.zoneServers, srv)
	}
	return nil
}

// startChallengeZones starts the DNS servers; on failure none runs.
func (a *App) startChallengeZones() error {
	for i, srv := range a.zoneServers {
		if err := srv.Start(); err != nil {
			for _, s := range a.zoneServers[:i] {
				_ = s.Stop()
			}
			return err
		}
	}
	return nil
}

// stopChallengeZones stops the DNS servers.
func (a *App) stopChallengeZones() {
	for _, srv := range a.zoneServers {
		_ = srv.Stop()
	}
}

// ChallengeZoneServers returns the running DNS servers of the challenge
// zones (their addresses, counters).
func (a *App) ChallengeZoneServers() []*challengezone.Server { return slices.Clone(a.zoneServers) }

// UnmarshalCaddyfile sets up a challenge zone from Caddyfile tokens:
//
//	challenge_zone <zone> {
//		listen     <addr>...
//		ns         <name>...
//		addresses  <ip>...
//		admin      <mailbox>
//		ttl        <duration>
//		cache_ttl  <duration>|off
//		rate_limit <queries/s>|off
//		burst      <n>
//	}
func (c *ChallengeZoneConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	c.Zone = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(1) {
		key := d.Val()
		args := d.RemainingArgs()
		switch key {
		case "listen", "ns", "addresses":
			if len(args) == 0 {
				return d.ArgErr()
			}
			switch key {
			case "listen":
				c.Listen = append(c.Listen, args...)
			case "ns":
				c.NS = append(c.NS, args...)
			case "addresses":
				c.Addresses = append(c.Addresses, args...)
			}
		case "admin", "ttl", "cache_ttl", "rate_limit", "burst":
			if len(args) != 1 {
				return d.ArgErr()
			}
			v := args[0]
			switch key {
			case "admin":
				c.Admin = v
			case "ttl", "cache_ttl":
				if key == "cache_ttl" && v == "off" {
					c.CacheTTL = -1
					continue
				}
				dur, err := caddy.ParseDuration(v)
				if err != nil {
					return d.Errf("%s: %v", key, err)
				}
				if key == "ttl" {
					c.TTL = caddy.Duration(dur)
				} else {
					c.CacheTTL = caddy.Duration(dur)
				}
			case "rate_limit":
				if v == "off" {
					c.RateLimit = -1
					continue
				}
				var f float64
				if _, err := fmt.Sscan(v, &f); err != nil || f <= 0 {
					return d.Errf("rate_limit must be a positive number of queries per second, or off")
				}
				c.RateLimit = f
			case "burst":
				var n int
				if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
					return d.Errf("burst must be a positive whole number")
				}
				c.Burst = n
			}
		default:
			return d.Errf("unrecognized challenge_zone subdirective: %s", key)
		}
	}
	return nil
}

// ChallengeZoneNames returns the challenge zones this config serves,
// without the trailing dot.
func (a *App) ChallengeZoneNames() []string {
	var out []string
	for _, srv := range a.zoneServers {
		out = append(out, srv.ZoneNames()...)
	}
	return out
}

// RegisterACMEDNS creates an acme-dns registration in zone, one of the
// challenge zones this config serves, audited as made by actor; the
// response holds the password, shown only once. A zone not served or an
// allowfrom that is not a list of networks is an *InvalidInput.
func (a *App) RegisterACMEDNS(ctx context.Context, actor, zone string, allow []string) (challengezone.RegisterResponse, error) {
	zone = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(zone)), ".")
	if served := a.ChallengeZoneNames(); !slices.Contains(served, zone) {
		return challengezone.RegisterResponse{}, &InvalidInput{Field: "zone",
			Message: fmt.Sprintf("zone must be one of the challenge zones this node serves (%s)", strings.Join(served, ", "))}
	}
	if err := challengezone.CheckNetworks(allow); err != nil {
		return challengezone.RegisterResponse{}, &InvalidInput{Field: "allowfrom", Message: "allowfrom: " + err.Error()}
	}
	return challengezone.Register(ctx, a.store, a.nodeID, actor, zone, allow, nil)
}

// InvalidInput is a request the app refuses, naming the field at fault.
type InvalidInput struct{ Field, Message string }

func (e *InvalidInput) Error() string { return e.Message }
