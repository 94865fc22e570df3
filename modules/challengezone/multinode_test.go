package challengezone_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/modules/challengezone"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// TestTwoNodesOnPostgres: two nodes share one PostgreSQL database, each
// with its own store and DNS server. A challenge record published through
// node A's delegated provider client (directly in the zone, and under a
// name's label after its CNAME is seen) is answered by node B's DNS server
// (node A's is not even running), and node A's cleanup removes it from
// node B's answers.
func TestTwoNodesOnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	sealer := storagetest.NewSealer(t)
	open := func() storage.Store {
		st, err := postgres.Open(t.Context(), dsn, sealer, 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	stA, stB := open(), open()
	nodeB := startServer(t, stB, func(c *challengezone.Config) { c.CacheTTL = -1 })
	bAddr := nodeB.Addrs()[0]
	parent := acmetest.NewDNSServer(t, "example.com")

	svcA := dnsproviders.New(stA, dnsproviders.Options{Node: "a", Resolvers: []string{parent.Addr()}})
	p, err := svcA.Create(t.Context(), "tester", dnsproviders.Config{Name: "zone", Type: dnsproviders.TypeDelegated,
		Zones: []string{"acme.example.net"}, Nameservers: []string{bAddr}})
	if err != nil {
		t.Fatal(err)
	}
	// verification publishes a probe in the zone and finds node B serving it
	if v, _, err := svcA.Verify(t.Context(), "tester", p.ID); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
	d, err := svcA.Delegation(t.Context(), p.ID, "shop.example.com")
	if err != nil || d.OK {
		t.Fatalf("delegation before the CNAME: %+v %v", d, err)
	}
	if _, err := svcA.Present(t.Context(), p.ID, "wf_x", "_acme-challenge.shop.example.com", "v-cname"); err == nil ||
		!strings.Contains(err.Error(), d.CNAME) {
		t.Fatalf("present without the CNAME: %v", err)
	}
	if recs, _ := svcA.Records(t.Context(), p.ID); len(recs) != 0 {
		t.Fatal("a record was stored although its CNAME is missing")
	}
	parent.SetCNAME("_acme-challenge.shop.example.com", d.Target, bAddr)

	for _, tc := range []struct{ name, fqdn, served, value string }{
		{"direct", "_acme-challenge.host.acme.example.net", "_acme-challenge.host.acme.example.net.", "v-direct"},
		{"through the CNAME", "_acme-challenge.shop.example.com", d.Target + ".", "v-cname"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := svcA.Present(t.Context(), p.ID, "wf_x", tc.fqdn, tc.value)
			if err != nil {
				t.Fatal(err)
			}
			in := query(t, "udp", bAddr, tc.served, dns.TypeTXT, 0)
			if len(in.Answer) != 1 || in.Answer[0].(*dns.TXT).Txt[0] != tc.value {
				t.Fatalf("node B answers %v", in)
			}
			if _, err := svcA.WaitPropagation(t.Context(), rec); err != nil {
				t.Fatalf("propagation (node B's server, then through the CNAME): %v", err)
			}
			if err := svcA.CleanUp(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			if in := query(t, "udp", bAddr, tc.served, dns.TypeTXT, 0); in.Rcode != dns.RcodeNameError {
				t.Fatalf("after node A's cleanup node B answers %v", in)
			}
		})
	}

	t.Run("propagation follows the CNAME", func(t *testing.T) {
		one := caddy.Duration(time.Second)
		if _, err := svcA.Update(t.Context(), "tester", p.ID, dnsproviders.Patch{PropagationTimeout: &one}); err != nil {
			t.Fatal(err)
		}
		rec, err := svcA.Present(t.Context(), p.ID, "wf_y", "_acme-challenge.shop.example.com", "v-moved")
		if err != nil {
			t.Fatal(err)
		}
		defer svcA.CleanUp(t.Context(), rec)
		// node B serves the label, but the name no longer leads there
		parent.SetCNAME("_acme-challenge.shop.example.com", "elsewhere.example.org", "")
		_, err = svcA.WaitPropagation(t.Context(), rec)
		if !errors.Is(err, dnsproviders.ErrPropagationTimeout) || !strings.Contains(err.Error(), "not served through its CNAME") {
			t.Fatalf("got %v, want a propagation timeout through the CNAME", err)
		}
	})
}
