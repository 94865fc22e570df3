package admin

import (
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// pagingFixture has 120 workflows, certificates and tokens, and 90 more
// ACME clients and DNS providers, whose groups cycle A, B, C (so B's rows
// lie between every two rows of A and C), and a viewer of groups A and C.
// The groups of every row are in the map returned, by ID.
func pagingFixture(t *testing.T) (*uiFixture, []string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(certlocker.EnvEncryptionKey, "")
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "https://" + closed.Addr().String() + "/directory"
	closed.Close()
	groups := []string{"A", "B", "C"}
	var issuerCfg []any
	for _, g := range groups {
		issuerCfg = append(issuerCfg, map[string]any{"name": "ca-" + g, "directory_url": deadURL, "agree_terms": true, "group": g})
	}
	for i := range 90 {
		// names out of creation order, so that name order is not ID order
		issuerCfg = append(issuerCfg, map[string]any{"name": fmt.Sprintf("x%02d", (i*37)%90), "directory_url": deadURL,
			"agree_terms": true, "group": groups[i%3]})
	}
	_, app := testAPI(t, mustJSON(map[string]any{
		"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
		"issuers": issuerCfg,
		"users": []any{
			map[string]any{"id": "root", "role": "admin"},
			map[string]any{"id": "ac", "role": "viewer", "groups": []string{"A", "C"}},
		},
	}))
	ctx := t.Context()
	list, err := app.IssuerRegistry().List(ctx, storage.IssuerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	issuerOf := map[string]string{}
	certGroup := map[string]string{} // row ID → group
	for _, iss := range list {
		if strings.HasPrefix(iss.Name, "ca-") {
			issuerOf[iss.Group] = iss.ID
		}
		certGroup[iss.ID] = iss.Group
	}
	for i := range 90 {
		g := groups[i%3]
		p, err := app.DNS().Create(ctx, "test", dnsproviders.Config{Name: fmt.Sprintf("d%02d", (i*37)%90), Type: dnsproviders.TypeCloudflare,
			Credentials: []byte(`{"api_token":"cf-paging-secret"}`), Zones: []string{"team-" + strings.ToLower(g) + ".test"}, Group: g})
		if err != nil {
			t.Fatal(err)
		}
		certGroup[p.ID] = g
	}
	var wfAC []string // newest first
	for i := range 120 {
		g := groups[i%3]
		wf, err := app.Workflows().Create(ctx, workflow.Request{IssuerID: issuerOf[g], Group: g, Trigger: workflow.TriggerManual,
			Identifiers: []storage.Identifier{{Value: fmt.Sprintf("w%03d.team-%s.test", i, strings.ToLower(g))}}, Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if g != "B" {
			wfAC = append([]string{wf.ID}, wfAC...)
		}
		fx := newCertFixture(t, []string{fmt.Sprintf("c%03d.team-%s.test", (i*37)%120, strings.ToLower(g))},
			time.Now().Add(time.Duration(10+i%9)*24*time.Hour))
		c, _, err := app.Certificates().Import(ctx, inventory.ImportRequest{PEM: fx.chain, Group: g}, "test")
		if err != nil {
			t.Fatal(err)
		}
		certGroup[c.ID] = g
		tok, _, err := app.Tokens().Create(ctx, "test", gateway.CreateRequest{CertificateID: c.ID, IssuerID: issuerOf[g], Group: g})
		if err != nil {
			t.Fatal(err)
		}
		certGroup[tok.ID] = g
	}
	cctx, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f := &uiFixture{app: app, ui: new(UI)}
	if err := f.ui.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	return f, wfAC, certGroup
}

var (
	reWorkflowRow = regexp.MustCompile(`<tr id="wf-([^"]+)"`)
	reCertRow     = regexp.MustCompile(`cert=(crt_[A-Za-z0-9_-]+)" class="open-drawer"`)
	reIssuerRow   = regexp.MustCompile(`<tr id="iss-([^"]+)"`)
	reDNSRow      = regexp.MustCompile(`<tr id="dns-([^"]+)"`)
	reTokenRow    = regexp.MustCompile(`<tr id="tok-([^"]+)"`)
	rePrev        = regexp.MustCompile(`rel="prev" href="([^"]*)"`)
	reNext        = regexp.MustCompile(`rel="next" href="([^"]*)"`)
)

// walk follows a list screen's "Next page" links from target to the end,
// then its "Previous page" links back, checking that every page but the
// last is full, that the way back shows the same pages, and that the
// first page has no "Previous page". It returns the rows in order.
func (f *uiFixture) walk(t *testing.T, user, target string, rows *regexp.Regexp) []string {
	t.Helper()
	path := target[:strings.Index(target+"?", "?")]
	get := func(u string) (ids []string, prev, next string) {
		t.Helper()
		rec := f.do(t, as(user), http.MethodGet, u, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", u, rec.Code, rec.Body)
		}
		body := rec.Body.String()
		for _, m := range rows.FindAllStringSubmatch(body, -1) {
			ids = append(ids, m[1])
		}
		if m := rePrev.FindStringSubmatch(body); m != nil {
			prev = path + html.UnescapeString(m[1])
		}
		if m := reNext.FindStringSubmatch(body); m != nil {
			next = path + html.UnescapeString(m[1])
		}
		return ids, prev, next
	}
	var pages [][]string
	var all []string
	u := target
	for {
		ids, prev, next := get(u)
		if (prev == "") != (len(pages) == 0) {
			t.Fatalf("page %d: previous-page link %q", len(pages), prev)
		}
		if next != "" && len(ids) != pageSize {
			t.Fatalf("page %d of %s holds %d rows, want a full page of %d", len(pages), target, len(ids), pageSize)
		}
		pages = append(pages, ids)
		all = append(all, ids...)
		if next == "" {
			// back from the last page, one page at a time
			for i := len(pages) - 1; i > 0; i-- {
				back, p, n := get(prev)
				if !slices.Equal(back, pages[i-1]) {
					t.Fatalf("previous page of page %d:\n got %v\nwant %v", i, back, pages[i-1])
				}
				if n == "" || (p == "") != (i == 1) {
					t.Fatalf("previous page of page %d: links prev %q next %q", i, p, n)
				}
				prev = p
			}
			return all
		}
		u = next
		if len(pages) > 10 {
			t.Fatal("the pages do not end")
		}
	}
}

// TestUIListsPageFullForSeveralGroups: a user of groups A and C sees full
// pages of their rows only, with previous and next pages that agree, on
// every paginated screen, though group B's rows interleave with theirs.
func TestUIListsPageFullForSeveralGroups(t *testing.T) {
	f, wfAC, certGroup := pagingFixture(t)

	t.Run("workflows newest first", func(t *testing.T) {
		got := f.walk(t, "ac", "/workflows", reWorkflowRow)
		if !slices.Equal(got, wfAC) {
			t.Fatalf("workflows of A and C:\n got %v\nwant %v", got, wfAC)
		}
	})
	t.Run("workflows oldest first", func(t *testing.T) {
		want := slices.Clone(wfAC)
		slices.Reverse(want)
		if got := f.walk(t, "ac", "/workflows?sort=created", reWorkflowRow); !slices.Equal(got, want) {
			t.Fatalf("workflows of A and C, oldest first:\n got %v\nwant %v", got, want)
		}
	})
	t.Run("workflows filtered to one group", func(t *testing.T) {
		got := f.walk(t, "ac", "/workflows?group=C", reWorkflowRow)
		if len(got) != 40 {
			t.Fatalf("%d workflows of group C, want 40", len(got))
		}
	})
	for _, sort := range []string{"", "name", "-name", "expires", "-issued", "added"} {
		t.Run("inventory sort "+sort, func(t *testing.T) {
			got := f.walk(t, "ac", "/inventory?status=any&sort="+sort, reCertRow)
			if len(got) != 80 {
				t.Fatalf("%d certificates listed, want the 80 of A and C", len(got))
			}
			seen := map[string]bool{}
			for _, id := range got {
				if g := certGroup[id]; g != "A" && g != "C" || seen[id] {
					t.Fatalf("certificate %s (group %q) listed for groups A, C, or twice", id, g)
				}
				seen[id] = true
			}
		})
	}
	// the ACME clients and DNS providers by name, the tokens newest first
	only := func(t *testing.T, what string, got []string, want int) {
		t.Helper()
		if len(got) != want {
			t.Fatalf("%d %s listed, want the %d of A and C", len(got), what, want)
		}
		seen := map[string]bool{}
		for _, id := range got {
			if g := certGroup[id]; g != "A" && g != "C" || seen[id] {
				t.Fatalf("%s %s (group %q) listed for groups A, C, or twice", what, id, g)
			}
			seen[id] = true
		}
	}
	t.Run("ACME clients", func(t *testing.T) {
		only(t, "ACME clients", f.walk(t, "ac", "/issuers", reIssuerRow), 62)
	})
	t.Run("DNS providers", func(t *testing.T) {
		only(t, "DNS providers", f.walk(t, "ac", "/dns-providers", reDNSRow), 60)
	})
	t.Run("tokens", func(t *testing.T) {
		got := f.walk(t, "ac", "/tokens", reTokenRow)
		only(t, "tokens", got, 80)
		if !slices.IsSortedFunc(got, func(a, b string) int { return strings.Compare(b, a) }) {
			t.Fatalf("tokens not newest first: %v", got)
		}
		if got := f.walk(t, "ac", "/tokens?group=C&state=active", reTokenRow); len(got) != 40 {
			t.Fatalf("%d active tokens of group C, want 40", len(got))
		}
	})
	// the JSON API pages the same lists with cursor, limit and next_cursor
	for _, c := range []struct {
		path string
		want int
	}{{"/api/issuers", 62}, {"/api/dns-providers", 60}, {"/api/tokens", 80}} {
		t.Run("API "+c.path, func(t *testing.T) {
			var all []string
			cursor := ""
			for range 20 {
				rec := f.do(t, as("ac"), http.MethodGet, c.path+"?limit=7&cursor="+url.QueryEscape(cursor), "")
				if rec.Code != http.StatusOK {
					t.Fatalf("%d %s", rec.Code, rec.Body)
				}
				var out struct {
					Items []struct {
						ID string `json:"id"`
					} `json:"items"`
					NextCursor string `json:"next_cursor"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
					t.Fatal(err)
				}
				if out.NextCursor != "" && len(out.Items) != 7 {
					t.Fatalf("a page of %d items with a next cursor", len(out.Items))
				}
				for _, it := range out.Items {
					all = append(all, it.ID)
				}
				if cursor = out.NextCursor; cursor == "" {
					break
				}
			}
			only(t, c.path, all, c.want)
			if rec := f.do(t, as("ac"), http.MethodGet, c.path+"?cursor=garbage", ""); rec.Code != http.StatusBadRequest {
				t.Fatalf("a bad cursor: %d %s", rec.Code, rec.Body)
			}
			if rec := f.do(t, as("ac"), http.MethodGet, c.path+"?limit=0", ""); rec.Code != http.StatusBadRequest {
				t.Fatalf("limit 0: %d %s", rec.Code, rec.Body)
			}
		})
	}
	t.Run("audit", func(t *testing.T) {
		got := f.walk(t, "root", "/audit?actor=test", regexp.MustCompile(`<td data-label="Who">test</td><td data-label="From">[^<]*</td><td data-label="Action">[^<]*</td>`+
			`<td data-label="Result">.*?</td><td data-label="Group">[^<]*</td><td data-label="Resource">([^<]*)</td>`))
		if len(got) < 240 {
			t.Fatalf("%d audit entries by the seeding, want at least 240", len(got))
		}
	})
}

// TestUISortableHeaders: the inventory's sortable columns link to the
// server-side sort, flip on the current column, keep the filters, and say
// which column sorts how (aria-sort).
func TestUISortableHeaders(t *testing.T) {
	f := newUIFixture(t)
	body := f.do(t, as("root"), http.MethodGet, "/inventory?domain=cert.team-a.test&sort=-name", "").Body.String()
	for _, want := range []string{
		`aria-sort="descending"><a class="sort" href="?domain=cert.team-a.test&amp;sort=name">Name`,
		`aria-sort="none"><a class="sort" href="?domain=cert.team-a.test&amp;sort=expires">Expires`,
		`aria-sort="none"><a class="sort" href="?domain=cert.team-a.test&amp;sort=-added">Added`,
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("the inventory lacks %s", want)
		}
	}
	// the drawer's link keeps the filters and the sort
	if !strings.Contains(body, `href="/inventory?domain=cert.team-a.test&amp;sort=-name&amp;cert=`+f.ids["A"]["certificate"]+`"`) {
		t.Fatal("the drawer link loses the filters or the sort")
	}
	body = f.do(t, as("root"), http.MethodGet, "/workflows", "").Body.String()
	if !strings.Contains(body, `aria-sort="descending"><a class="sort" href="?sort=created">Created`) {
		t.Fatal("the workflows list does not say it is newest first")
	}
	// a previous page that would be short at the start is the first page
	short := f.do(t, as("root"), http.MethodGet, "/workflows?before="+url.QueryEscape(nextCursor(t, f)), "").Body.String()
	if strings.Count(short, `<tr id="wf-`) != 2 || strings.Contains(short, `rel="prev"`) {
		t.Fatalf("the short previous page is not the full first page:\n%s", short)
	}
	if !strings.Contains(body, `data-live="/live/workflows?"`) {
		t.Fatal("the first page is not live")
	}
	// other pages and orders do not follow the first page's stream
	for _, target := range []string{"/workflows?sort=created", "/workflows?cursor=" + url.QueryEscape(nextCursor(t, f))} {
		if body := f.do(t, as("root"), http.MethodGet, target, "").Body.String(); strings.Contains(body, "data-live") {
			t.Fatalf("%s follows the first page's live stream", target)
		}
	}
	if rec := f.do(t, as("root"), http.MethodGet, "/workflows?sort=domain", ""); rec.Code != http.StatusBadRequest {
		t.Fatalf("an unknown sort: %d", rec.Code)
	}
	if rec := f.do(t, as("root"), http.MethodGet, "/inventory?cursor=garbage", ""); rec.Code != http.StatusBadRequest {
		t.Fatalf("a bad cursor: %d", rec.Code)
	}
}

// nextCursor is a cursor of the workflows list, from a one-row page.
func nextCursor(t *testing.T, f *uiFixture) string {
	t.Helper()
	_, next, err := f.app.Workflows().List(t.Context(), storage.WorkflowFilter{}, storage.Page{Limit: 1})
	if err != nil || next == "" {
		t.Fatalf("no cursor: %v", err)
	}
	return next
}
