package acmetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// exchange sends one query to s over network and fails the test on a
// transport error.
func exchange(t *testing.T, s *DNSServer, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	in, _, err := c.ExchangeContext(t.Context(), m, s.Addr())
	if err != nil {
		t.Fatalf("exchanging %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return in
}

// rrStrings renders the data of rrs, e.g. "TXT v" or "A 127.0.0.1".
func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		var data string
		switch v := rr.(type) {
		case *dns.TXT:
			data = strings.Join(v.Txt, "")
		case *dns.A:
			data = v.A.String()
		case *dns.AAAA:
			data = v.AAAA.String()
		case *dns.NS:
			data = v.Ns
		case *dns.SOA:
			data = v.Ns
		}
		out = append(out, dns.TypeToString[rr.Header().Rrtype]+" "+data)
	}
	slices.Sort(out)
	return out
}

func TestDNSServerAnswers(t *testing.T) {
	t.Parallel()
	s := NewDNSServer(t, "example.test", "Sub.Example.Test.")
	s.SetTXT("_acme-challenge.example.test", "token-1", "token-2")
	s.SetTXT("deep.empty.example.test.", "x")
	s.SetAddrs("www.example.test", netip.MustParseAddr("127.0.0.1"))
	s.SetAddrs("v6.example.test", netip.MustParseAddr("::1"))
	long := strings.Repeat("a", 300)
	s.SetTXT("long.example.test", long)

	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		aa        bool
		answer    []string
		authority []string
	}{
		{name: "apex SOA", qname: "example.test", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, aa: true, answer: []string{"SOA ns1.example.test."}},
		{name: "apex NS", qname: "example.test", qtype: dns.TypeNS, rcode: dns.RcodeSuccess, aa: true, answer: []string{"NS ns1.example.test."}},
		{name: "NS host A", qname: "ns1.example.test", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, answer: []string{"A 127.0.0.1"}},
		{name: "NS host AAAA is NODATA", qname: "ns1.example.test", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess, aa: true, authority: []string{"SOA ns1.example.test."}},
		{name: "TXT", qname: "_acme-challenge.example.test", qtype: dns.TypeTXT, rcode: dns.RcodeSuccess, aa: true, answer: []string{"TXT token-1", "TXT token-2"}},
		{name: "TXT name is case-insensitive", qname: "_ACME-Challenge.EXAMPLE.test", qtype: dns.TypeTXT, rcode: dns.RcodeSuccess, aa: true, answer: []string{"TXT token-1", "TXT token-2"}},
		{name: "long TXT is split and joins back", qname: "long.example.test", qtype: dns.TypeTXT, rcode: dns.RcodeSuccess, aa: true, answer: []string{"TXT " + long}},
		{name: "A of a name with only TXT is NODATA", qname: "_acme-challenge.example.test", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, authority: []string{"SOA ns1.example.test."}},
		{name: "A", qname: "www.example.test", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, answer: []string{"A 127.0.0.1"}},
		{name: "AAAA", qname: "v6.example.test", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess, aa: true, answer: []string{"AAAA ::1"}},
		{name: "ANY", qname: "www.example.test", qtype: dns.TypeANY, rcode: dns.RcodeSuccess, aa: true, answer: []string{"A 127.0.0.1"}},
		{name: "SOA below apex is NODATA", qname: "www.example.test", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, aa: true, authority: []string{"SOA ns1.example.test."}},
		{name: "empty non-terminal is NODATA", qname: "empty.example.test", qtype: dns.TypeTXT, rcode: dns.RcodeSuccess, aa: true, authority: []string{"SOA ns1.example.test."}},
		{name: "missing name is NXDOMAIN", qname: "nope.example.test", qtype: dns.TypeTXT, rcode: dns.RcodeNameError, aa: true, authority: []string{"SOA ns1.example.test."}},
		{name: "nested zone has its own apex", qname: "sub.example.test", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, aa: true, answer: []string{"SOA ns1.sub.example.test."}},
		{name: "nested zone NXDOMAIN uses its SOA", qname: "x.sub.example.test", qtype: dns.TypeTXT, rcode: dns.RcodeNameError, aa: true, authority: []string{"SOA ns1.sub.example.test."}},
		{name: "parent of zone is REFUSED", qname: "test", qtype: dns.TypeSOA, rcode: dns.RcodeRefused},
		{name: "other zone is REFUSED", qname: "example.com", qtype: dns.TypeTXT, rcode: dns.RcodeRefused},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				t.Parallel()
				in := exchange(t, s, network, tc.qname, tc.qtype, true)
				if in.Rcode != tc.rcode {
					t.Errorf("rcode = %s, want %s", dns.RcodeToString[in.Rcode], dns.RcodeToString[tc.rcode])
				}
				if in.Authoritative != tc.aa {
					t.Errorf("AA = %t, want %t", in.Authoritative, tc.aa)
				}
				if in.RecursionAvailable {
					t.Errorf("RA set by an authoritative-only server")
				}
				if got := rrStrings(in.Answer); !slices.Equal(got, tc.answer) {
					t.Errorf("answer = %q, want %q", got, tc.answer)
				}
				if got := rrStrings(in.Ns); !slices.Equal(got, tc.authority) {
					t.Errorf("authority = %q, want %q", got, tc.authority)
				}
			})
		}
	}
}

func TestDNSServerTruncatesUDP(t *testing.T) {
	t.Parallel()
	s := NewDNSServer(t, "example.test")
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 40)))
	}
	s.SetTXT("big.example.test", many...)

	tests := []struct {
		name      string
		network   string
		edns      bool
		truncated bool
	}{
		{name: "udp without edns", network: "udp", edns: false, truncated: true},
		{name: "udp with edns 1232", network: "udp", edns: true, truncated: true},
		{name: "tcp", network: "tcp", edns: false, truncated: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := exchange(t, s, tc.network, "big.example.test", dns.TypeTXT, tc.edns)
			if in.Truncated != tc.truncated {
				t.Fatalf("TC = %t, want %t", in.Truncated, tc.truncated)
			}
			if !tc.truncated && len(in.Answer) != len(many) {
				t.Fatalf("got %d answers, want %d", len(in.Answer), len(many))
			}
		})
	}
}

func TestDNSServerStore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		do   func(s *DNSServer)
		want []string
	}{
		{name: "set", do: func(s *DNSServer) { s.SetTXT("a.example.test", "1", "2") }, want: []string{"1", "2"}},
		{name: "set dedupes", do: func(s *DNSServer) { s.SetTXT("a.example.test", "1", "1") }, want: []string{"1"}},
		{name: "set replaces", do: func(s *DNSServer) { s.SetTXT("a.example.test", "1"); s.SetTXT("A.example.test.", "2") }, want: []string{"2"}},
		{name: "set nothing clears", do: func(s *DNSServer) { s.SetTXT("a.example.test", "1"); s.SetTXT("a.example.test") }, want: nil},
		{name: "add appends", do: func(s *DNSServer) { s.AddTXT("a.example.test", "1"); s.AddTXT("a.example.test", "2", "1") }, want: []string{"1", "2"}},
		{name: "delete one", do: func(s *DNSServer) { s.SetTXT("a.example.test", "1", "2"); s.DeleteTXT("a.example.test", "1") }, want: []string{"2"}},
		{name: "delete missing", do: func(s *DNSServer) { s.SetTXT("a.example.test", "1"); s.DeleteTXT("a.example.test", "9") }, want: []string{"1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewDNSServer(t, "example.test")
			tc.do(s)
			if got := s.TXT("a.example.test."); !slices.Equal(got, tc.want) {
				t.Fatalf("TXT = %q, want %q", got, tc.want)
			}
			vals, rcode, err := s.LookupTXT(t.Context(), "tcp", "a.example.test")
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(vals)
			if !slices.Equal(vals, tc.want) {
				t.Fatalf("served TXT = %q (%s), want %q", vals, rcode, tc.want)
			}
		})
	}
}

func TestDNSServerRecordsAndSerial(t *testing.T) {
	t.Parallel()
	s := NewDNSServer(t, "example.test")
	serial := s.Serial()
	s.SetTXT("b.example.test", "v")
	s.SetAddrs("b.example.test", netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1"))
	if s.Serial() != serial+2 {
		t.Errorf("serial = %d, want %d after two changes", s.Serial(), serial+2)
	}
	want := []DNSRecord{
		{Name: "b.example.test.", Type: "A", Value: "127.0.0.2"},
		{Name: "b.example.test.", Type: "AAAA", Value: "::1"},
		{Name: "b.example.test.", Type: "TXT", Value: "v"},
		{Name: "ns1.example.test.", Type: "A", Value: "127.0.0.1"},
	}
	if got := s.Records(); !slices.Equal(got, want) {
		t.Fatalf("Records() = %+v, want %+v", got, want)
	}
	if z, ok := s.Zone("x.b.EXAMPLE.test"); !ok || z != "example.test." {
		t.Fatalf("Zone() = %q, %t", z, ok)
	}
	if _, ok := s.Zone("example.com"); ok {
		t.Fatalf("Zone(example.com) found a zone")
	}
}

func TestDNSServerWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		wait    func(ctx context.Context, s *DNSServer) error
		change  func(s *DNSServer)
		wantErr error
	}{
		{
			name:   "txt appears",
			wait:   func(ctx context.Context, s *DNSServer) error { return s.WaitTXT(ctx, "w.example.test", "v2") },
			change: func(s *DNSServer) { s.AddTXT("w.example.test", "v1"); s.AddTXT("w.example.test", "v2") },
		},
		{
			name:   "txt value goes away",
			wait:   func(ctx context.Context, s *DNSServer) error { return s.WaitNoTXT(ctx, "w.example.test", "v0") },
			change: func(s *DNSServer) { s.DeleteTXT("w.example.test", "v0") },
		},
		{
			name:   "all txt go away",
			wait:   func(ctx context.Context, s *DNSServer) error { return s.WaitNoTXT(ctx, "w.example.test", "") },
			change: func(s *DNSServer) { s.SetTXT("w.example.test") },
		},
		{
			name: "queries counted",
			wait: func(ctx context.Context, s *DNSServer) error { return s.WaitQueries(ctx, "q.example.test", 2) },
			change: func(s *DNSServer) {
				for _, network := range []string{"udp", "tcp"} {
					_, _, _ = s.LookupTXT(context.Background(), network, "q.example.test")
				}
			},
		},
		{
			name:    "deadline",
			wait:    func(ctx context.Context, s *DNSServer) error { return s.WaitTXT(ctx, "w.example.test", "never") },
			change:  func(s *DNSServer) { s.AddTXT("w.example.test", "other") },
			wantErr: context.DeadlineExceeded,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewDNSServer(t, "example.test")
			s.SetTXT("w.example.test", "v0")
			timeout := 10 * time.Second
			if tc.wantErr != nil {
				timeout = 200 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.wait(ctx, s) }()
			tc.change(s)
			err := <-done
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("wait error = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestDNSServerQueryLog(t *testing.T) {
	t.Parallel()
	s := NewDNSServer(t, "example.test")
	s.SetTXT("_acme-challenge.example.test", "v")
	for _, network := range []string{"udp", "tcp", "tcp"} {
		if _, _, err := s.LookupTXT(t.Context(), network, "_acme-challenge.example.test"); err != nil {
			t.Fatal(err)
		}
	}
	_, _, _ = s.LookupTXT(t.Context(), "udp", "outside.invalid")

	if n := s.Queries("_ACME-challenge.example.test"); n != 3 {
		t.Fatalf("Queries = %d, want 3", n)
	}
	want := []DNSQuery{
		{Name: "_acme-challenge.example.test.", Type: "TXT", Net: "udp", Rcode: "NOERROR"},
		{Name: "_acme-challenge.example.test.", Type: "TXT", Net: "tcp", Rcode: "NOERROR"},
		{Name: "_acme-challenge.example.test.", Type: "TXT", Net: "tcp", Rcode: "NOERROR"},
		{Name: "outside.invalid.", Type: "TXT", Net: "udp", Rcode: "REFUSED"},
	}
	if got := s.QueryLog(); !slices.Equal(got, want) {
		t.Fatalf("QueryLog = %+v, want %+v", got, want)
	}
	s.ResetQueryLog()
	if n := s.Queries("_acme-challenge.example.test"); n != 0 {
		t.Fatalf("Queries after reset = %d", n)
	}
}

// TestDNSServerFindZone checks that certmagic's zone-cut discovery, which
// walks up the name asking for SOA records, finds the right apex.
func TestDNSServerFindZone(t *testing.T) {
	t.Parallel()
	s := NewDNSServer(t, "example.test", "deep.sub.example.test")
	tests := []struct {
		name string
		fqdn string
		want string
	}{
		{name: "challenge name under apex", fqdn: "_acme-challenge.www.example.test.", want: "example.test."},
		{name: "apex itself", fqdn: "example.test.", want: "example.test."},
		{name: "nested zone", fqdn: "_acme-challenge.x.deep.sub.example.test.", want: "deep.sub.example.test."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := certmagic.FindZoneByFQDN(t.Context(), zap.NewNop(), tc.fqdn, []string{s.Addr()})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("zone = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewDNSServerListensOnLoopback(t *testing.T) {
	t.Parallel()
	s := NewDNSServer(t, "example.test")
	ap, err := netip.ParseAddrPort(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if !ap.Addr().IsLoopback() || ap.Port() == 0 {
		t.Fatalf("Addr() = %s, want a loopback address with a port", s.Addr())
	}
	if got := s.Zones(); !slices.Equal(got, []string{"example.test."}) {
		t.Fatalf("Zones() = %q", got)
	}
	if got := s.NSHost("EXAMPLE.test"); got != "ns1.example.test." {
		t.Fatalf("NSHost() = %q", got)
	}
}
