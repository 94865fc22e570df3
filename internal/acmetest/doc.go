// Package acmetest is the end-to-end test harness for ACME issuance: real
// components, started in-process on loopback and stopped with t.Cleanup.
//
//   - NewPebble runs Pebble (github.com/letsencrypt/pebble/v2 v2.10.3) as the
//     ACME CA, with real challenge validation.
//   - NewDNSServer runs an authoritative DNS server (UDP and TCP on one port)
//     whose TXT, A and AAAA records tests control; Pebble's VA resolves
//     against it.
//   - NewCloudflare fakes the one remote service, the Cloudflare v4 API, in
//     Cloudflare's shapes, and publishes the TXT records written through it
//     to the DNS server, so libdns/cloudflare can drive real DNS-01.
//
// A typical DNS-01 setup:
//
//	dns := acmetest.NewDNSServer(t, "example.test")
//	cf := acmetest.NewCloudflare(t, dns)
//	cf.AddToken("token", acmetest.PermZoneRead("example.test"), acmetest.PermDNSEdit("example.test"))
//	ca := acmetest.NewPebble(t, acmetest.PebbleOptions{DNSServer: dns.Addr()})
//	provider := cf.Provider("token", "") // a *cloudflare.Provider for libdns
//	// ACME client: ca.DirectoryURL(), ca.HTTPClient(); verify with ca.RootPool().
//
// Waiting is event-driven: DNSServer.WaitTXT and friends wake on every change
// of the record store, so tests never need to sleep.
package acmetest
