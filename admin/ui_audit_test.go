package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// The UI audits the mutations it refuses before any service sees them
// (a viewer, a missing CSRF token, an admin-only area, no identity), with
// the user, the client address and result refused; nothing changed.
func TestUIRefusalsAudited(t *testing.T) {
	f := newUIFixture(t)
	wf := f.ids["A"]["workflow"]
	iss := f.ids["A"]["issuer"]
	// the action is the route's pattern, as the API records its own
	// refusals; the target is the record's ID, the raw path in the details
	cases := map[string]struct {
		q              uiRequest
		method, path   string
		action, target string
		actor          string
	}{
		"viewer":            {as("vic"), "POST", "/api/workflows/" + wf + "/actions/cancel", "POST /workflows/{id}/actions/{action}", wf, "ui:vic@203.0.113.7"},
		"viewer form":       {as("vic"), "POST", "/workflows/" + wf + "/cancel", "POST /workflows/{id}/{action}", wf, "ui:vic@203.0.113.7"},
		"viewer edit form":  {as("vic"), "POST", "/issuers/" + iss + "/edit", "POST /issuers/{id}/{action}", iss, "ui:vic@203.0.113.7"},
		"no CSRF token":     {uiRequest{user: "alice", cookie: true}, "POST", "/api/workflows/" + wf + "/actions/retry", "POST /workflows/{id}/actions/{action}", wf, "ui:alice@203.0.113.7"},
		"no CSRF, form":     {uiRequest{user: "alice", cookie: true}, "POST", "/tokens", "POST /tokens", "", "ui:alice@203.0.113.7"},
		"admin-only area":   {as("alice"), "POST", "/api/actions/rekey", "POST /actions/rekey", "", "ui:alice@203.0.113.7"},
		"unknown user":      {as("mallory"), "DELETE", "/api/issuers/" + iss, "DELETE /issuers/{id}", iss, "ui:mallory@203.0.113.7"},
		"no authentication": {uiRequest{remote: "198.51.100.4:5555", local: "127.0.0.1:2080"}, "POST", "/api/workflows", "POST /workflows", "", "ui:anonymous@198.51.100.4"},
		"unknown path":      {as("vic"), "POST", "/no/such/page/" + wf, "POST /{path...}", "", "ui:vic@203.0.113.7"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if rec := f.do(t, c.q, c.method, c.path, "{}"); rec.Code != http.StatusForbidden {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			es, _, err := f.app.AuditLog(t.Context(), storage.AuditFilter{Action: c.action, Actor: strings.Split(c.actor, "@")[0]}, storage.Page{})
			if err != nil || len(es) != 1 {
				t.Fatalf("audit entries of the refusal: %v %v", es, err)
			}
			e := es[0]
			if e.Actor != c.actor || e.Result != storage.AuditRefused || e.Source != strings.Split(strings.TrimPrefix(c.actor, "ui:"), "@")[1] ||
				!strings.Contains(string(e.Details), `"status":403`) || !strings.Contains(string(e.Details), `"path":"`+c.path+`"`) ||
				e.Target != c.target {
				t.Fatalf("entry %+v %s", e, e.Details)
			}
			if c.target != "" && e.Group != "A" {
				t.Fatalf("entry of a group A record in group %q", e.Group)
			}
			// no entry names the raw path as its action
			if raw, _, _ := f.app.AuditLog(t.Context(), storage.AuditFilter{Action: c.method + " " + c.path}, storage.Page{}); len(raw) != 0 &&
				c.action != c.method+" "+c.path {
				t.Fatalf("the raw path recorded as the action: %+v", raw[0])
			}
		})
	}
	if got, _ := f.app.Workflows().Get(t.Context(), wf); got.State == storage.StateCancelled {
		t.Fatal("a refused request changed the workflow")
	}
}

// The audit log in the UI (page and JSON API): filters, pages, and what
// each role reads.
func TestUIAuditLog(t *testing.T) {
	f := newUIFixture(t)
	ctx := t.Context()
	// 60 entries of group A, 3 of group C, 2 refusals of group B
	for i := range 60 {
		if err := f.app.AuditEntry(ctx, &storage.AuditEntry{Actor: "ui:alice@192.0.2.5", Action: "workflow.create", Group: "A",
			Target: fmt.Sprintf("wf_page_%02d", i), Source: "192.0.2.5"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		_ = f.app.AuditEntry(ctx, &storage.AuditEntry{Actor: "ui:carol@192.0.2.6", Action: "issuer.create", Group: "C", Target: fmt.Sprintf("iss_c_%d", i)})
	}
	for i := range 2 {
		_ = f.app.AuditEntry(ctx, &storage.AuditEntry{Actor: "ui:bob@192.0.2.7", Action: "issuer.delete", Group: "B",
			Target: fmt.Sprintf("iss_b_%d", i), Result: storage.AuditRefused})
	}
	type list struct {
		Items      []auditEntry `json:"items"`
		NextCursor string       `json:"next_cursor"`
	}
	get := func(user, query string) list {
		t.Helper()
		rec := f.do(t, as(user), "GET", "/api/audit?"+query, "")
		var l list
		if err := json.Unmarshal(rec.Body.Bytes(), &l); rec.Code != 200 || err != nil {
			t.Fatalf("GET /api/audit?%s as %s: %d %s", query, user, rec.Code, rec.Body)
		}
		return l
	}
	t.Run("filters", func(t *testing.T) {
		if l := get("root", "result=refused&group=B"); len(l.Items) != 2 || l.Items[0].Target != "iss_b_1" || l.Items[0].Result != "refused" {
			t.Fatalf("refused in B: %+v", l.Items)
		}
		if l := get("root", "actor=ui:carol"); len(l.Items) != 3 {
			t.Fatalf("by carol: %d", len(l.Items))
		}
		if l := get("root", "target=wf_page_07"); len(l.Items) != 1 || l.Items[0].Source != "192.0.2.5" || l.Items[0].Group != "A" {
			t.Fatalf("one resource: %+v", l.Items)
		}
		if l := get("root", "until="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)); len(l.Items) != 0 {
			t.Fatalf("until an hour ago: %d", len(l.Items))
		}
		for _, q := range []string{"result=maybe", "since=yesterday", "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"} {
			if rec := f.do(t, as("root"), "GET", "/api/audit?"+q, ""); rec.Code != 400 {
				t.Errorf("GET /api/audit?%s: %d", q, rec.Code)
			}
		}
	})
	t.Run("pages", func(t *testing.T) {
		seen, cursor := 0, ""
		for n := 0; ; n++ {
			l := get("root", "group=A&limit=25&cursor="+cursor)
			seen += len(l.Items)
			if l.NextCursor == "" {
				break
			}
			cursor = l.NextCursor
		}
		if seen < 60 {
			t.Fatalf("paged through %d entries of group A", seen)
		}
		// the page shows 50 rows and links to the older ones, filters kept
		rec := f.do(t, as("root"), "GET", "/audit?group=A&action=workflow.create", "")
		body := rec.Body.String()
		if rows := strings.Count(body, `<tr><td data-label="When"><time`); rec.Code != 200 || rows != pageSize {
			t.Fatalf("audit page: %d, %d rows", rec.Code, rows)
		}
		next := reNext.FindStringSubmatch(body)
		if next == nil || !strings.Contains(next[1], "group=A") {
			t.Fatal("no link to the older entries, with the filters")
		}
		rec = f.do(t, as("root"), "GET", "/audit"+strings.ReplaceAll(next[1], "&amp;", "&"), "")
		if rows := strings.Count(rec.Body.String(), `<tr><td data-label="When"><time`); rows < 10 {
			t.Fatalf("second page: %d rows", rows)
		}
		if rec := f.do(t, as("root"), "GET", "/audit?actor=nobody", ""); !strings.Contains(rec.Body.String(), "Nothing matches these filters") {
			t.Fatal("no empty state for a filter that matches nothing")
		}
	})
	t.Run("who reads what", func(t *testing.T) {
		groups := func(l list) map[string]int {
			out := map[string]int{}
			for _, e := range l.Items {
				out[e.Group]++
			}
			return out
		}
		if g := groups(get("root", "limit=500")); g["A"] == 0 || g["B"] == 0 || g["C"] != 3 {
			t.Fatalf("the admin reads %v", g)
		}
		if g := groups(get("vic", "limit=500")); g["A"] == 0 || g["B"] == 0 || g["C"] != 0 || g[""] != 0 {
			t.Fatalf("the viewer of A and B reads %v", g)
		}
		if g := groups(get("alice", "limit=500")); g["A"] == 0 || g["B"] != 0 || g["C"] != 0 {
			t.Fatalf("the operator of A reads %v", g)
		}
		// asking for another group's entries gives nothing
		if l := get("alice", "group=C"); len(l.Items) != 0 {
			t.Fatalf("alice asking for group C: %+v", l.Items)
		}
		rec := f.do(t, as("alice"), "GET", "/audit", "")
		if rec.Code != 200 || strings.Contains(rec.Body.String(), "iss_c_") || !strings.Contains(rec.Body.String(), "your groups and your own") {
			t.Fatalf("alice's audit page: %d", rec.Code)
		}
	})
}

// A refused attempt on another group's record is audited in that group:
// its members see who tried (the one who tried learns nothing more).
func TestUIRefusalInTheRecordsGroup(t *testing.T) {
	f := newUIFixture(t)
	b := f.ids["B"]
	for kind, path := range map[string]string{
		"issuer":      "/api/issuers/" + b["issuer"],
		"dns":         "/api/dns-providers/" + b["dns"],
		"certificate": "/api/certificates/" + b["certificate"],
		"workflow":    "/api/workflows/" + b["workflow"] + "/actions/cancel",
	} {
		t.Run(kind, func(t *testing.T) {
			method := "DELETE"
			if kind == "workflow" {
				method = "POST"
			}
			if rec := f.do(t, as("alice"), method, path, ""); rec.Code != http.StatusNotFound {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			es, _, err := f.app.AuditLog(t.Context(), storage.AuditFilter{Target: b[kind], Result: storage.AuditRefused}, storage.Page{})
			if err != nil || len(es) != 1 || es[0].Group != "B" || es[0].Actor != "ui:alice@203.0.113.7" {
				t.Fatalf("the refusal's entry: %+v %v", es, err)
			}
		})
	}
	// vic reads group B: she sees the attempts
	rec := f.do(t, as("vic"), "GET", "/api/audit?result=refused&group=B", "")
	var l struct {
		Items []auditEntry `json:"items"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil || len(l.Items) != 4 {
		t.Fatalf("vic's view of the refusals in B: %d %s", rec.Code, rec.Body)
	}
}
