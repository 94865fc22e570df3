package workflow_test

import (
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// The bar of the workflow engine, with the real DNS provider store: a
// wildcard and its apex over dns-01 published through the Cloudflare API
// stand-in into the authoritative DNS server Pebble queries, and a third
// name over http-01 answered by the challenge handler, in one order.
func TestIssueThroughCloudflare(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	cf := acmetest.NewCloudflare(t, e.dns, acmetest.WithCloudflareZones(zone))
	const token = "cf-engine-test-token-0123456789abcdef"
	cf.AddToken(token, acmetest.PermZoneRead(zone), acmetest.PermDNSEdit(zone))
	_, portStr, _ := net.SplitHostPort(e.dns.Addr())
	nsPort, _ := strconv.Atoi(portStr)
	dns := dnsproviders.New(e.store, dnsproviders.Options{Node: "node-a", HTTPClient: cf.HTTPClient(),
		Resolvers: []string{e.dns.Addr()}, NameserverPort: nsPort, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	creds, _ := json.Marshal(map[string]string{"api_token": token})
	prov, err := dns.Create(t.Context(), "test", dnsproviders.Config{Name: "cf", Type: "cloudflare", Credentials: creds, Zones: []string{zone}})
	if err != nil {
		t.Fatal(err)
	}
	_, opts := e.engine("node-a", nil)
	eng, err := workflow.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetDeps(workflow.Deps{Clients: e.clients, DNS: dns, Inventory: e.inv})
	www := e.name("www")
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{
		{Value: "*." + zone, Challenge: "dns-01", DNSProviderID: prov.ID},
		{Value: zone, Challenge: "dns-01", DNSProviderID: prov.ID},
		{Value: www, Challenge: "http-01"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued {
		t.Fatalf("workflow %s: %s", w.State, w.Status)
	}
	x := leaf(t, e.store, w.CertificateID)
	slices.Sort(x.DNSNames)
	if !slices.Equal(x.DNSNames, []string{"*." + zone, zone, www}) {
		t.Fatalf("names %v", x.DNSNames)
	}
	// each dns-01 identifier's record went through the API exactly once,
	// was removed exactly once, and is gone from the API and from DNS
	if n := cf.RequestCount(acmetest.EndpointCreateRecord); n != 2 {
		t.Fatalf("%d records created through the Cloudflare API, want 2 (one per dns-01 identifier)", n)
	}
	if n := cf.RequestCount(acmetest.EndpointDeleteRecord); n != 2 {
		t.Fatalf("%d records deleted through the Cloudflare API, want 2 (one per dns-01 identifier)", n)
	}
	if recs := cf.Records(zone); len(recs) != 0 {
		t.Fatalf("records left at Cloudflare: %+v", recs)
	}
	if txt := e.dns.TXT("_acme-challenge." + zone); len(txt) != 0 {
		t.Fatalf("TXT left in DNS: %v", txt)
	}
	if left, _ := e.store.DNSProviders().ListRecords(t.Context(), "", time.Time{}); len(left) != 0 {
		t.Fatalf("%d challenge records left in the store", len(left))
	}
	// the measured propagation of each dns-01 identifier is on the timeline
	evs, err := e.store.Workflows().Events(t.Context(), w.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"*." + zone, zone} {
		found := false
		for _, ev := range evs {
			if ev.Identifier == id && ev.Step == workflow.StepValidating && strings.Contains(ev.Message, "served by every authoritative nameserver") {
				found = true
			}
		}
		if !found {
			t.Errorf("no propagation event for %s on the timeline", id)
		}
	}
}
