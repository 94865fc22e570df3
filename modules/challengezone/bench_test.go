package challengezone_test

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/modules/challengezone"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// BenchmarkServeTXT measures the TXT queries per second one node answers
// over UDP, from SQLite and from PostgreSQL, with its read cache (500ms)
// and without, from 8 concurrent clients asking for 100 stored names (no
// rate limit). Run:
//
//	go test -run '^$' -bench BenchmarkServeTXT -benchtime 20000x ./modules/challengezone/
func BenchmarkServeTXT(b *testing.B) {
	for _, backend := range storagetest.Backends {
		for _, cached := range []bool{true, false} {
			name := fmt.Sprintf("%s/cache=%v", backend, cached)
			b.Run(name, func(b *testing.B) {
				f := newFixture(b, backend)
				for i := range 100 {
					f.put(b, fmt.Sprintf("lbl%d", i), fmt.Sprintf("value-%d", i))
				}
				srv := startServer(b, f.st, func(c *challengezone.Config) {
					c.Rate = -1
					if !cached {
						c.CacheTTL = -1
					}
				})
				addr := srv.Addrs()[0]
				const clients = 8
				per := b.N/clients + 1
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				errs := make(chan error, clients)
				for c := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						conn, err := net.Dial("udp", addr)
						if err != nil {
							errs <- err
							return
						}
						defer conn.Close()
						dc := &dns.Conn{Conn: conn}
						for i := range per {
							m := new(dns.Msg)
							m.SetQuestion(fmt.Sprintf("lbl%d.acme.example.net.", (c*per+i)%100), dns.TypeTXT)
							_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
							if err := dc.WriteMsg(m); err != nil {
								errs <- err
								return
							}
							in, err := dc.ReadMsg()
							if err != nil || len(in.Answer) != 1 {
								errs <- fmt.Errorf("query %d: %v %v", i, err, in)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(start)
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.ReportMetric(float64(clients*per)/el.Seconds(), "queries/s")
			})
		}
	}
}

// BenchmarkPublishToFirstAnswer measures the time from Present (the
// record stored by a delegated provider client) to the first answer with
// the value from the node's DNS server, polling it as a resolver would,
// with the default read cache (which may hold the name's negative answer
// from a query just before, as a CA asking early would cause). Run:
//
//	go test -run '^$' -bench BenchmarkPublishToFirstAnswer -benchtime 50x ./modules/challengezone/
func BenchmarkPublishToFirstAnswer(b *testing.B) {
	for _, backend := range storagetest.Backends {
		for _, warm := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/negative_cached=%v", backend, warm), func(b *testing.B) {
				f := newFixture(b, backend)
				srv := startServer(b, f.st, func(c *challengezone.Config) { c.Rate = -1 })
				addr := srv.Addrs()[0]
				svc := dnsproviders.New(f.st, dnsproviders.Options{Node: "bench"})
				c := &dns.Client{Timeout: 5 * time.Second}
				var total, worst time.Duration
				b.ResetTimer()
				for i := range b.N {
					name := fmt.Sprintf("_acme-challenge.h%d.acme.example.net.", i)
					if warm {
						m := new(dns.Msg)
						m.SetQuestion(name, dns.TypeTXT)
						if _, _, err := c.Exchange(m, addr); err != nil {
							b.Fatal(err)
						}
					}
					start := time.Now()
					if _, err := svc.Present(b.Context(), f.provider.ID, "", name, "v"); err != nil {
						b.Fatal(err)
					}
					for {
						m := new(dns.Msg)
						m.SetQuestion(name, dns.TypeTXT)
						in, _, err := c.Exchange(m, addr)
						if err != nil {
							b.Fatal(err)
						}
						if len(in.Answer) == 1 {
							break
						}
						time.Sleep(5 * time.Millisecond)
					}
					d := time.Since(start)
					total += d
					worst = max(worst, d)
				}
				b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/first-answer")
				b.ReportMetric(float64(worst.Microseconds())/1000, "ms-max")
			})
		}
	}
}
