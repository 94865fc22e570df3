package storagetest

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// testAuditFields: group, source and result are kept; the source comes
// from the context when the entry names none; every filter and the scope
// of a group-restricted reader select what they say.
func testAuditFields(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := storage.WithAuditSource(t.Context(), "198.51.100.7")
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	add := func(e storage.AuditEntry) *storage.AuditEntry {
		t.Helper()
		must(t, st.Audit().Append(ctx, &e))
		return &e
	}
	ok := add(storage.AuditEntry{Actor: "ui:alice@192.0.2.1", Action: "issuer.create", Target: "iss_a", Group: "team-a", Source: "192.0.2.1", Time: t0})
	fromCtx := add(storage.AuditEntry{Actor: "admin-api@127.0.0.1:5555", Action: "issuer.delete", Target: "iss_b", Group: "team-b", Time: t0.Add(time.Second)})
	refused := add(storage.AuditEntry{Actor: "ui:alice@192.0.2.1", Action: "POST /issuers/{id}/actions/{action}", Target: "iss_b", Result: storage.AuditRefused, Time: t0.Add(2 * time.Second)})
	failed := add(storage.AuditEntry{Actor: "ui:bob@192.0.2.9", Action: "workflow.create", Group: "team-a", Result: storage.AuditFailed, Time: t0.Add(3 * time.Second)})
	other := add(storage.AuditEntry{Actor: "ui:alicea@192.0.2.3", Action: "token.create", Group: "team-c", Time: t0.Add(4 * time.Second)})
	if err := st.Audit().Append(ctx, &storage.AuditEntry{Action: "x", Result: "maybe"}); err == nil {
		t.Fatal("an audit entry with an unknown result was accepted")
	}
	all, _, err := st.Audit().List(t.Context(), storage.AuditFilter{}, storage.Page{})
	must(t, err)
	if len(all) != 5 {
		t.Fatalf("%d entries, want 5", len(all))
	}
	byID := map[string]*storage.AuditEntry{}
	for _, e := range all {
		byID[e.ID] = e
	}
	if e := byID[ok.ID]; e.Group != "team-a" || e.Source != "192.0.2.1" || e.Result != storage.AuditOK {
		t.Fatalf("entry read back as %+v", e)
	}
	if e := byID[fromCtx.ID]; e.Source != "198.51.100.7" || e.Result != storage.AuditOK {
		t.Fatalf("source from the context: %+v", e)
	}
	if e := byID[refused.ID]; e.Result != storage.AuditRefused || e.Group != "" {
		t.Fatalf("refused entry: %+v", e)
	}
	ids := func(es []*storage.AuditEntry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	cases := map[string]struct {
		f    storage.AuditFilter
		want []*storage.AuditEntry // newest first
	}{
		"actor without address":  {storage.AuditFilter{Actor: "ui:alice"}, []*storage.AuditEntry{refused, ok}},
		"actor exactly":          {storage.AuditFilter{Actor: "ui:bob@192.0.2.9"}, []*storage.AuditEntry{failed}},
		"group":                  {storage.AuditFilter{Group: "team-a"}, []*storage.AuditEntry{failed, ok}},
		"result refused":         {storage.AuditFilter{Result: storage.AuditRefused}, []*storage.AuditEntry{refused}},
		"result failed in group": {storage.AuditFilter{Result: storage.AuditFailed, Group: "team-b"}, nil},
		"target":                 {storage.AuditFilter{Target: "iss_b"}, []*storage.AuditEntry{refused, fromCtx}},
		"time range":             {storage.AuditFilter{Since: t0.Add(time.Second), Until: t0.Add(3 * time.Second)}, []*storage.AuditEntry{refused, fromCtx}},
		"scope: groups and own":  {storage.AuditFilter{Scope: &storage.AuditScope{Groups: []string{"team-a"}, Actor: "ui:alice"}}, []*storage.AuditEntry{failed, refused, ok}},
		"scope: two groups":      {storage.AuditFilter{Scope: &storage.AuditScope{Groups: []string{"team-b", "team-c"}}}, []*storage.AuditEntry{other, fromCtx}},
		"scope and filter":       {storage.AuditFilter{Action: "issuer.delete", Scope: &storage.AuditScope{Groups: []string{"team-a"}}}, nil},
		"scope of nothing":       {storage.AuditFilter{Scope: &storage.AuditScope{}}, nil},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, _, err := st.Audit().List(t.Context(), c.f, storage.Page{})
			must(t, err)
			if fmt.Sprint(ids(got)) != fmt.Sprint(ids(c.want)) {
				t.Fatalf("got %v, want %v", ids(got), ids(c.want))
			}
		})
	}
}

// testAuditAppendOnly: the database itself refuses to change or remove an
// audit entry, whoever sends the SQL.
func testAuditAppendOnly(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	e := &storage.AuditEntry{Actor: "alice", Action: "issuer.delete", Target: "iss_1"}
	must(t, st.Audit().Append(ctx, e))
	db := st.(interface{ SQL() *sql.DB }).SQL()
	for _, q := range []string{
		"UPDATE audit SET actor = 'mallory' WHERE id = '" + e.ID + "'",
		"UPDATE audit SET result = 'ok'",
		"DELETE FROM audit WHERE id = '" + e.ID + "'",
		"DELETE FROM audit",
	} {
		if _, err := db.ExecContext(ctx, q); err == nil {
			t.Errorf("%s: accepted", q)
		}
	}
	if b.Name == "postgres" {
		if _, err := db.ExecContext(ctx, "TRUNCATE audit"); err == nil {
			t.Error("TRUNCATE audit: accepted")
		}
	}
	// the refusals left the entry as it was
	got, _, err := st.Audit().List(ctx, storage.AuditFilter{Target: "iss_1"}, storage.Page{})
	must(t, err)
	if len(got) != 1 || got[0].Actor != "alice" || got[0].Action != "issuer.delete" {
		t.Fatalf("the entry after the refused changes: %+v", got)
	}
}
