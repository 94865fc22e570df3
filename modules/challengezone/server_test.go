package challengezone_test

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/modules/challengezone"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// frozenClock is a clock tests move by hand.
type frozenClock struct{ ns atomic.Int64 }

func newClock() *frozenClock {
	c := &frozenClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *frozenClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *frozenClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// zoneFixture is a store with a delegated provider client on the zone.
type zoneFixture struct {
	st       storage.Store
	provider *storage.DNSProvider
}

func newFixture(t testing.TB, backend string) *zoneFixture {
	t.Helper()
	st := storagetest.OpenStore(t, backend, 8)
	p := &storage.DNSProvider{Name: "delegated", Type: "delegated", Credentials: storage.NewSecret([]byte("{}")),
		Zones: []string{"acme.example.net"}, Status: "verified", ManagedBy: storage.ManagedByAPI}
	if err := st.DNSProviders().Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return &zoneFixture{st: st, provider: p}
}

func (f *zoneFixture) put(t testing.TB, name, value string) *storage.ChallengeRecord {
	t.Helper()
	r := &storage.ChallengeRecord{ProviderID: f.provider.ID, Zone: "acme.example.net", Name: name, Type: "TXT", Value: value,
		CreatedAt: time.Now()}
	if err := f.st.DNSProviders().PutRecord(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func startServer(t testing.TB, st storage.Store, mod func(*challengezone.Config)) *challengezone.Server {
	t.Helper()
	cfg := challengezone.Config{
		Zones:  []challengezone.Zone{{Name: "acme.example.net", NS: []string{"ns1.acme.example.net", "ns2.example.org"}, Addresses: []string{"127.0.0.1"}}},
		Listen: []string{"127.0.0.1:0"},
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := challengezone.New(storage.ChallengeZoneOf(st), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

func query(t testing.TB, network, addr, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 65535}
	in, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, dns.TypeToString[qtype], name, err)
	}
	return in
}

func TestServerAnswers(t *testing.T) {
	f := newFixture(t, "sqlite")
	f.put(t, "k7q2", "token-value-1")
	f.put(t, "k7q2", "token-value-2")
	f.put(t, "_acme-challenge.host", "direct-value")
	srv := startServer(t, f.st, func(c *challengezone.Config) { c.CacheTTL = -1 })
	addr := srv.Addrs()[0]

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			cases := []struct {
				name    string
				qname   string
				qtype   uint16
				rcode   int
				answers int
				aa      bool
			}{
				{"soa at apex", "acme.example.net", dns.TypeSOA, dns.RcodeSuccess, 1, true},
				{"ns at apex", "ACME.example.net.", dns.TypeNS, dns.RcodeSuccess, 2, true},
				{"glue address", "ns1.acme.example.net", dns.TypeA, dns.RcodeSuccess, 1, true},
				{"txt of a label", "k7q2.acme.example.net", dns.TypeTXT, dns.RcodeSuccess, 2, true},
				{"txt of a direct name", "_acme-challenge.host.acme.example.net", dns.TypeTXT, dns.RcodeSuccess, 1, true},
				{"nodata", "k7q2.acme.example.net", dns.TypeA, dns.RcodeSuccess, 0, true},
				{"nxdomain", "nothing.acme.example.net", dns.TypeTXT, dns.RcodeNameError, 0, true},
				{"outside the zone", "example.com", dns.TypeTXT, dns.RcodeRefused, 0, false},
				{"parent of the zone", "example.net", dns.TypeSOA, dns.RcodeRefused, 0, false},
				{"any", "k7q2.acme.example.net", dns.TypeANY, dns.RcodeRefused, 0, false},
				{"zone transfer", "acme.example.net", dns.TypeAXFR, dns.RcodeRefused, 0, false},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					in := query(t, network, addr, tc.qname, tc.qtype, 1232)
					if in.Rcode != tc.rcode || len(in.Answer) != tc.answers || in.Authoritative != tc.aa || in.RecursionAvailable {
						t.Fatalf("got %s with %d answers (aa %v, ra %v), want %s with %d (aa %v):\n%v",
							dns.RcodeToString[in.Rcode], len(in.Answer), in.Authoritative, in.RecursionAvailable,
							dns.RcodeToString[tc.rcode], tc.answers, tc.aa, in)
					}
					if tc.rcode == dns.RcodeSuccess && tc.answers == 0 || tc.rcode == dns.RcodeNameError {
						if len(in.Ns) != 1 || in.Ns[0].Header().Rrtype != dns.TypeSOA || in.Ns[0].Header().Ttl != 1 {
							t.Fatalf("negative answer without the SOA (TTL 1) in authority: %v", in.Ns)
						}
					}
					if in.IsEdns0() == nil {
						t.Fatalf("no EDNS0 in the answer to an EDNS0 query")
					}
					for _, rr := range in.Answer {
						if txt, ok := rr.(*dns.TXT); ok && txt.Hdr.Ttl != 1 {
							t.Fatalf("TXT TTL %d, want 1", txt.Hdr.Ttl)
						}
					}
				})
			}
		})
	}
	in := query(t, "udp", addr, "k7q2.acme.example.net", dns.TypeTXT, 0)
	got := map[string]bool{}
	for _, rr := range in.Answer {
		got[strings.Join(rr.(*dns.TXT).Txt, "")] = true
	}
	if !got["token-value-1"] || !got["token-value-2"] {
		t.Fatalf("TXT values %v", got)
	}
}

// TestServerRecordLifecycle: a record is served once stored and no longer
// once deleted; the cache serves a stored answer at most CacheTTL and a
// negative one at most a fifth of it.
func TestServerRecordLifecycle(t *testing.T) {
	f := newFixture(t, "sqlite")
	clock := newClock()
	srv := startServer(t, f.st, func(c *challengezone.Config) { c.CacheTTL = time.Second; c.Now = clock.Now })
	addr := srv.Addrs()[0]
	if in := query(t, "udp", addr, "lbl.acme.example.net", dns.TypeTXT, 0); in.Rcode != dns.RcodeNameError {
		t.Fatalf("before publishing: %s", dns.RcodeToString[in.Rcode])
	}
	r := f.put(t, "lbl", "v1")
	clock.Add(199 * time.Millisecond)
	if in := query(t, "udp", addr, "lbl.acme.example.net", dns.TypeTXT, 0); in.Rcode != dns.RcodeNameError {
		t.Fatalf("within a fifth of the cache TTL the negative answer stays: %s", dns.RcodeToString[in.Rcode])
	}
	clock.Add(time.Millisecond)
	if in := query(t, "udp", addr, "lbl.acme.example.net", dns.TypeTXT, 0); len(in.Answer) != 1 {
		t.Fatalf("after a fifth of the cache TTL: %v", in)
	}
	if err := f.st.DNSProviders().DeleteRecord(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
	clock.Add(999 * time.Millisecond)
	if in := query(t, "udp", addr, "lbl.acme.example.net", dns.TypeTXT, 0); len(in.Answer) != 1 {
		t.Fatalf("within the cache TTL the stored answer stays: %v", in)
	}
	clock.Add(time.Millisecond)
	if in := query(t, "udp", addr, "lbl.acme.example.net", dns.TypeTXT, 0); in.Rcode != dns.RcodeNameError {
		t.Fatalf("after cleanup and the cache TTL: %v", in)
	}
}

// TestServerHostile: what an attacker or a broken client sends gets a
// small, correct answer or none, and never grows memory.
func TestServerHostile(t *testing.T) {
	f := newFixture(t, "sqlite")
	for i := range 40 {
		f.put(t, "many", strings.Repeat(fmt.Sprint(i%10), 200))
	}
	clock := newClock()
	srv := startServer(t, f.st, func(c *challengezone.Config) { c.Now = clock.Now; c.Rate = 10; c.Burst = 50 })
	addr := srv.Addrs()[0]

	t.Run("huge EDNS buffer", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("many.acme.example.net.", dns.TypeTXT)
		m.SetEdns0(65535, false)
		raw := exchangeRaw(t, "udp", addr, mustPack(t, m))
		if len(raw) > 1232 {
			t.Fatalf("UDP answer of %d bytes to a %d-byte query", len(raw), len(mustPack(t, m)))
		}
		in := new(dns.Msg)
		if err := in.Unpack(raw); err != nil || !in.Truncated {
			t.Fatalf("a large answer must be truncated (tc) over UDP: %v %v", err, in.MsgHdr)
		}
		full := query(t, "tcp", addr, "many.acme.example.net", dns.TypeTXT, 65535)
		if len(full.Answer) != 40 {
			t.Fatalf("over TCP: %d answers, want 40", len(full.Answer))
		}
	})
	t.Run("no EDNS", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("many.acme.example.net.", dns.TypeTXT)
		if raw := exchangeRaw(t, "udp", addr, mustPack(t, m)); len(raw) > 512 {
			t.Fatalf("answer of %d bytes without EDNS0", len(raw))
		}
	})
	t.Run("EDNS version 1", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("many.acme.example.net.", dns.TypeTXT)
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
		in := new(dns.Msg)
		if err := in.Unpack(exchangeRaw(t, "udp", addr, mustPack(t, m))); err != nil || in.Rcode != dns.RcodeBadVers {
			t.Fatalf("got %v %v, want BADVERS", err, dns.RcodeToString[in.Rcode])
		}
	})
	t.Run("truncated packet", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("k.acme.example.net.", dns.TypeTXT)
		raw := mustPack(t, m)
		for _, cut := range []int{len(raw) - 3, 14, 5} {
			resp := exchangeRawMaybe(t, addr, raw[:cut])
			if resp != nil {
				in := new(dns.Msg)
				if err := in.Unpack(resp); err != nil || in.Rcode != dns.RcodeFormatError || len(resp) > cut+len(raw) {
					t.Fatalf("cut at %d: got %v %v", cut, err, in)
				}
			}
		}
		// still serving
		if in := query(t, "udp", addr, "acme.example.net", dns.TypeSOA, 0); in.Rcode != dns.RcodeSuccess {
			t.Fatalf("after malformed packets: %v", in)
		}
	})
	t.Run("10k queries from one source", func(t *testing.T) {
		clock.Add(time.Hour) // a full bucket
		before := srv.Stats()
		conn, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		const n = 10000
		for i := range n {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("r%d.acme.example.net.", i), dns.TypeTXT)
			if _, err := conn.Write(mustPack(t, m)); err != nil {
				t.Fatal(err)
			}
			if i%100 == 99 { // let the server keep up, so the kernel drops nothing
				waitFor(t, func() bool { st := srv.Stats(); return total(st)-total(before) == uint64(i+1) })
			}
		}
		st := srv.Stats()
		answered := (st.NXDomain + st.Answered) - (before.NXDomain + before.Answered)
		dropped := st.Dropped - before.Dropped
		if answered != 50 || dropped != n-50 {
			t.Fatalf("answered %d and dropped %d of %d queries within one instant, want the burst (50) answered", answered, dropped, n)
		}
		// the server still answers others, and this source once its bucket refills
		clock.Add(time.Second)
		if in := query(t, "udp", addr, "acme.example.net", dns.TypeSOA, 0); in.Rcode != dns.RcodeSuccess {
			t.Fatalf("after the flood: %v", in)
		}
	})
	t.Run("bounded memory", func(t *testing.T) {
		// 3×DefaultCacheSize random names: the cache stays within its bound
		for i := range 3 * challengezone.DefaultCacheSize {
			clock.Add(time.Second) // bucket refills; cache entries of before stay fresh for CacheTTL only
			if i%1000 == 0 {
				if n := challengezone.CacheSize(srv); n > challengezone.DefaultCacheSize {
					t.Fatalf("cache holds %d entries", n)
				}
			}
			challengezone.Lookup(srv, fmt.Sprintf("rnd%d.acme.example.net.", i))
		}
		if n := challengezone.CacheSize(srv); n > challengezone.DefaultCacheSize {
			t.Fatalf("cache holds %d entries", n)
		}
		if n := challengezone.LimiterSize(srv, 3*challengezone.DefaultSources); n > challengezone.DefaultSources {
			t.Fatalf("rate limiter tracks %d sources", n)
		}
	})
}

func total(s challengezone.Stats) uint64 {
	return s.Answered + s.Refused + s.NXDomain + s.Dropped + s.Failed
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(time.Millisecond)
	}
}

func mustPack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exchangeRaw(t testing.TB, network, addr string, q []byte) []byte {
	t.Helper()
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// exchangeRawMaybe sends q over UDP and returns the answer, or nil if the
// server sent none (it may drop what it cannot parse): a following SOA
// query on the same socket proves the server is past it.
func exchangeRawMaybe(t testing.TB, addr string, q []byte) []byte {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(q); err != nil {
		t.Fatal(err)
	}
	probe := new(dns.Msg)
	probe.SetQuestion("acme.example.net.", dns.TypeSOA)
	probe.Id = 0xbeef
	if _, err := conn.Write(mustPack(t, probe)); err != nil {
		t.Fatal(err)
	}
	var first []byte
	for {
		buf := make([]byte, 65535)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no answer to the probe after a malformed packet: %v", err)
		}
		in := new(dns.Msg)
		if in.Unpack(buf[:n]) == nil && in.Id == 0xbeef && len(in.Question) == 1 && in.Question[0].Qtype == dns.TypeSOA {
			return first
		}
		first = buf[:n]
	}
}
