package acmetest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const (
	// dnsDynamicTTL is the TTL of TXT, A and AAAA answers. Zero keeps any
	// resolver or client from caching values that tests change constantly.
	dnsDynamicTTL = 0
	// dnsStaticTTL is the TTL of the SOA and NS records of a zone apex.
	dnsStaticTTL = 300
	// dnsShutdownTimeout bounds how long Cleanup waits for in-flight
	// queries to finish.
	dnsShutdownTimeout = 5 * time.Second
)

// DNSServer is an in-process authoritative DNS server for tests, listening on
// 127.0.0.1 with UDP and TCP on the same port (Pebble's VA queries over TCP,
// most resolvers start with UDP).
//
// For each zone it serves the apex SOA and NS records (the NS host is
// "ns1.<zone>" with an A record of 127.0.0.1), so zone-cut discovery such as
// certmagic's FindZoneByFQDN works against it. TXT, A and AAAA records come
// from an in-memory store that is safe for concurrent use. Answers carry the
// AA bit; names that exist but lack the queried type get NODATA (NOERROR, SOA
// in the authority section), names that do not exist get NXDOMAIN, and names
// outside every zone get REFUSED. Wildcard and CNAME records are not
// supported.
//
// The server only answers for itself: the NS host's port is the random port
// of Addr, not 53, so clients that look up the authoritative servers and then
// dial them on port 53 (certmagic's optional authoritative propagation check)
// must be pointed at Addr directly instead.
type DNSServer struct {
	addr  string
	zones []string // canonical FQDNs, longest first

	udp, tcp  *dns.Server
	serveDone chan struct{}

	mu      sync.Mutex
	txt     map[string][]string
	ips     map[string][]netip.Addr
	cnames  map[string]cname // see SetCNAME
	serial  uint32
	changed chan struct{} // closed and replaced on every change or query
	queries []DNSQuery

	// publishing delays TXT records added by AddTXT (see SetPublishDelay);
	// pending holds those not yet visible, by name and value, with the
	// generation that will publish them
	publishing func(name, value string) <-chan struct{}
	pending    map[string]uint64
	gen        uint64
	stopped    chan struct{}
}

// DNSQuery is one query received by a DNSServer, as recorded in its query log.
type DNSQuery struct {
	// Name is the queried name as a lower-case FQDN with a trailing dot.
	Name string
	// Type is the query type, e.g. "TXT" or "SOA".
	Type string
	// Net is the transport the query arrived on: "udp" or "tcp".
	Net string
	// Rcode is the response code that was sent, e.g. "NOERROR" or "NXDOMAIN".
	Rcode string
}

// DNSRecord is one record held in a DNSServer's store.
type DNSRecord struct {
	// Name is the owner name as a lower-case FQDN with a trailing dot.
	Name string
	// Type is "TXT", "A" or "AAAA".
	Type string
	// Value is the TXT text (the character-strings joined) or the address.
	Value string
}

// NewDNSServer starts an authoritative DNS server for zones on a random
// loopback port and stops it with t.Cleanup. Zone names may be given with or
// without the trailing dot. It fails the test if no zone is given, a zone name
// is invalid, or the server cannot listen.
func NewDNSServer(t testing.TB, zones ...string) *DNSServer {
	t.Helper()
	if len(zones) == 0 {
		t.Fatalf("starting dns server: no zones given")
	}
	s := &DNSServer{
		txt:     make(map[string][]string),
		ips:     make(map[string][]netip.Addr),
		cnames:  make(map[string]cname),
		serial:  1,
		changed: make(chan struct{}),
		pending: make(map[string]uint64),
		stopped: make(chan struct{}),
	}
	for _, z := range zones {
		c := canonicalName(z)
		if _, ok := dns.IsDomainName(c); !ok || c == "." {
			t.Fatalf("starting dns server: invalid zone name %q", z)
		}
		if !slices.Contains(s.zones, c) {
			s.zones = append(s.zones, c)
		}
	}
	// Longest first, so that a zone nested inside another one wins.
	sort.Slice(s.zones, func(i, j int) bool { return dns.CountLabel(s.zones[i]) > dns.CountLabel(s.zones[j]) })
	for _, z := range s.zones {
		s.ips[nsHost(z)] = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}

	pc, l, err := listenUDPAndTCP()
	if err != nil {
		t.Fatalf("starting dns server: %v", err)
	}
	s.addr = pc.LocalAddr().String()

	udpStarted, tcpStarted := make(chan struct{}), make(chan struct{})
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(udpStarted) }}
	s.tcp = &dns.Server{Listener: l, Handler: s, NotifyStartedFunc: func() { close(tcpStarted) }}
	s.serveDone = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.udp.ActivateAndServe() }()
	go func() { defer wg.Done(); _ = s.tcp.ActivateAndServe() }()
	go func() { wg.Wait(); close(s.serveDone) }()
	<-udpStarted
	<-tcpStarted

	t.Cleanup(func() {
		close(s.stopped)
		ctx, cancel := context.WithTimeout(context.Background(), dnsShutdownTimeout)
		defer cancel()
		if err := s.udp.ShutdownContext(ctx); err != nil {
			t.Errorf("stopping dns server (udp): %v", err)
		}
		if err := s.tcp.ShutdownContext(ctx); err != nil {
			t.Errorf("stopping dns server (tcp): %v", err)
		}
		<-s.serveDone
	})
	return s
}

// listenUDPAndTCP binds a UDP socket on a random loopback port and a TCP
// listener on the same port, retrying when the TCP port is already taken.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	const attempts = 20
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listening on udp: %w", err)
		}
		l, err := net.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		lastErr = err
		_ = pc.Close()
	}
	return nil, nil, fmt.Errorf("listening on tcp at the udp port: %w", lastErr)
}

// Addr returns the host:port the server listens on, for both UDP and TCP.
func (s *DNSServer) Addr() string { return s.addr }

// Zones returns the zones the server is authoritative for, as lower-case FQDNs
// with a trailing dot, longest first.
func (s *DNSServer) Zones() []string { return slices.Clone(s.zones) }

// Zone returns the zone that name belongs to (the longest served zone that is
// name or a parent of it) and whether there is one.
func (s *DNSServer) Zone(name string) (string, bool) {
	z := s.zoneOf(canonicalName(name))
	return z, z != ""
}

// NSHost returns the name of the nameserver advertised in zone's NS record.
func (s *DNSServer) NSHost(zone string) string { return nsHost(canonicalName(zone)) }

// SetTXT replaces the TXT records of name with values; no values removes them.
// Names outside the served zones are stored but never answered (REFUSED).
func (s *DNSServer) SetTXT(name string, values ...string) {
	name = canonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	var vals []string
	for _, v := range values {
		if !slices.Contains(vals, v) {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		delete(s.txt, name)
	} else {
		s.txt[name] = vals
	}
	s.changedLocked(true)
}

// AddTXT adds TXT records to name. A value already present is not duplicated,
// since DNS RRsets are sets. With a publication delay (SetPublishDelay), a new
// value is served only once its delay is over.
func (s *DNSServer) AddTXT(name string, values ...string) {
	name = canonicalName(name)
	s.mu.Lock()
	delay := s.publishing
	var later []string
	for _, v := range values {
		switch {
		case slices.Contains(s.txt[name], v):
		case delay != nil:
			if _, ok := s.pending[name+"\x00"+v]; !ok {
				later = append(later, v)
			}
		default:
			s.txt[name] = append(s.txt[name], v)
		}
	}
	s.changedLocked(true)
	gens := make([]uint64, len(later))
	for i, v := range later {
		s.gen++
		gens[i] = s.gen
		s.pending[name+"\x00"+v] = s.gen
	}
	s.mu.Unlock()
	for i, v := range later {
		ready := delay(name, v)
		go s.publishWhen(ready, name, v, gens[i])
	}
}

// SetPublishDelay makes the TXT records added from now on served only once
// the channel delay returns for them is closed (a nil channel: at once), the
// way a DNS provider's nameservers serve a change some time after its API
// accepted it. A record deleted before then is never served. nil turns the
// delay off for records added afterwards.
func (s *DNSServer) SetPublishDelay(delay func(name, value string) <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publishing = delay
}

// PublishAfter is a SetPublishDelay function that serves every record d
// after it was added.
func PublishAfter(d time.Duration) func(name, value string) <-chan struct{} {
	return func(string, string) <-chan struct{} {
		ch := make(chan struct{})
		time.AfterFunc(d, func() { close(ch) })
		return ch
	}
}

func (s *DNSServer) publishWhen(ready <-chan struct{}, name, value string, gen uint64) {
	if ready != nil {
		select {
		case <-ready:
		case <-s.stopped:
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := name + "\x00" + value
	if s.pending[key] != gen {
		return // deleted (or deleted and added again) meanwhile
	}
	delete(s.pending, key)
	if !slices.Contains(s.txt[name], value) {
		s.txt[name] = append(s.txt[name], value)
	}
	s.changedLocked(true)
}

// DeleteTXT removes the TXT record of name with the given value and reports
// whether it existed.
func (s *DNSServer) DeleteTXT(name, value string) bool {
	name = canonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pending[name+"\x00"+value]; ok {
		delete(s.pending, name+"\x00"+value)
		s.changedLocked(true)
		return true
	}
	i := slices.Index(s.txt[name], value)
	if i < 0 {
		return false
	}
	s.txt[name] = slices.Delete(s.txt[name], i, i+1)
	if len(s.txt[name]) == 0 {
		delete(s.txt, name)
	}
	s.changedLocked(true)
	return true
}

// TXT returns a copy of the TXT values of name.
func (s *DNSServer) TXT(name string) []string {
	name = canonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.txt[name])
}

// SetAddrs replaces the A and AAAA records of name with addrs; no addrs
// removes them. Pebble's VA tries the first AAAA answer before any A answer
// for HTTP-01 and TLS-ALPN-01, so give a name only the address family its
// challenge server listens on.
func (s *DNSServer) SetAddrs(name string, addrs ...netip.Addr) {
	name = canonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsValid() && !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	if len(list) == 0 {
		delete(s.ips, name)
	} else {
		s.ips[name] = list
	}
	s.changedLocked(true)
}

// Addrs returns a copy of the A and AAAA addresses of name.
func (s *DNSServer) Addrs(name string) []netip.Addr {
	name = canonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ips[name])
}

// Records returns a snapshot of every TXT, A and AAAA record in the store,
// sorted by name, type and value. It includes the A record of each zone's NS
// host.
func (s *DNSServer) Records() []DNSRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []DNSRecord
	for name, vals := range s.txt {
		for _, v := range vals {
			recs = append(recs, DNSRecord{Name: name, Type: "TXT", Value: v})
		}
	}
	for name, addrs := range s.ips {
		for _, a := range addrs {
			typ := "A"
			if a.Is6() {
				typ = "AAAA"
			}
			recs = append(recs, DNSRecord{Name: name, Type: typ, Value: a.String()})
		}
	}
	sort.Slice(recs, func(i, j int) bool {
		a, b := recs[i], recs[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.Value < b.Value
	})
	return recs
}

// WaitTXT blocks until name has a TXT record with value, or ctx is done. It
// wakes on every change to the store rather than polling.
func (s *DNSServer) WaitTXT(ctx context.Context, name, value string) error {
	name = canonicalName(name)
	err := s.wait(ctx, func() bool { return slices.Contains(s.txt[name], value) })
	if err != nil {
		return fmt.Errorf("waiting for txt %q at %s: %w", value, name, err)
	}
	return nil
}

// WaitNoTXT blocks until name has no TXT record with value (with an empty
// value: no TXT record at all), or ctx is done.
func (s *DNSServer) WaitNoTXT(ctx context.Context, name, value string) error {
	name = canonicalName(name)
	err := s.wait(ctx, func() bool {
		if value == "" {
			return len(s.txt[name]) == 0
		}
		return !slices.Contains(s.txt[name], value)
	})
	if err != nil {
		return fmt.Errorf("waiting for txt %q at %s to be removed: %w", value, name, err)
	}
	return nil
}

// WaitQueries blocks until the server has answered at least n queries for
// name (any type, any transport) since the last ResetQueryLog, or ctx is done.
func (s *DNSServer) WaitQueries(ctx context.Context, name string, n int) error {
	name = canonicalName(name)
	err := s.wait(ctx, func() bool { return s.countLocked(name) >= n })
	if err != nil {
		return fmt.Errorf("waiting for %d queries for %s: %w", n, name, err)
	}
	return nil
}

// wait blocks until cond, evaluated with s.mu held, is true or ctx is done.
func (s *DNSServer) wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Queries returns how many queries for name (any type, any transport) the
// server has answered since the last ResetQueryLog.
func (s *DNSServer) Queries(name string) int {
	name = canonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.countLocked(name)
}

func (s *DNSServer) countLocked(name string) int {
	n := 0
	for _, q := range s.queries {
		if q.Name == name {
			n++
		}
	}
	return n
}

// QueryLog returns a copy of every query answered since the last
// ResetQueryLog, in arrival order.
func (s *DNSServer) QueryLog() []DNSQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queries)
}

// ResetQueryLog clears the query log and the per-name counters.
func (s *DNSServer) ResetQueryLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = nil
}

// changedLocked wakes every waiter; a data change also bumps the SOA serial.
func (s *DNSServer) changedLocked(data bool) {
	if data {
		s.serial++
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// ServeDNS implements dns.Handler.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false

	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}

	var logged DNSQuery
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
	default:
		q := req.Question[0]
		logged = DNSQuery{Name: canonicalName(q.Name), Type: dns.TypeToString[q.Qtype], Net: network}
		if !s.answerCNAME(m, q) {
			s.answer(m, q)
		}
	}

	if opt := req.IsEdns0(); opt != nil {
		size := max(opt.UDPSize(), dns.MinMsgSize)
		m.SetEdns0(size, false)
		if network == "udp" {
			m.Truncate(int(size))
		}
	} else if network == "udp" {
		m.Truncate(dns.MinMsgSize)
	}

	if logged.Name != "" {
		logged.Rcode = dns.RcodeToString[m.Rcode]
		s.mu.Lock()
		s.queries = append(s.queries, logged)
		s.changedLocked(false)
		s.mu.Unlock()
	}
	_ = w.WriteMsg(m)
}

// answer fills m with the authoritative answer to q.
func (s *DNSServer) answer(m *dns.Msg, q dns.Question) {
	name := canonicalName(q.Name)
	zone := s.zoneOf(name)
	if zone == "" || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true

	s.mu.Lock()
	defer s.mu.Unlock()

	soa := s.soaLocked(zone)
	hdr := func(t uint16, ttl uint32) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	var rrs []dns.RR
	want := func(t uint16) bool { return q.Qtype == t || q.Qtype == dns.TypeANY }
	if name == zone && want(dns.TypeSOA) {
		apex := *soa
		apex.Hdr = hdr(dns.TypeSOA, dnsStaticTTL)
		rrs = append(rrs, &apex)
	}
	if name == zone && want(dns.TypeNS) {
		rrs = append(rrs, &dns.NS{Hdr: hdr(dns.TypeNS, dnsStaticTTL), Ns: nsHost(zone)})
	}
	if want(dns.TypeTXT) {
		for _, v := range s.txt[name] {
			rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT, dnsDynamicTTL), Txt: splitTXT(v)})
		}
	}
	for _, a := range s.ips[name] {
		switch {
		case a.Is4() && want(dns.TypeA):
			rrs = append(rrs, &dns.A{Hdr: hdr(dns.TypeA, dnsDynamicTTL), A: a.AsSlice()})
		case a.Is6() && want(dns.TypeAAAA):
			rrs = append(rrs, &dns.AAAA{Hdr: hdr(dns.TypeAAAA, dnsDynamicTTL), AAAA: a.AsSlice()})
		}
	}

	switch {
	case len(rrs) > 0:
		m.Answer = rrs
	case s.existsLocked(zone, name):
		m.Ns = []dns.RR{soa} // NODATA
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	}
}

// existsLocked reports whether name owns any record or is an empty
// non-terminal (an ancestor of a name that owns records) within zone.
func (s *DNSServer) existsLocked(zone, name string) bool {
	if name == zone {
		return true
	}
	owns := func(owner string) bool {
		return owner == name || (dns.IsSubDomain(name, owner) && s.zoneOf(owner) == zone)
	}
	for owner := range s.txt {
		if owns(owner) {
			return true
		}
	}
	for owner := range s.ips {
		if owns(owner) {
			return true
		}
	}
	return false
}

// soaLocked returns zone's SOA record; its serial counts store changes and its
// negative-caching TTL is zero so NXDOMAIN and NODATA are never cached.
func (s *DNSServer) soaLocked(zone string) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsStaticTTL},
		Ns:      nsHost(zone),
		Mbox:    "hostmaster." + zone,
		Serial:  s.serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  0,
	}
}

// zoneOf returns the longest served zone containing name, or "".
func (s *DNSServer) zoneOf(name string) string {
	for _, z := range s.zones {
		if dns.IsSubDomain(z, name) {
			return z
		}
	}
	return ""
}

// String implements fmt.Stringer for test failure messages.
func (s *DNSServer) String() string {
	return "dns server " + s.addr + " for " + strings.Join(s.zones, ",")
}

func nsHost(zone string) string { return "ns1." + zone }

// canonicalName lower-cases name and adds the trailing dot.
func canonicalName(name string) string {
	return dns.CanonicalName(strings.TrimSpace(name))
}

// splitTXT splits a TXT value into RFC 1035 character-strings of at most 255
// octets; resolvers (and Pebble's VA) join them back together.
func splitTXT(v string) []string {
	const maxLen = 255
	if len(v) <= maxLen {
		return []string{v}
	}
	var parts []string
	for len(v) > maxLen {
		parts = append(parts, v[:maxLen])
		v = v[maxLen:]
	}
	return append(parts, v)
}

// LookupTXT queries the server over network ("udp" or "tcp") for the TXT
// records of name, the way a validating CA would, and returns the values (the
// character-strings of each record joined) and the response code name, e.g.
// "NOERROR", "NXDOMAIN" or "REFUSED".
func (s *DNSServer) LookupTXT(ctx context.Context, network, name string) ([]string, string, error) {
	c := &dns.Client{Net: network}
	m := new(dns.Msg)
	m.SetQuestion(canonicalName(name), dns.TypeTXT)
	in, _, err := c.ExchangeContext(ctx, m, s.addr)
	if err != nil {
		return nil, "", fmt.Errorf("querying txt %s over %s: %w", name, network, err)
	}
	var vals []string
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			vals = append(vals, strings.Join(t.Txt, ""))
		}
	}
	return vals, dns.RcodeToString[in.Rcode], nil
}

// Serial returns the current SOA serial, which increases on every store change.
func (s *DNSServer) Serial() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serial
}

// FreeDNSAddr returns a loopback address whose port is free for both UDP
// and TCP at the time of the call, for a DNS server under test.
func FreeDNSAddr(t testing.TB) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free port for UDP and TCP")
	return ""
}
