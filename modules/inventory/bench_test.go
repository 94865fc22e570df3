package inventory

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// BenchmarkInventory imports generated certificates (100,000 by default;
// CERTLOCKER_BENCH_CERTS to change) into SQLite and PostgreSQL side by side,
// through the import path (parse, verify, rate, store with names, audit),
// 500 per transaction, then measures p50/p95 of filtered 50-row pages and of
// the expiry report over the full table. Peak RSS is the process's.
//
//	go test -run '^$' -bench BenchmarkInventory -benchtime 1x -timeout 60m ./modules/inventory/
func BenchmarkInventory(b *testing.B) {
	n := 100_000
	if v := os.Getenv("CERTLOCKER_BENCH_CERTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			b.Fatalf("CERTLOCKER_BENCH_CERTS=%q: want a number >= 1000", v)
		}
	}
	p := newPKI(b)
	for _, name := range storagetest.Backends {
		b.Run(name, func(b *testing.B) {
			st := storagetest.OpenStore(b, name, 8)
			for b.Loop() {
				benchInventory(b, st, p, n)
			}
		})
	}
}

func benchInventory(b *testing.B, st storage.Store, p *pki, n int) {
	ctx := b.Context()
	svc, err := New(st, Options{Now: func() time.Time { return t0 }, SystemRoots: p.roots(),
		ExtraRoots: func(context.Context, string) (*x509.CertPool, error) { return nil, nil }})
	if err != nil {
		b.Fatal(err)
	}

	// generate in one goroutine, import in this one
	type gen struct {
		pem           []byte
		issuer, group string
	}
	ch := make(chan gen, 512)
	go func() {
		defer close(ch)
		k := testKey(b, "p256")
		for i := range n {
			tmpl := &x509.Certificate{
				SerialNumber: new(big.Int).SetInt64(int64(i) + 1<<40), Subject: pkix.Name{CommonName: fmt.Sprintf("h%d.s%d.example", i, i%1000)},
				DNSNames:  []string{fmt.Sprintf("h%d.s%d.example", i, i%1000), fmt.Sprintf("www.h%d.s%d.example", i, i%1000)},
				NotBefore: t0.Add(-time.Duration(i%120) * day), CRLDistributionPoints: []string{"http://crl.test/1.crl"},
				ExtraExtensions: []pkix.Extension{{Id: oidSCTList, Value: sctList(b, 2)}},
			}
			tmpl.NotAfter = tmpl.NotBefore.Add(90 * day)
			if i%7 == 0 {
				tmpl.NotAfter = tmpl.NotBefore.Add(200 * day)
			}
			if i%10 == 0 {
				tmpl.DNSNames = append(tmpl.DNSNames, fmt.Sprintf("*.s%d.example", i%1000))
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, p.inter.cert, k.Public(), p.inter.key)
			if err != nil {
				panic(err)
			}
			select {
			case ch <- gen{pem: append(pemOf(&x509.Certificate{Raw: der}), p.inter.pem...),
				issuer: fmt.Sprintf("iss_%d", i%10), group: fmt.Sprintf("g%02d", i%20)}:
			case <-ctx.Done():
				return
			}
		}
	}()

	start := time.Now()
	imported := 0
	for {
		batch := make([]gen, 0, 500)
		for g := range ch {
			batch = append(batch, g)
			if len(batch) == cap(batch) {
				break
			}
		}
		if len(batch) == 0 {
			break
		}
		err := st.InTx(ctx, func(tx storage.Store) error {
			s := svc.WithStore(tx)
			for _, g := range batch {
				if err := s.benchImport(ctx, g.pem, g.issuer, g.group); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		imported += len(batch)
	}
	took := time.Since(start)
	if imported != n {
		b.Fatalf("imported %d of %d", imported, n)
	}
	b.ReportMetric(float64(n)/took.Seconds(), "imports/s")
	b.ReportMetric(took.Seconds(), "import_s")

	// planner statistics and (PostgreSQL) the visibility map, as
	// autovacuum keeps them after a bulk insert; ANALYZE on SQLite
	if db, ok := st.(interface{ SQL() *sql.DB }); ok {
		stmt := "ANALYZE"
		if strings.Contains(b.Name(), "postgres") {
			stmt = "VACUUM ANALYZE"
		}
		if _, err := db.SQL().ExecContext(ctx, stmt); err != nil {
			b.Fatal(err)
		}
	}

	queries := []struct {
		name string
		run  func(i int) error
	}{
		{"page_all", func(int) error {
			_, _, err := svc.List(ctx, storage.CertificateFilter{}, storage.Page{Limit: 50})
			return err
		}},
		{"page_issuer_expiring_30d", func(i int) error {
			_, _, err := svc.List(ctx, storage.CertificateFilter{IssuerID: fmt.Sprintf("iss_%d", i%10),
				NotAfterBefore: t0.Add(30 * day)}, storage.Page{Limit: 50})
			return err
		}},
		{"page_group_rating", func(i int) error {
			_, _, err := svc.List(ctx, storage.CertificateFilter{Group: fmt.Sprintf("g%02d", i%20), Rating: "A"}, storage.Page{Limit: 50})
			return err
		}},
		{"page_domain", func(i int) error {
			list, _, err := svc.List(ctx, storage.CertificateFilter{Domain: fmt.Sprintf("www.h%d.s%d.example", i*37%n, i*37%n%1000)}, storage.Page{Limit: 50})
			if err == nil && len(list) != 1 {
				err = fmt.Errorf("domain filter found %d", len(list))
			}
			return err
		}},
		{"page_status_sorted_by_name", func(int) error {
			_, _, err := svc.List(ctx, storage.CertificateFilter{Status: storage.CertStatusActive, Sort: "-name"}, storage.Page{Limit: 50})
			return err
		}},
		{"page_10th_via_cursor", func(int) error {
			cursor := ""
			for range 10 {
				_, next, err := svc.List(ctx, storage.CertificateFilter{Group: "g03"}, storage.Page{Limit: 50, Cursor: cursor})
				if err != nil {
					return err
				}
				cursor = next
			}
			return nil
		}},
		{"expiry_report", func(int) error {
			_, err := svc.Expiry(ctx, ExpiryQuery{Filter: storage.CertificateFilter{Status: storage.CertStatusActive}})
			return err
		}},
		{"expiry_report_group", func(i int) error {
			_, err := svc.Expiry(ctx, ExpiryQuery{Filter: storage.CertificateFilter{Status: storage.CertStatusActive,
				Group: fmt.Sprintf("g%02d", i%20)}})
			return err
		}},
	}
	const runs = 200
	for _, q := range queries {
		times := make([]time.Duration, 0, runs)
		for i := range runs {
			start := time.Now()
			if err := q.run(i); err != nil {
				b.Fatalf("%s: %v", q.name, err)
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		per := time.Duration(1)
		if q.name == "page_10th_via_cursor" {
			per = 10 // report per page
		}
		b.ReportMetric(float64(times[runs/2]/per)/1e6, q.name+"_p50_ms")
		b.ReportMetric(float64(times[runs*95/100]/per)/1e6, q.name+"_p95_ms")
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "peak_rss_MB")
	}
}

// benchImport is Import's path (parse, verify, rate, store, audit) with
// the ACME client and group set, as issued certificates have them.
func (s *Service) benchImport(ctx context.Context, chainPEM []byte, issuerID, group string) error {
	p, err := Parse(chainPEM, nil)
	if err != nil {
		return err
	}
	if err := s.analyse(ctx, p, issuerID, s.now()); err != nil {
		return err
	}
	c, err := s.record(p, storage.CertSourceIssued, issuerID, "", "", group)
	if err != nil {
		return err
	}
	if err := s.store.Certificates().Put(ctx, c); err != nil {
		return err
	}
	d, _ := json.Marshal(map[string]any{"fingerprint": c.Fingerprint, "names": c.Names, "not_after": c.NotAfter})
	return s.audit(ctx, s.store, "bench", "certificate.import", c, "", d)
}
