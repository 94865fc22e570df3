// Package challengezone is CertLocker's authoritative DNS server for
// challenge zones: zones delegated to CertLocker (acme.example.net, with
// _acme-challenge names elsewhere CNAMEd into it) or private zones it is
// authoritative for outright. It answers SOA and NS at each zone's apex and
// TXT records read from storage (storage.ChallengeZoneStore), so every
// node sharing a database answers the same: a challenge record published
// through one node is served by all.
//
// It is built to be safe on the open Internet: it answers only for its
// zones (REFUSED for any other name, so it is never an open resolver),
// never answers ANY, AXFR or IXFR, keeps UDP answers within the smaller of
// the client's EDNS0 buffer and 1232 bytes (truncated otherwise, so the
// client retries over TCP), and limits the queries each source may send
// (queries over the limit are dropped), so it cannot be used as an
// amplifier.
package challengezone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Defaults of Config.
const (
	DefaultTTL         = time.Second
	DefaultStaticTTL   = 5 * time.Minute
	DefaultCacheTTL    = 500 * time.Millisecond
	DefaultRate        = 100 // queries per second per source
	DefaultBurst       = 200
	DefaultCacheSize   = 10000
	DefaultSources     = 65536
	maxUDPSize         = 1232 // the DNS flag day 2020 size: no IP fragmentation
	lookupTimeout      = 2 * time.Second
	tcpReadTimeout     = 2 * time.Second
	defaultMaxTCPQuery = 16
	maxTCPConns        = 512
)

// Zone is one zone the server is authoritative for.
type Zone struct {
	// Name is the zone's apex, e.g. "acme.example.net".
	Name string
	// NS are the names of the zone's nameservers (at least one), as in
	// the NS records the parent zone delegates with.
	NS []string
	// Addresses (IPv4 or IPv6) are answered as A and AAAA records for the
	// nameserver names inside the zone (the targets of glue records).
	Addresses []string
	// Admin is the SOA's responsible mailbox in DNS form. Default:
	// hostmaster.<zone>.
	Admin string
}

// Config is what a Server serves and how.
type Config struct {
	Zones []Zone
	// Listen are the addresses (host:port) to listen on, each over UDP and
	// TCP. Port 0 picks a free port (the same for UDP and TCP).
	Listen []string
	// TTL of TXT answers and of negative answers (the SOA minimum).
	TTL time.Duration
	// StaticTTL of SOA, NS and nameserver address answers.
	StaticTTL time.Duration
	// CacheTTL is how long a TXT lookup in storage is reused (a lookup
	// that found nothing, a fifth of it); 0 takes DefaultCacheTTL,
	// negative disables the cache.
	CacheTTL time.Duration
	// Rate and Burst bound the queries per second each source (an IPv4
	// address, an IPv6 /64) may send; queries beyond are dropped. Rate
	// negative disables the limit.
	Rate  float64
	Burst int
	// Now is the clock of the rate limiter and the cache. Default:
	// time.Now.
	Now func() time.Time
	// Logger receives the server's logs. Default: no-op.
	Logger *zap.Logger
	// ReusePort binds with SO_REUSEPORT (Linux), so that the server of a
	// new config can start on the addresses of the one it replaces.
	ReusePort bool
}

// Server is an authoritative DNS server for challenge zones. It is safe for
// concurrent use.
type Server struct {
	store   storage.ChallengeZoneStore
	cfg     Config
	zones   []zone // longest name first
	logger  *zap.Logger
	limiter *limiter
	cache   *cache

	mu      sync.Mutex
	servers []*dns.Server
	addrs   []string
	stats   Stats
}

type zone struct {
	name  string // canonical FQDN
	ns    []string
	addrs []net.IP
	soa   *dns.SOA
}

// Stats counts what the server did since it started.
type Stats struct {
	Answered, Refused, NXDomain, Dropped, Failed uint64
}

// New validates cfg and returns a server over store; Start listens.
func New(store storage.ChallengeZoneStore, cfg Config) (*Server, error) {
	if store == nil {
		return nil, errors.New("creating challenge zone server: the storage backend has no challenge zone store")
	}
	if len(cfg.Zones) == 0 {
		return nil, errors.New("creating challenge zone server: no zone")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.StaticTTL <= 0 {
		cfg.StaticTTL = DefaultStaticTTL
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	s := &Server{store: store, cfg: cfg, logger: cfg.Logger}
	for i, z := range cfg.Zones {
		zz, err := buildZone(z, cfg)
		if err != nil {
			return nil, fmt.Errorf("creating challenge zone server: zones[%d]: %w", i, err)
		}
		for _, o := range s.zones {
			if o.name == zz.name {
				return nil, fmt.Errorf("creating challenge zone server: zones[%d]: zone %s is given twice", i, z.Name)
			}
		}
		s.zones = append(s.zones, zz)
	}
	slices.SortFunc(s.zones, func(a, b zone) int { return dns.CountLabel(b.name) - dns.CountLabel(a.name) })
	if cfg.Rate > 0 {
		s.limiter = newLimiter(cfg.Rate, cfg.Burst, DefaultSources)
	}
	if cfg.CacheTTL > 0 {
		s.cache = newCache(cfg.CacheTTL, DefaultCacheSize)
	}
	return s, nil
}

func buildZone(z Zone, cfg Config) (zone, error) {
	name, err := CanonicalZone(z.Name)
	if err != nil {
		return zone{}, err
	}
	out := zone{name: name}
	if len(z.NS) == 0 {
		return zone{}, fmt.Errorf("zone %s: ns must name at least one nameserver", z.Name)
	}
	for _, n := range z.NS {
		c := dns.CanonicalName(strings.TrimSpace(n))
		if _, ok := dns.IsDomainName(c); !ok || c == "." {
			return zone{}, fmt.Errorf("zone %s: ns %q is not a host name", z.Name, n)
		}
		out.ns = append(out.ns, c)
	}
	for _, a := range z.Addresses {
		ip := net.ParseIP(strings.TrimSpace(a))
		if ip == nil {
			return zone{}, fmt.Errorf("zone %s: address %q is not an IP address", z.Name, a)
		}
		out.addrs = append(out.addrs, ip)
	}
	admin := z.Admin
	if admin == "" {
		admin = "hostmaster." + name
	}
	neg := uint32(cfg.TTL / time.Second)
	out.soa = &dns.SOA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: uint32(cfg.StaticTTL / time.Second)},
		Ns: out.ns[0], Mbox: dns.CanonicalName(admin), Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: max(neg, 1)}
	return out, nil
}

// CanonicalZone checks a zone name and returns it as a lower-case FQDN
// with the trailing dot.
func CanonicalZone(name string) (string, error) {
	c := dns.CanonicalName(strings.TrimSpace(name))
	if _, ok := dns.IsDomainName(c); !ok || c == "." || strings.ContainsAny(c, "* ") {
		return "", fmt.Errorf("zone %q is not a valid domain name", name)
	}
	return c, nil
}

// Start listens on every Listen address, over UDP and TCP. On failure it
// stops what it started.
func (s *Server) Start() error {
	for _, addr := range s.cfg.Listen {
		pc, l, err := listen(addr, s.cfg.ReusePort)
		if err != nil {
			_ = s.Stop()
			return fmt.Errorf("starting challenge zone server: listening on %s: %w", addr, err)
		}
		udpUp, tcpUp := make(chan struct{}), make(chan struct{})
		udp := &dns.Server{PacketConn: pc, Handler: s, UDPSize: maxUDPSize, NotifyStartedFunc: func() { close(udpUp) }}
		// at most maxTCPConns connections at once: each holds a goroutine
		// and buffers until its read timeout
		tcp := &dns.Server{Listener: netutil.LimitListener(l, maxTCPConns), Handler: s, ReadTimeout: tcpReadTimeout, WriteTimeout: tcpReadTimeout,
			IdleTimeout: func() time.Duration { return tcpReadTimeout }, MaxTCPQueries: defaultMaxTCPQuery,
			NotifyStartedFunc: func() { close(tcpUp) }}
		go func() { _ = udp.ActivateAndServe() }()
		go func() { _ = tcp.ActivateAndServe() }()
		<-udpUp
		<-tcpUp
		s.mu.Lock()
		s.servers = append(s.servers, udp, tcp)
		s.addrs = append(s.addrs, pc.LocalAddr().String())
		s.mu.Unlock()
		s.logger.Info("challenge zone server listening", zap.String("address", pc.LocalAddr().String()),
			zap.Strings("zones", s.ZoneNames()))
	}
	return nil
}

// listen binds UDP and TCP on the same address; with port 0, on one free
// port for both.
func listen(addr string, reuse bool) (net.PacketConn, net.Listener, error) {
	var lc net.ListenConfig
	_, port, _ := net.SplitHostPort(addr)
	if reuse && port != "0" {
		lc.Control = reusePort
	}
	ctx := context.Background()
	var last error
	for range 20 {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, nil, err
		}
		l, err := lc.Listen(ctx, "tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		_ = pc.Close()
		last = err
		if port != "0" {
			break
		}
	}
	return nil, nil, last
}

// Addrs returns the addresses the server listens on (UDP and TCP), in the
// order of Config.Listen.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addrs)
}

// ZoneNames returns the served zones, without the trailing dot.
func (s *Server) ZoneNames() []string {
	out := make([]string, 0, len(s.zones))
	for _, z := range s.zones {
		out = append(out, strings.TrimSuffix(z.name, "."))
	}
	return out
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Stop closes every listener; queries in flight finish.
func (s *Server) Stop() error {
	s.mu.Lock()
	servers := s.servers
	s.servers, s.addrs = nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, srv.ShutdownContext(ctx))
		cancel()
	}
	return errors.Join(errs...)
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, isTCP := w.RemoteAddr().(*net.TCPAddr)
	if s.limiter != nil && !s.limiter.allow(sourceKey(w.RemoteAddr()), s.cfg.Now()) {
		// over the limit: no answer at all, so a spoofed source gets
		// nothing to amplify
		s.count(func(st *Stats) { st.Dropped++ })
		if isTCP {
			_ = w.Close()
		}
		return
	}
	m := s.answer(req)
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = int(min(max(opt.UDPSize(), dns.MinMsgSize), maxUDPSize))
		if opt.Version() != 0 {
			m = new(dns.Msg)
			m.SetReply(req)
			m.Authoritative = false
			m.Rcode = dns.RcodeBadVers
		}
		m.SetEdns0(maxUDPSize, false)
	}
	if !isTCP {
		m.Truncate(size)
	}
	switch m.Rcode {
	case dns.RcodeSuccess:
		s.count(func(st *Stats) { st.Answered++ })
	case dns.RcodeRefused:
		s.count(func(st *Stats) { st.Refused++ })
	case dns.RcodeNameError:
		s.count(func(st *Stats) { st.NXDomain++ })
	case dns.RcodeServerFailure:
		s.count(func(st *Stats) { st.Failed++ })
	}
	_ = w.WriteMsg(m)
}

// answer returns the reply to req (without EDNS0 or truncation).
func (s *Server) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false
	if req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	z := s.zoneOf(name)
	if z == nil || q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused // not ours: never recurse
		return m
	}
	switch q.Qtype {
	case dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB:
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	hdr := func(t uint16, ttl time.Duration) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: uint32(ttl / time.Second)}
	}
	exists := false
	if name == z.name {
		exists = true
		switch q.Qtype {
		case dns.TypeSOA:
			soa := *z.soa
			soa.Hdr = hdr(dns.TypeSOA, s.cfg.StaticTTL)
			m.Answer = append(m.Answer, &soa)
		case dns.TypeNS:
			for _, ns := range z.ns {
				m.Answer = append(m.Answer, &dns.NS{Hdr: hdr(dns.TypeNS, s.cfg.StaticTTL), Ns: ns})
			}
			m.Extra = append(m.Extra, s.glue(z)...)
		}
	}
	if slices.Contains(z.ns, name) && dns.IsSubDomain(z.name, name) && len(z.addrs) > 0 {
		exists = true
		for _, ip := range z.addrs {
			if ip4 := ip.To4(); ip4 != nil && q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA, s.cfg.StaticTTL), A: ip4})
			} else if ip4 == nil && q.Qtype == dns.TypeAAAA {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA, s.cfg.StaticTTL), AAAA: ip})
			}
		}
	}
	values, err := s.lookup(z, name)
	if err != nil {
		s.logger.Error("challenge zone lookup failed", zap.String("name", name), zap.Error(err))
		m.Authoritative = false
		m.Answer, m.Extra = nil, nil
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	if len(values) > 0 {
		exists = true
		if q.Qtype == dns.TypeTXT {
			for _, v := range values {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT, s.cfg.TTL), Txt: splitTXT(v)})
			}
		}
	}
	if len(m.Answer) == 0 {
		soa := *z.soa
		soa.Hdr.Ttl = soa.Minttl
		m.Ns = []dns.RR{&soa}
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
	return m
}

// lookup returns the stored TXT values at name in z, through the cache.
func (s *Server) lookup(z *zone, name string) ([]string, error) {
	zoneName := strings.TrimSuffix(z.name, ".")
	rel := "@"
	if name != z.name {
		rel = strings.TrimSuffix(name, "."+z.name)
	}
	key := rel + "\x00" + zoneName
	now := s.cfg.Now()
	if s.cache != nil {
		if v, ok := s.cache.get(key, now); ok {
			return v, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	v, err := s.store.ZoneTXT(ctx, zoneName, rel)
	if err != nil {
		return nil, err
	}
	if s.cache != nil {
		s.cache.put(key, v, now)
	}
	return v, nil
}

func (s *Server) glue(z *zone) []dns.RR {
	var out []dns.RR
	for _, ns := range z.ns {
		if !dns.IsSubDomain(z.name, ns) {
			continue
		}
		for _, ip := range z.addrs {
			h := dns.RR_Header{Name: ns, Class: dns.ClassINET, Ttl: uint32(s.cfg.StaticTTL / time.Second)}
			if ip4 := ip.To4(); ip4 != nil {
				h.Rrtype = dns.TypeA
				out = append(out, &dns.A{Hdr: h, A: ip4})
			} else {
				h.Rrtype = dns.TypeAAAA
				out = append(out, &dns.AAAA{Hdr: h, AAAA: ip})
			}
		}
	}
	return out
}

// zoneOf returns the served zone name is in, or nil.
func (s *Server) zoneOf(name string) *zone {
	for i := range s.zones {
		if dns.IsSubDomain(s.zones[i].name, name) {
			return &s.zones[i]
		}
	}
	return nil
}

// splitTXT cuts a value into character-strings of at most 255 bytes.
func splitTXT(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}

// Interface guards
var _ dns.Handler = (*Server)(nil)
