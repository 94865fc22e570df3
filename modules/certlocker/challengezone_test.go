package certlocker

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
)

func soa(t *testing.T, network, addr string) int {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("acme.example.net.", dns.TypeSOA)
	in, _, err := (&dns.Client{Net: network, Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s SOA query: %v", network, err)
	}
	return in.Rcode
}

// TestChallengeZoneAcrossReloads: the DNS server runs with its config; a
// reload to a changed config on the same address starts the new server
// before the old one stops, and a reload without challenge zones stops it.
func TestChallengeZoneAcrossReloads(t *testing.T) {
	r := newRunning(t)
	addr := acmetest.FreeDNSAddr(t)
	zone := func(ttl string) string {
		return `"challenge_zones":[{"zone":"acme.example.net","listen":["` + addr + `"],"ns":["ns1.acme.example.net"],"ttl":"` + ttl + `"}]`
	}
	a := r.mustLoad(`"certlocker":` + r.app(zone("1s")))
	if got := a.ChallengeZoneNames(); strings.Join(got, ",") != "acme.example.net" {
		t.Fatalf("zones %v", got)
	}
	for _, n := range []string{"udp", "tcp"} {
		if rc := soa(t, n, addr); rc != dns.RcodeSuccess {
			t.Fatalf("%s: %s", n, dns.RcodeToString[rc])
		}
	}
	b := r.mustLoad(`"certlocker":` + r.app(zone("2s")))
	if a == b || len(b.ChallengeZoneServers()) != 1 {
		t.Fatal("the reload did not start a new app with a DNS server")
	}
	for _, n := range []string{"udp", "tcp"} {
		if rc := soa(t, n, addr); rc != dns.RcodeSuccess {
			t.Fatalf("after the reload, %s: %s", n, dns.RcodeToString[rc])
		}
	}
	r.mustLoad(`"certlocker":` + r.app(""))
	if _, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(new(dns.Msg).SetQuestion("acme.example.net.", dns.TypeSOA), addr); err == nil {
		t.Fatal("the DNS server still answers after a reload without challenge zones")
	}
}

// TestChallengeZoneConfigErrors: what provisioning refuses, naming the entry.
func TestChallengeZoneConfigErrors(t *testing.T) {
	r := newRunning(t)
	cases := map[string]struct{ zones, want string }{
		"no listen":            {`[{"zone":"a.example","ns":["ns1.a.example"]}]`, "challenge_zones[0] (a.example): listen must name"},
		"no ns":                {`[{"zone":"a.example","listen":["127.0.0.1:0"]}]`, "ns must name at least one nameserver"},
		"bad zone":             {`[{"zone":"a b","listen":["127.0.0.1:0"],"ns":["ns1.a.example"]}]`, "is not a valid domain name"},
		"twice":                {`[{"zone":"a.example","listen":["127.0.0.1:0"],"ns":["n.a.example"]},{"zone":"A.example.","listen":["127.0.0.1:0"],"ns":["n.a.example"]}]`, "is given twice"},
		"partly shared listen": {`[{"zone":"a.example","listen":["127.0.0.1:1053","127.0.0.1:1054"],"ns":["n.a.example"]},{"zone":"b.example","listen":["127.0.0.1:1053"],"ns":["n.b.example"]}]`, "give zones that share an address the same listen addresses"},
		"bad address":          {`[{"zone":"a.example","listen":["127.0.0.1:0"],"ns":["n.a.example"],"addresses":["x"]}]`, `address "x" is not an IP address`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := r.load(`"certlocker":` + r.app(`"challenge_zones":`+tc.zones))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
