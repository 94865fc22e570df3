package dnsproviders

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/retry"
	"github.com/certlocker/caddy-certlocker/storage"
)

// queryTimeout bounds one DNS query.
const queryTimeout = 2 * time.Second

// Nameserver is an authoritative nameserver of a zone: its name and the
// addresses (host:port) it is queried at, IPv4 first.
type Nameserver struct {
	Host  string   `json:"host"`
	Addrs []string `json:"addrs"`
}

// WaitPropagation returns once every authoritative nameserver of the
// record's zone answers the record's TXT query with its value, and how long
// that took from the call. It queries the nameservers directly (not a
// recursive resolver, whose cache could answer from before the record
// existed), again and again with a back-off that starts at
// Options.PollInitial and doubles up to Options.PollMax, asking only the
// nameservers that have not answered yet, until the provider client's
// propagation timeout (ErrPropagationTimeout) or ctx ends. For a record a
// delegated provider client published under a name's label, it then
// follows the name's CNAME: the provider client's resolvers, asked for the
// name's TXT, must answer the value (what the CA's resolver sees).
func (s *Service) WaitPropagation(ctx context.Context, rec *storage.ChallengeRecord) (time.Duration, error) {
	start := time.Now()
	p, err := s.store.DNSProviders().Get(ctx, rec.ProviderID)
	if err != nil {
		return 0, err
	}
	d, err := s.waitAuthoritative(ctx, p, rec, start)
	if err != nil || p.Type != TypeDelegated || rec.ProviderRecordID == "" {
		return d, err
	}
	if err := s.waitThroughCNAME(ctx, p, rec, parseSettings(p).PropagationTimeout-d); err != nil {
		return time.Since(start), err
	}
	return time.Since(start), nil
}

func (s *Service) waitAuthoritative(ctx context.Context, p *storage.DNSProvider, rec *storage.ChallengeRecord, start time.Time) (time.Duration, error) {
	st := parseSettings(p)
	fqdn := dns.Fqdn(absoluteName(rec.Name, rec.Zone))
	wctx, cancel := context.WithTimeout(ctx, st.PropagationTimeout)
	defer cancel()
	servers, err := s.Nameservers(wctx, p, rec.Zone)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, err
	}
	o := s.options()
	pending := make(map[string]Nameserver, len(servers))
	last := make(map[string]string, len(servers))
	for _, ns := range servers {
		pending[ns.Host] = ns
	}
	interval := o.PollInitial
	for rounds := 1; ; rounds++ {
		var mu sync.Mutex
		var wg sync.WaitGroup
		round := make([]Nameserver, 0, len(pending))
		for _, ns := range pending {
			round = append(round, ns)
		}
		for _, ns := range round {
			host := ns.Host
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, answer := queryTXT(wctx, ns.Addrs, fqdn, rec.Value)
				mu.Lock()
				defer mu.Unlock()
				if ok {
					delete(pending, host)
				} else {
					last[host] = answer
				}
			}()
		}
		wg.Wait()
		if len(pending) == 0 {
			d := time.Since(start)
			if ce := s.logger.Check(zap.DebugLevel, "challenge record propagated"); ce != nil {
				ce.Write(zap.String("fqdn", fqdn), zap.Int("nameservers", len(servers)), zap.Int("rounds", rounds),
					zap.Duration("duration", d), zap.String("workflow_id", rec.WorkflowID))
			}
			return d, nil
		}
		if err := retry.Sleep(wctx, interval); err != nil {
			if ctx.Err() != nil {
				return time.Since(start), ctx.Err()
			}
			var missing []string
			for host := range pending {
				missing = append(missing, fmt.Sprintf("%s (%s)", host, last[host]))
			}
			sort.Strings(missing)
			return time.Since(start), fmt.Errorf("TXT record %s not served by %d of %d authoritative nameservers after %s: %s: %w",
				fqdn, len(pending), len(servers), st.PropagationTimeout, strings.Join(missing, ", "), ErrPropagationTimeout)
		}
		interval = min(interval*2, o.PollMax)
	}
}

// queryTXT asks one nameserver (at the first of its addresses that
// answers) for the TXT records of fqdn and reports whether value is among
// them, or what it answered instead.
func queryTXT(ctx context.Context, addrs []string, fqdn, value string) (bool, string) {
	answer := "no address"
	for _, addr := range addrs {
		in, err := exchange(ctx, addr, fqdn, dns.TypeTXT, false)
		if err != nil {
			answer = "no answer: " + err.Error()
			continue
		}
		if in.Rcode != dns.RcodeSuccess {
			return false, dns.RcodeToString[in.Rcode]
		}
		n := 0
		for _, rr := range in.Answer {
			if t, ok := rr.(*dns.TXT); ok {
				n++
				if strings.Join(t.Txt, "") == value {
					return true, "served"
				}
			}
		}
		return false, fmt.Sprintf("%d TXT record(s), none with the value", n)
	}
	return false, answer
}

// exchange sends one query over UDP, and again over TCP if truncated.
func exchange(ctx context.Context, server, name string, qtype uint16, recurse bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = recurse
	m.SetEdns0(1232, false)
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: queryTimeout}
	in, _, err := c.ExchangeContext(qctx, m, server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(qctx, m, server)
	}
	return in, err
}

// Nameservers returns the authoritative nameservers the propagation check
// queries for zone: the provider client's configured nameservers, or the
// zone's NS records (the SOA's primary if there are none) looked up through
// its resolvers, Options.Resolvers or the system's.
func (s *Service) Nameservers(ctx context.Context, p *storage.DNSProvider, zone string) ([]Nameserver, error) {
	st := parseSettings(p)
	if len(st.Nameservers) > 0 {
		out := make([]Nameserver, 0, len(st.Nameservers))
		for _, a := range st.Nameservers {
			out = append(out, Nameserver{Host: a, Addrs: []string{a}})
		}
		return out, nil
	}
	o := s.options()
	resolvers := st.Resolvers
	if len(resolvers) == 0 {
		resolvers = o.Resolvers
	}
	if len(resolvers) == 0 {
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cfg.Servers) == 0 {
			return nil, fmt.Errorf("finding the nameservers of zone %s: no resolvers configured and none in /etc/resolv.conf: %w", zone, ErrUnavailable)
		}
		for _, srv := range cfg.Servers {
			resolvers = append(resolvers, net.JoinHostPort(srv, cfg.Port))
		}
	}
	apex := dns.Fqdn(zone)
	in, err := lookup(ctx, resolvers, apex, dns.TypeNS)
	if err != nil {
		return nil, fmt.Errorf("finding the nameservers of zone %s: %w", zone, err)
	}
	glue := map[string][]string{}
	for _, rr := range in.Extra {
		switch a := rr.(type) {
		case *dns.A:
			glue[strings.ToLower(a.Hdr.Name)] = append(glue[strings.ToLower(a.Hdr.Name)], a.A.String())
		case *dns.AAAA:
			glue[strings.ToLower(a.Hdr.Name)+"6"] = append(glue[strings.ToLower(a.Hdr.Name)+"6"], a.AAAA.String())
		}
	}
	var hosts []string
	for _, rr := range in.Answer {
		if ns, ok := rr.(*dns.NS); ok && strings.EqualFold(ns.Hdr.Name, apex) {
			hosts = append(hosts, strings.ToLower(ns.Ns))
		}
	}
	if len(hosts) == 0 {
		soa, err := lookup(ctx, resolvers, apex, dns.TypeSOA)
		if err == nil {
			for _, rr := range soa.Answer {
				if s, ok := rr.(*dns.SOA); ok {
					hosts = append(hosts, strings.ToLower(s.Ns))
				}
			}
		}
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("finding the nameservers of zone %s: the resolvers know no NS or SOA record for it (is it delegated? set nameservers for a private zone): %w", zone, ErrZoneNotFound)
	}
	sort.Strings(hosts)
	port := strconv.Itoa(o.NameserverPort)
	var out []Nameserver
	for _, h := range hosts {
		v4, v6 := glue[h], glue[h+"6"]
		if len(v4) == 0 && len(v6) == 0 {
			v4 = lookupAddrs(ctx, resolvers, h, dns.TypeA)
			v6 = lookupAddrs(ctx, resolvers, h, dns.TypeAAAA)
		}
		ns := Nameserver{Host: h}
		for _, a := range append(v4, v6...) {
			ns.Addrs = append(ns.Addrs, net.JoinHostPort(a, port))
		}
		if len(ns.Addrs) == 0 {
			return nil, fmt.Errorf("finding the nameservers of zone %s: nameserver %s has no address: %w", zone, h, ErrUnavailable)
		}
		out = append(out, ns)
	}
	return out, nil
}

// lookup asks the resolvers in turn, recursively, until one answers.
func lookup(ctx context.Context, resolvers []string, name string, qtype uint16) (*dns.Msg, error) {
	var last error
	for _, r := range resolvers {
		in, err := exchange(ctx, r, name, qtype, true)
		if err != nil {
			last = fmt.Errorf("resolver %s: %v", r, err)
			continue
		}
		if in.Rcode != dns.RcodeSuccess {
			last = fmt.Errorf("resolver %s answered %s for %s %s", r, dns.RcodeToString[in.Rcode], dns.TypeToString[qtype], name)
			continue
		}
		return in, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if last == nil {
		last = errors.New("no resolver")
	}
	return nil, fmt.Errorf("%w: %w", last, ErrUnavailable)
}

func lookupAddrs(ctx context.Context, resolvers []string, host string, qtype uint16) []string {
	in, err := lookup(ctx, resolvers, host, qtype)
	if err != nil {
		return nil
	}
	var out []string
	for _, rr := range in.Answer {
		switch a := rr.(type) {
		case *dns.A:
			out = append(out, a.A.String())
		case *dns.AAAA:
			out = append(out, a.AAAA.String())
		}
	}
	return out
}

// absoluteName joins a record name relative to zone ("@" for the apex)
// with the zone, without the trailing dot.
func absoluteName(name, zone string) string {
	if name == "@" || name == "" {
		return zone
	}
	return name + "." + zone
}

// relativeName is name (a FQDN without the trailing dot, inside zone)
// relative to zone.
func relativeName(name, zone string) string {
	if name == zone {
		return "@"
	}
	return strings.TrimSuffix(name, "."+zone)
}

// zoneFor returns the longest of zones that is name or a parent of it.
func zoneFor(zones []string, name string) string {
	best := ""
	for _, z := range zones {
		if (name == z || strings.HasSuffix(name, "."+z)) && len(z) > len(best) {
			best = z
		}
	}
	return best
}
