package storagetest

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// lister lists one page of IDs.
type lister func(p storage.Page) ([]string, string, error)

// pageIDs is a lister of the IDs of the rows list returns; it fails the
// test when a row of group B is listed (the lists paged here are of
// groups A and C, or of no group).
func pageIDs[T any](t *testing.T, what string, list func(storage.Page) ([]T, string, error), idGroup func(T) (id, group string)) lister {
	return func(p storage.Page) ([]string, string, error) {
		rows, next, err := list(p)
		var ids []string
		for _, r := range rows {
			id, g := idGroup(r)
			if g == "B" {
				t.Fatalf("%s %s of group B listed for groups A, C", what, id)
			}
			ids = append(ids, id)
		}
		return ids, next, err
	}
}

// checkPaging walks a list forward page by page, then back from every
// page: Backward with the cursor a page was asked with gives exactly the
// page before it, and the cursor it returns leads on back to the first
// page (where it is ""). want is the whole list in order.
func checkPaging(t *testing.T, list lister, limit int, want []string) {
	t.Helper()
	type page struct {
		cursor string
		ids    []string
	}
	var pages []page
	var all []string
	cursor := ""
	for {
		ids, next, err := list(storage.Page{Cursor: cursor, Limit: limit})
		must(t, err)
		if next != "" && len(ids) != limit {
			t.Fatalf("page %d holds %d rows, want a full page of %d", len(pages), len(ids), limit)
		}
		pages = append(pages, page{cursor, ids})
		all = append(all, ids...)
		if next == "" {
			break
		}
		cursor = next
		if len(pages) > len(want)+1 {
			t.Fatal("paging does not end")
		}
	}
	if !slices.Equal(all, want) {
		t.Fatalf("paged forward:\n got %v\nwant %v", all, want)
	}
	for i := len(pages) - 1; i > 0; i-- {
		ids, prev, err := list(storage.Page{Cursor: pages[i].cursor, Limit: limit, Backward: true})
		must(t, err)
		if !slices.Equal(ids, pages[i-1].ids) {
			t.Fatalf("backward from page %d:\n got %v\nwant %v", i, ids, pages[i-1].ids)
		}
		if (prev == "") != (i == 1) {
			t.Fatalf("backward from page %d returned cursor %q", i, prev)
		}
		if prev != "" {
			// that cursor pages back once more
			ids, _, err := list(storage.Page{Cursor: prev, Limit: limit, Backward: true})
			must(t, err)
			if !slices.Equal(ids, pages[i-2].ids) {
				t.Fatalf("backward twice from page %d:\n got %v\nwant %v", i, ids, pages[i-2].ids)
			}
		}
	}
	// backward without a cursor is the first page
	ids, _, err := list(storage.Page{Limit: limit, Backward: true})
	must(t, err)
	if !slices.Equal(ids, pages[0].ids) {
		t.Fatalf("backward without a cursor: got %v, want the first page %v", ids, pages[0].ids)
	}
}

// Lists page forward and backward, full pages, over a set of groups
// whose rows interleave with another group's (what a user of groups A and
// C sees when B's rows lie between).
func testPaging(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	iss := newIssuer(t, st, "paging")
	groups := []string{"A", "B", "C"}
	var wfAC []string
	base := time.Now().UTC().Truncate(time.Second).Add(30 * 24 * time.Hour)
	type certRow struct {
		id, name string
		notAfter time.Time
	}
	var certsAC []certRow
	for i := 0; i < 31; i++ {
		g := groups[i%3]
		w := &storage.Workflow{IssuerID: iss.ID, Trigger: "manual", Group: g,
			Identifiers: []storage.Identifier{{Type: "dns", Value: fmt.Sprintf("h%02d.example.com", i), Challenge: "dns-01"}}}
		must(t, st.Workflows().Create(ctx, w))
		// certificates: names and expiries out of insertion order, some equal
		c := newCert(9000+i, base.Add(time.Duration(i%7)*24*time.Hour), fmt.Sprintf("c%02d.example.com", (i*11)%31))
		c.Group = g
		must(t, st.Certificates().Put(ctx, c))
		if g != "B" {
			wfAC = append([]string{w.ID}, wfAC...) // newest first
			certsAC = append(certsAC, certRow{c.ID, c.CommonName, c.NotAfter})
		}
		must(t, st.Audit().Append(ctx, &storage.AuditEntry{Actor: "pager", Action: "paging.test", Target: fmt.Sprint(i)}))
	}
	if len(wfAC) != 21 {
		t.Fatalf("%d workflows in A and C", len(wfAC))
	}
	t.Run("workflows", func(t *testing.T) {
		wfList := func(f storage.WorkflowFilter) lister {
			return pageIDs(t, "workflow", func(p storage.Page) ([]*storage.Workflow, string, error) {
				return st.Workflows().List(ctx, f, p)
			}, func(w *storage.Workflow) (string, string) { return w.ID, w.Group })
		}
		for _, limit := range []int{1, 4, 7, 21, 50} {
			checkPaging(t, wfList(storage.WorkflowFilter{Groups: []string{"A", "C"}}), limit, wfAC)
			oldest := slices.Clone(wfAC)
			slices.Reverse(oldest)
			checkPaging(t, wfList(storage.WorkflowFilter{Groups: []string{"A", "C"}, Sort: "created"}), limit, oldest)
		}
		ws, _, err := st.Workflows().List(ctx, storage.WorkflowFilter{Groups: []string{}}, storage.Page{})
		must(t, err)
		if len(ws) != 0 {
			t.Fatalf("an empty group set listed %d workflows", len(ws))
		}
	})
	t.Run("certificates", func(t *testing.T) {
		sorts := map[string]func(a, b certRow) int{
			"expires": func(a, b certRow) int { return cmp.Or(a.notAfter.Compare(b.notAfter), cmpStrings(a.id, b.id)) },
			"-expires": func(a, b certRow) int {
				return cmp.Or(b.notAfter.Compare(a.notAfter), cmpStrings(b.id, a.id))
			},
			"name":  func(a, b certRow) int { return cmp.Or(cmpStrings(a.name, b.name), cmpStrings(a.id, b.id)) },
			"-name": func(a, b certRow) int { return cmp.Or(cmpStrings(b.name, a.name), cmpStrings(b.id, a.id)) },
		}
		for spec, cmp := range sorts {
			t.Run(spec, func(t *testing.T) {
				rows := slices.Clone(certsAC)
				slices.SortFunc(rows, cmp)
				var want []string
				for _, r := range rows {
					want = append(want, r.id)
				}
				list := pageIDs(t, "certificate", func(p storage.Page) ([]*storage.Certificate, string, error) {
					return st.Certificates().List(ctx, storage.CertificateFilter{Groups: []string{"A", "C"}, Sort: spec}, p)
				}, func(c *storage.Certificate) (string, string) { return c.ID, c.Group })
				for _, limit := range []int{1, 5, 21} {
					checkPaging(t, list, limit, want)
				}
			})
		}
	})
	t.Run("audit", func(t *testing.T) {
		entries, _, err := st.Audit().List(ctx, storage.AuditFilter{Action: "paging.test"}, storage.Page{Limit: 100})
		must(t, err)
		var want []string
		for _, e := range entries {
			want = append(want, e.ID)
		}
		if len(want) != 31 {
			t.Fatalf("%d audit entries", len(want))
		}
		list := pageIDs(t, "audit entry", func(p storage.Page) ([]*storage.AuditEntry, string, error) {
			return st.Audit().List(ctx, storage.AuditFilter{Action: "paging.test"}, p)
		}, func(e *storage.AuditEntry) (string, string) { return e.ID, e.Group })
		checkPaging(t, list, 10, want)
	})
}
