package storagetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// testCertificateInventory covers what the inventory needs beyond
// testCertificates: the provenance columns, every sort in both directions
// with cursors, the expiry range filters, and the expiry counts and
// timeline.
func testCertificateInventory(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	base := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour

	// 60 certificates: expiries from base-10d to base+49d, three ACME
	// clients, two groups, every third one renewed.
	var all []*storage.Certificate
	for i := range 60 {
		c := newCert(1000+i, base.Add(time.Duration(i-10)*day), fmt.Sprintf("n%02d.inv.example", (i*37)%60))
		c.IssuerID = fmt.Sprintf("iss_%d", i%3)
		c.Group = []string{"web", "mail"}[i%2]
		c.Profile, c.CatalogID, c.Source = "shortlived", "letsencrypt", storage.CertSourceIssued
		c.Status = storage.CertStatusActive
		if i%3 == 0 {
			c.Status = storage.CertStatusRenewed
			c.ReplacedBy = "crt_next"
		}
		if i >= 50 {
			c.Source, c.CatalogID, c.IssuerID = storage.CertSourceImported, "", ""
		}
		c.Meta = json.RawMessage(`{"i":` + fmt.Sprint(i) + `}`)
		must(t, st.Certificates().Put(ctx, c))
		all = append(all, c)
	}
	got, err := st.Certificates().Get(ctx, all[3].ID)
	must(t, err)
	if got.Profile != "shortlived" || got.CatalogID != "letsencrypt" || got.Source != storage.CertSourceIssued ||
		got.ReplacedBy != "crt_next" || got.Status != storage.CertStatusRenewed {
		t.Fatalf("provenance did not round-trip: %+v", got)
	}
	got.Profile, got.CatalogID, got.ReplacedBy, got.Source = "classic", "other-ca", "", storage.CertSourceImported
	must(t, st.Certificates().Update(ctx, got))
	again, err := st.Certificates().Get(ctx, got.ID)
	must(t, err)
	if again.Profile != "classic" || again.CatalogID != "other-ca" || again.ReplacedBy != "" || again.Source != storage.CertSourceImported {
		t.Fatalf("update did not write provenance: %+v", again)
	}
	got.Profile, got.CatalogID, got.ReplacedBy, got.Source = "shortlived", "letsencrypt", "crt_next", storage.CertSourceIssued
	must(t, st.Certificates().Update(ctx, got))

	t.Run("sorts", func(t *testing.T) {
		keys := map[string]func(c *storage.Certificate) string{
			"expires": func(c *storage.Certificate) string { return fmt.Sprintf("%020d", c.NotAfter.UnixNano()) },
			"issued":  func(c *storage.Certificate) string { return fmt.Sprintf("%020d", c.NotBefore.UnixNano()) },
			"name":    func(c *storage.Certificate) string { return c.CommonName },
			"added":   func(c *storage.Certificate) string { return fmt.Sprintf("%020d", c.CreatedAt.UnixNano()) },
		}
		for _, name := range storage.CertificateSorts {
			for _, desc := range []bool{false, true} {
				spec := name
				if desc {
					spec = "-" + name
				}
				t.Run(spec, func(t *testing.T) {
					key := keys[name]
					var pages []*storage.Certificate
					cursor := ""
					for {
						page, next, err := st.Certificates().List(ctx, storage.CertificateFilter{Sort: spec, Group: "web"},
							storage.Page{Cursor: cursor, Limit: 7})
						must(t, err)
						pages = append(pages, page...)
						if next == "" {
							break
						}
						cursor = next
					}
					if len(pages) != 30 {
						t.Fatalf("paged %d certificates, want 30", len(pages))
					}
					ordered := slices.IsSortedFunc(pages, func(a, b *storage.Certificate) int {
						r := cmpStrings(key(a), key(b))
						if r == 0 {
							r = cmpStrings(a.ID, b.ID)
						}
						if desc {
							r = -r
						}
						return r
					})
					if !ordered {
						t.Fatal("pages are not in sort order")
					}
					ids := map[string]bool{}
					for _, c := range pages {
						ids[c.ID] = true
					}
					if len(ids) != 30 {
						t.Fatalf("%d distinct certificates in the pages", len(ids))
					}
				})
			}
		}
	})

	t.Run("bad sort and cursor", func(t *testing.T) {
		if _, _, err := st.Certificates().List(ctx, storage.CertificateFilter{Sort: "fingerprint"}, storage.Page{}); err == nil {
			t.Fatal("an unknown sort was accepted")
		}
		_, next, err := st.Certificates().List(ctx, storage.CertificateFilter{Sort: "name"}, storage.Page{Limit: 2})
		must(t, err)
		_, _, err = st.Certificates().List(ctx, storage.CertificateFilter{Sort: "expires"}, storage.Page{Cursor: next})
		wantErr(t, err, storage.ErrInvalidCursor)
		_, _, err = st.Certificates().List(ctx, storage.CertificateFilter{Sort: "-name"}, storage.Page{Cursor: next})
		wantErr(t, err, storage.ErrInvalidCursor)
		_, _, err = st.Certificates().List(ctx, storage.CertificateFilter{}, storage.Page{Cursor: "garbage"})
		wantErr(t, err, storage.ErrInvalidCursor)
	})

	t.Run("filters", func(t *testing.T) {
		cases := map[string]struct {
			f    storage.CertificateFilter
			want int
		}{
			"expiry window":     {storage.CertificateFilter{NotAfterFrom: base, NotAfterBefore: base.Add(7 * day)}, 7},
			"expired":           {storage.CertificateFilter{NotAfterBefore: base}, 10},
			"from only":         {storage.CertificateFilter{NotAfterFrom: base.Add(40 * day)}, 10},
			"catalog":           {storage.CertificateFilter{CatalogID: "letsencrypt"}, 50},
			"source imported":   {storage.CertificateFilter{Source: storage.CertSourceImported}, 10},
			"status renewed":    {storage.CertificateFilter{Status: storage.CertStatusRenewed}, 20},
			"issuer and status": {storage.CertificateFilter{IssuerID: "iss_1", Status: storage.CertStatusActive}, 17},
		}
		for name, cs := range cases {
			t.Run(name, func(t *testing.T) {
				list, _, err := st.Certificates().List(ctx, cs.f, storage.Page{Limit: 500})
				must(t, err)
				if len(list) != cs.want {
					t.Fatalf("got %d, want %d", len(list), cs.want)
				}
			})
		}
	})

	t.Run("expiry counts", func(t *testing.T) {
		bounds := []time.Time{base, base.Add(7 * day), base.Add(30 * day)}
		counts, err := st.Certificates().ExpiryCounts(ctx, storage.CertificateFilter{Status: storage.CertStatusActive}, bounds)
		must(t, err)
		// expected, computed the slow way
		want := map[[2]string][]int{}
		for _, c := range all {
			if c.Status != storage.CertStatusActive {
				continue
			}
			k := [2]string{c.IssuerID, c.Group}
			if want[k] == nil {
				want[k] = make([]int, 4)
			}
			i := len(bounds)
			for j, b := range bounds {
				if !c.NotAfter.After(b) {
					i = j
					break
				}
			}
			want[k][i]++
		}
		if len(counts) != len(want) {
			t.Fatalf("%d groups, want %d: %+v", len(counts), len(want), counts)
		}
		total := 0
		for _, ec := range counts {
			w := want[[2]string{ec.IssuerID, ec.Group}]
			if !slices.Equal(ec.Buckets, w) {
				t.Errorf("%s/%s: buckets %v, want %v", ec.IssuerID, ec.Group, ec.Buckets, w)
			}
			for _, n := range ec.Buckets {
				total += n
			}
		}
		if total != 40 {
			t.Fatalf("counted %d active certificates, want 40", total)
		}
		if _, err := st.Certificates().ExpiryCounts(ctx, storage.CertificateFilter{}, []time.Time{base, base.Add(-day)}); err == nil {
			t.Fatal("descending bounds were accepted")
		}
		none, err := st.Certificates().ExpiryCounts(ctx, storage.CertificateFilter{Group: "nobody"}, bounds)
		must(t, err)
		if len(none) != 0 {
			t.Fatalf("counts for an empty selection: %+v", none)
		}
	})

	t.Run("expiry timeline", func(t *testing.T) {
		// weekly from base: certificates i=10..59 expire at base+(i-10)d
		weeks, err := st.Certificates().ExpiryTimeline(ctx, storage.CertificateFilter{}, base, 7*day, 8)
		must(t, err)
		want := []int{7, 7, 7, 7, 7, 7, 7, 1}
		if !slices.Equal(weeks, want) {
			t.Fatalf("weekly timeline %v, want %v", weeks, want)
		}
		days, err := st.Certificates().ExpiryTimeline(ctx, storage.CertificateFilter{Group: "web"}, base.Add(-12*time.Hour), day, 4)
		must(t, err)
		// base-12h .. base+3.5d: certificates at base, base+2d in web (i=10, 12)
		if !slices.Equal(days, []int{1, 0, 1, 0}) {
			t.Fatalf("daily timeline for web %v", days)
		}
		if _, err := st.Certificates().ExpiryTimeline(ctx, storage.CertificateFilter{}, base, 0, 3); err == nil {
			t.Fatal("a zero step was accepted")
		}
	})
	t.Run("expiry counts follow writes", func(t *testing.T) {
		// the counts stay right as certificates change status, ACME
		// client and group, and are deleted; checked against a count of
		// the listed certificates, with and without the per-day summary
		bounds := []time.Time{base.Add(-3 * time.Hour), base.Add(7*day + time.Minute), base.Add(30 * day)}
		check := func(t *testing.T, f storage.CertificateFilter) {
			t.Helper()
			list, _, err := st.Certificates().List(ctx, f, storage.Page{Limit: storage.MaxLimit})
			must(t, err)
			want := map[[2]string][]int{}
			for _, c := range list {
				k := [2]string{c.IssuerID, c.Group}
				if want[k] == nil {
					want[k] = make([]int, len(bounds)+1)
				}
				i := len(bounds)
				for j, b := range bounds {
					if !c.NotAfter.After(b) {
						i = j
						break
					}
				}
				want[k][i]++
			}
			counts, err := st.Certificates().ExpiryCounts(ctx, f, bounds)
			must(t, err)
			if len(counts) != len(want) {
				t.Fatalf("filter %+v: %d groups, want %d", f, len(counts), len(want))
			}
			for _, ec := range counts {
				if w := want[[2]string{ec.IssuerID, ec.Group}]; !slices.Equal(ec.Buckets, w) {
					t.Fatalf("filter %+v: %s/%s buckets %v, want %v", f, ec.IssuerID, ec.Group, ec.Buckets, w)
				}
			}
			midnight := base.Truncate(day)
			tl, err := st.Certificates().ExpiryTimeline(ctx, f, midnight, day, 60)
			must(t, err)
			wantTL := make([]int, 60)
			for _, c := range list {
				if d := c.NotAfter.Sub(midnight); d >= 0 && d < 60*day {
					wantTL[int(d/day)]++
				}
			}
			if !slices.Equal(tl, wantTL) {
				t.Fatalf("filter %+v: daily timeline %v, want %v", f, tl, wantTL)
			}
		}
		filters := []storage.CertificateFilter{
			{}, {Status: storage.CertStatusActive}, {IssuerID: "iss_2", Group: "web"}, {Rating: "A"},
			{Source: storage.CertSourceImported, Status: storage.CertStatusActive},
		}
		for _, f := range filters {
			check(t, f)
		}
		for i, c := range all[10:20] {
			got, err := st.Certificates().Get(ctx, c.ID)
			must(t, err)
			switch i % 3 {
			case 0:
				got.Status = storage.CertStatusRevoked
			case 1:
				got.IssuerID, got.Group = "iss_9", "moved"
			case 2:
				got.Rating = "F" // not a summary key: nothing moves
			}
			must(t, st.Certificates().Update(ctx, got))
		}
		for _, c := range all[20:25] {
			must(t, st.Certificates().Delete(ctx, c.ID))
		}
		// a failed update moves nothing
		stale, err := st.Certificates().Get(ctx, all[30].ID)
		must(t, err)
		stale.Version--
		stale.Status = storage.CertStatusRevoked
		wantErr(t, st.Certificates().Update(ctx, stale), storage.ErrConflict)
		for _, f := range append(filters, storage.CertificateFilter{Group: "moved"}, storage.CertificateFilter{Status: storage.CertStatusRevoked}) {
			check(t, f)
		}
	})
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
