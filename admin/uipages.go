package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/admin/ui"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// pageSize is the rows per page of every list screen.
const pageSize = 50

// pageSet is the parsed templates: one template per page, each with the
// layout.
type pageSet struct{ pages map[string]*template.Template }

var templateFuncs = template.FuncMap{
	"age": func(t time.Time) string { return humanAge(time.Since(t)) },
	"ts":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"ms": func(n int64) string {
		if n == 0 {
			return ""
		}
		return (time.Duration(n) * time.Millisecond).String()
	},
	"join":   strings.Join,
	"minus1": func(n int) int { return n - 1 },
	"json": func(v any) string {
		b, _ := json.MarshalIndent(v, "", "  ")
		return string(b)
	},
	"rawjson": func(b json.RawMessage) string {
		var buf bytes.Buffer
		if json.Indent(&buf, b, "", "  ") != nil {
			return string(b)
		}
		return buf.String()
	},
	"badge": func(state string) string { return "badge badge-" + strings.ReplaceAll(state, "_", "-") },
	"day":   func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	// sortcol is one sortable column header: its label, link and aria-sort
	"sortcol": func(sl sortLinks, key, label string) map[string]any {
		return map[string]any{"Label": label, "Href": sl.Href[key], "Aria": sl.Aria[key]}
	},
}

func parsePages() (*pageSet, error) {
	names, err := fs.Glob(ui.Templates, "templates/*.html")
	if err != nil {
		return nil, err
	}
	ps := &pageSet{pages: map[string]*template.Template{}}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(templateFuncs).ParseFS(ui.Templates, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		ps.pages[strings.TrimSuffix(base, ".html")] = t
	}
	return ps, nil
}

// pageData is what every page gets.
type pageData struct {
	Title   string
	Nav     string
	Session *session
	Flash   string
	Error   string
	Data    any
}

func (ps *pageSet) render(w http.ResponseWriter, status int, name string, d pageData) {
	t, ok := ps.pages[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		http.Error(w, "rendering the page failed: "+template.HTMLEscapeString(err.Error()), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// problem renders an error page (also before anyone is identified).
func (ps *pageSet) problem(w http.ResponseWriter, status int, title, msg string) {
	ps.render(w, status, "problem", pageData{Title: title, Error: msg})
}

// servePage routes the UI's screens.
func (u *UI) servePage(w http.ResponseWriter, r *http.Request, app *certlocker.App, s *session) {
	p := strings.TrimSuffix(r.URL.Path, "/")
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	d := pageData{Session: s, Flash: r.URL.Query().Get("flash")}
	form := u.formRoute(r, parts) // uiforms.go
	var err error
	switch {
	case p == "" && r.Method == http.MethodGet:
		http.Redirect(w, r, "/workflows", http.StatusSeeOther)
		return
	case form != nil:
		err = form(w, r, app, d)
	case p == "/workflows" && r.Method == http.MethodGet:
		err = u.workflowsPage(w, r, app, d)
	case p == "/workflows" && r.Method == http.MethodPost:
		err = u.createWorkflowForm(w, r, app, d)
	case p == "/workflows/new" && r.Method == http.MethodGet:
		err = u.newOrderPage(w, r, app, d, http.StatusOK, nil)
	case p == "/live/workflows" && r.Method == http.MethodGet:
		err = u.liveWorkflows(w, r, app)
	case len(parts) == 2 && parts[0] == "workflows" && r.Method == http.MethodGet:
		err = u.workflowPage(w, r, app, d, parts[1])
	case len(parts) == 3 && parts[0] == "workflows" && r.Method == http.MethodPost:
		u.formAction(w, r, "workflows/"+url.PathEscape(parts[1])+"/actions/"+url.PathEscape(parts[2]), "/workflows/"+url.PathEscape(parts[1]))
		return
	case p == "/inventory" && r.Method == http.MethodGet:
		err = u.inventoryPage(w, r, app, d)
	case p == "/issuers" && r.Method == http.MethodGet:
		err = u.issuersPage(w, r, app, d)
	case p == "/dns-providers" && r.Method == http.MethodGet:
		err = u.dnsPage(w, r, app, d)
	case parts[0] == "tokens":
		err = u.tokenPages(w, r, app, d, parts)
	case p == "/audit" && r.Method == http.MethodGet:
		err = u.auditPage(w, r, app, d)
	default:
		u.pages.problem(w, http.StatusNotFound, "Not found", "There is no page "+r.URL.Path+" here.")
		return
	}
	if err != nil {
		var e *Error
		switch {
		case errors.As(err, &e):
			u.pages.problem(w, e.Status, "Request refused", e.Message)
		case errors.Is(err, storage.ErrNotFound):
			u.pages.problem(w, http.StatusNotFound, "Not found", "Nothing with that ID exists in your groups.")
		default:
			u.pages.problem(w, http.StatusInternalServerError, "Something failed", internalError(u.logger, "UI page failed", err))
		}
	}
}

// formAction runs a form's action through the admin API handler and
// redirects back with the outcome.
func (u *UI) formAction(w http.ResponseWriter, r *http.Request, apiPath, back string) {
	rec := u.callAPI(r, http.MethodPost, apiPath, "")
	msg := "done"
	if rec.Code >= 300 {
		u.pages.problem(w, rec.Code, "Request refused", resultOf(rec.Code, rec.Body.Bytes()).Message)
		return
	}
	var v struct {
		ID string `json:"id"`
		OK *bool  `json:"ok"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	switch {
	case v.OK != nil && *v.OK:
		msg = "verified"
	case v.OK != nil:
		msg = "verification failed: see the checks"
	}
	if rec.Code == http.StatusCreated && v.ID != "" && strings.HasPrefix(back, "/workflows/") {
		back = "/workflows/" + url.PathEscape(v.ID)
	}
	http.Redirect(w, r, back+"?flash="+url.QueryEscape(msg), http.StatusSeeOther)
}

// workflowRow is one line of the workflows list.
type workflowRow struct {
	workflowView
	Domains     string
	Challenges  string
	IssuerName  string
	LastMessage string
}

func rowOf(wf *storage.Workflow, names map[string]string) workflowRow {
	v := viewWorkflow(wf)
	var doms, chals []string
	for _, id := range wf.Identifiers {
		doms = append(doms, id.Value)
		if id.Challenge != "" && !slices.Contains(chals, id.Challenge) {
			chals = append(chals, id.Challenge)
		}
	}
	row := workflowRow{workflowView: v, Domains: strings.Join(doms, ", "), Challenges: strings.Join(chals, ", "),
		IssuerName: names[wf.IssuerID]}
	if row.IssuerName == "" {
		row.IssuerName = wf.IssuerID
	}
	if len(v.Problem) > 0 {
		var p struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal(v.Problem, &p) == nil {
			row.LastMessage = p.Detail
		}
	}
	return row
}

// issuerNames maps the ACME clients the user sees to their names.
func issuerNames(r *http.Request, app *certlocker.App) (map[string]string, []issuers.View, error) {
	list, err := app.IssuerRegistry().List(r.Context(), storage.IssuerFilter{})
	if err != nil {
		return nil, nil, err
	}
	names := map[string]string{}
	views := make([]issuers.View, 0, len(list))
	for _, iss := range list {
		names[iss.ID] = iss.Name
		views = append(views, issuers.NewView(iss))
	}
	return names, views, nil
}

type workflowsData struct {
	Rows     []workflowRow
	Filter   url.Values
	States   []string
	Issuers  []issuers.View
	Groups   []string
	Pager    pager
	Query    template.URL // the filters, encoded
	Sort     sortLinks
	Filtered bool
	// Live is true on the first page newest first, the one the live
	// stream follows (other pages would get rows that are not theirs).
	Live bool
}

// pager is a list page's links to the pages before and after it (query
// strings; "" when there is none). Pages are keyset pages of the
// service's list: "cursor" pages forward from a row, "before" back.
type pager struct{ Prev, Next template.URL }

// pageOf reads the page a list request asks for.
func pageOf(q url.Values) storage.Page {
	if b := q.Get("before"); b != "" {
		return storage.Page{Limit: pageSize, Cursor: b, Backward: true}
	}
	return storage.Page{Limit: pageSize, Cursor: q.Get("cursor")}
}

// startShort reports whether a backward page reached the start of the
// list with fewer rows than a page (rows before it went away since the
// link was made): the first page is then shown instead, full.
func startShort(p storage.Page, cursor string, rows int) bool {
	return p.Backward && cursor == "" && rows < p.Limit
}

// pagerOf makes the links of page p, which the list answered with
// cursor; base is the query string of the list's filters and sort.
func pagerOf(base url.Values, p storage.Page, cursor string) pager {
	link := func(k, v string) template.URL {
		q := url.Values{}
		for key, vals := range base {
			q[key] = vals
		}
		q.Set(k, v)
		return template.URL("?" + q.Encode()) // encoded by url.Values: safe in an href
	}
	var pg pager
	switch {
	case p.Backward:
		if cursor != "" {
			pg.Prev = link("before", cursor)
		}
		pg.Next = link("cursor", p.Cursor)
	default:
		if p.Cursor != "" {
			pg.Prev = link("before", p.Cursor)
		}
		if cursor != "" {
			pg.Next = link("cursor", cursor)
		}
	}
	return pg
}

// sortLinks is what a table's sortable column headers need: the query
// string that sorts by each key, and the aria-sort value of each
// ("ascending", "descending", or "none").
type sortLinks struct {
	Href map[string]template.URL
	Aria map[string]string
}

// sortLinksOf makes the headers' links for keys, the current sort being
// cur ("-key" is descending); a header's link sorts by its key, flipping
// the direction when it is the current one. def is the sort of "".
func sortLinksOf(base url.Values, keys []string, cur, def string, descFirst map[string]bool) sortLinks {
	if cur == "" {
		cur = def
	}
	name, desc := strings.CutPrefix(cur, "-")
	sl := sortLinks{Href: map[string]template.URL{}, Aria: map[string]string{}}
	for _, k := range keys {
		q := url.Values{}
		for key, vals := range base {
			q[key] = vals
		}
		next := k
		if descFirst[k] {
			next = "-" + k
		}
		sl.Aria[k] = "none"
		if k == name {
			sl.Aria[k] = "ascending"
			next = "-" + k
			if desc {
				sl.Aria[k] = "descending"
				next = k
			}
		}
		q.Set("sort", next)
		sl.Href[k] = template.URL("?" + q.Encode()) // encoded by url.Values: safe in an href
	}
	return sl
}

// groupsOf lists the groups a user may pick.
func groupsOf(s *session, seen ...string) []string {
	if !s.User.Unrestricted() {
		return s.User.Groups
	}
	var out []string
	for _, g := range seen {
		if g != "" && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out
}

func (u *UI) workflowsPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	q := r.URL.Query()
	fq := onlyKeys(q, "state", "issuer", "group", "domain")
	f, err := workflow.FilterFromQuery(fq)
	var inv *workflow.InvalidError
	if errors.As(err, &inv) {
		return BadRequest(inv.Field, "%s", inv.Message)
	} else if err != nil {
		return err
	}
	switch s := q.Get("sort"); s {
	case "", "-created", "created":
		f.Sort = s
	default:
		return BadRequest("sort", "sort must be created (oldest first) or -created (newest first)")
	}
	names, issuerViews, err := issuerNames(r, app)
	if err != nil {
		return err
	}
	// the pager's links keep the filters and the sort
	base := onlyKeys(q, "state", "issuer", "group", "domain")
	if f.Sort != "" {
		base.Set("sort", f.Sort)
	}
	ws, pg, err := listPage(q, base, func(p storage.Page) ([]*storage.Workflow, string, error) {
		return app.Workflows().List(r.Context(), f, p)
	})
	if err != nil {
		return err
	}
	data := workflowsData{Filter: q, States: states(), Issuers: issuerViews, Filtered: len(fq) > 0}
	seen := []string{}
	for _, wf := range ws {
		data.Rows = append(data.Rows, rowOf(wf, names))
		seen = append(seen, wf.Group)
	}
	for _, iss := range issuerViews {
		seen = append(seen, iss.Group)
	}
	data.Groups = groupsOf(d.Session, seen...)
	data.Query = template.URL(fq.Encode()) // encoded by url.Values: safe in an href
	data.Sort = sortLinksOf(fq, []string{"created"}, f.Sort, "-created", map[string]bool{"created": true})
	data.Pager = pg
	data.Live = data.Pager.Prev == "" && f.Sort != "created"
	d.Title, d.Nav, d.Data = "ACME Workflows", "workflows", data
	u.pages.render(w, http.StatusOK, "workflows", d)
	return nil
}

func onlyKeys(q url.Values, keys ...string) url.Values {
	out := url.Values{}
	for _, k := range keys {
		if v := q.Get(k); v != "" {
			out.Set(k, v)
		}
	}
	return out
}

func states() []string {
	return []string{storage.StatePending, storage.StateOrdering, storage.StateAuthorizing, storage.StateFinalizing,
		storage.StateDownloading, storage.StateIssued, storage.StateFailed, storage.StateCancelled, storage.StateRetryScheduled}
}

type workflowData struct {
	workflowRow
	Timeline  []eventView
	Steps     []stepTime
	CanRetry  bool
	CanCancel bool
	CanRenew  bool
	Terminal  bool
}

// stepTime is the time one step of the timeline took.
type stepTime struct {
	Step, Identifier, Node string
	Took                   time.Duration
}

func (u *UI) workflowPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, id string) error {
	wf, err := app.Workflows().Get(r.Context(), id)
	if err != nil {
		return err
	}
	evs, err := app.Workflows().Events(r.Context(), wf.ID, 0, storage.MaxLimit)
	if err != nil {
		return err
	}
	names, _, err := issuerNames(r, app)
	if err != nil {
		return err
	}
	data := workflowData{workflowRow: rowOf(wf, names)}
	for i, ev := range evs {
		data.Timeline = append(data.Timeline, viewEvent(ev))
		if i > 0 {
			data.Steps = append(data.Steps, stepTime{Step: ev.Step, Identifier: ev.Identifier, Node: ev.Node,
				Took: ev.Time.Sub(evs[i-1].Time).Round(time.Millisecond)})
		}
	}
	data.Terminal = storage.IsTerminal(wf.State)
	can := d.Session.User.CanMutate()
	data.CanRetry = can && (wf.State == storage.StateFailed || wf.State == storage.StateRetryScheduled)
	data.CanCancel = can && !storage.IsTerminal(wf.State)
	data.CanRenew = can && wf.State == storage.StateIssued && wf.CertificateID != ""
	d.Title, d.Nav, d.Data = "Workflow "+wf.ID, "workflows", data
	u.pages.render(w, http.StatusOK, "workflow", d)
	return nil
}

type newOrderData struct {
	Issuers   []issuers.View
	Choices   []issuerChoice
	Providers []dnsproviders.View
	Groups    []string
	Form      url.Values
	Preview   *orderPreview
	KeyTypes  []string
}

func (u *UI) newOrderPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, status int, preview *orderPreview) error {
	_, issuerViews, err := issuerNames(r, app)
	if err != nil {
		return err
	}
	provs, err := app.DNS().List(r.Context(), "")
	if err != nil {
		return err
	}
	data := newOrderData{Issuers: issuerViews, Choices: issuerChoices(issuerViews), Form: r.PostForm, Preview: preview,
		KeyTypes: []string{"p256", "p384", "rsa2048", "rsa3072", "rsa4096"}}
	seen := []string{}
	for _, p := range provs {
		data.Providers = append(data.Providers, dnsproviders.NewView(p))
		seen = append(seen, p.Group)
	}
	for _, iss := range issuerViews {
		seen = append(seen, iss.Group)
	}
	data.Groups = groupsOf(d.Session, seen...)
	d.Title, d.Nav, d.Data = "New order", "new", data
	u.pages.render(w, status, "neworder", d)
	return nil
}

// createWorkflowForm turns the new-order form into the admin API's
// POST /workflows body: one identifier per line, "name challenge".
func (u *UI) createWorkflowForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	body := createWorkflowBody{IssuerID: r.PostForm.Get("issuer_id"), Group: r.PostForm.Get("group"),
		KeyType: r.PostForm.Get("key_type")}
	body.Identifiers = formIdentifiers(r, app, "identifiers")
	b, _ := json.Marshal(body)
	rec := u.callAPI(r, http.MethodPost, "workflows", string(b))
	if rec.Code != http.StatusCreated {
		var e Error
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		d.Error = e.Message
		return u.newOrderPage(w, r, app, d, rec.Code, nil)
	}
	var v workflowView
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	http.Redirect(w, r, "/workflows/"+url.PathEscape(v.ID)+"?flash=order+created", http.StatusSeeOther)
	return nil
}

// zoneProvider returns the DNS provider client (of the user's groups)
// whose zone is the longest suffix of name, or "".
func zoneProvider(r *http.Request, app *certlocker.App, name string) string {
	list, err := app.DNS().List(r.Context(), "")
	if err != nil {
		return ""
	}
	name = strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(name), "*."), ".")
	best, bestLen := "", 0
	for _, p := range list {
		for _, z := range p.Zones {
			z = strings.TrimSuffix(strings.ToLower(z), ".")
			if (name == z || strings.HasSuffix(name, "."+z)) && len(z) > bestLen {
				best, bestLen = p.ID, len(z)
			}
		}
	}
	return best
}

type inventoryData struct {
	Report    *inventory.ExpiryReport
	Within90  int
	Rows      []inventory.View
	Drawer    *inventory.View
	Filter    url.Values
	Query     template.URL // the filters and sort, encoded
	Pager     pager
	Sort      sortLinks
	Chart     template.HTML
	Statuses  []string
	Filtered  bool
	CanExport bool
	Tokens    []gateway.View // the drawer's certificate's tokens
}

func (u *UI) inventoryPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	q := r.URL.Query()
	inv := app.Certificates()
	fq := onlyKeys(q, "domain", "issuer", "group", "status", "rating", "sort", "expiry", "expiring_within")
	f, err := inv.FilterFromQuery(fq)
	if err != nil {
		return inventoryError(err)
	}
	certs, pg, err := listPage(q, fq, func(p storage.Page) ([]*storage.Certificate, string, error) {
		return inv.List(r.Context(), f, p)
	})
	if err != nil {
		return inventoryError(err)
	}
	// the widgets count the active certificates of the other filters
	ef, _ := inv.FilterFromQuery(onlyKeys(q, "domain", "issuer", "group", "rating"))
	if ef.Status == "" {
		ef.Status = storage.CertStatusActive
	}
	rep, err := inv.Expiry(r.Context(), inventory.ExpiryQuery{Filter: ef, Horizon: 90 * 24 * time.Hour, Step: 7 * 24 * time.Hour})
	if err != nil {
		return inventoryError(err)
	}
	filters := onlyKeys(q, "domain", "issuer", "group", "status", "rating", "expiry", "expiring_within")
	data := inventoryData{Report: rep, Filter: q, Pager: pg,
		Sort:     sortLinksOf(filters, storage.CertificateSorts, q.Get("sort"), "expires", map[string]bool{"issued": true, "added": true}),
		Statuses: []string{storage.CertStatusActive, storage.CertStatusRenewed, storage.CertStatusRevoked, "any"}, Query: template.URL(fq.Encode()),
		Filtered: len(filters) > 0}
	for _, p := range rep.Timeline {
		data.Within90 += p.Count
	}
	data.Chart = expiryChart(rep.Timeline)
	data.CanExport = d.Session.User.CanMutate() && inv.CanExportKeys(inventory.Role(d.Session.User.Role))
	for _, c := range certs {
		data.Rows = append(data.Rows, inv.View(c, false))
	}
	if id := q.Get("cert"); id != "" {
		c, err := inv.Get(r.Context(), id)
		if err != nil {
			return err
		}
		v := inv.View(c, true)
		data.Drawer = &v
		data.Tokens = drawerTokens(r, app, c.ID)
	}
	d.Title, d.Nav, d.Data = "Inventory", "inventory", data
	u.pages.render(w, http.StatusOK, "inventory", d)
	return nil
}

// expiryChart draws the expiry timeline as an SVG bar chart.
func expiryChart(tl []inventory.TimelinePoint) template.HTML {
	const w, h, pad = 640, 140, 20
	max := 1
	for _, p := range tl {
		if p.Count > max {
			max = p.Count
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="Certificates expiring per week, next 90 days">`, w, h+pad)
	if len(tl) > 0 {
		bw := (w - pad) / len(tl)
		for i, p := range tl {
			bh := p.Count * h / max
			x := pad + i*bw
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d"><title>%s: %d</title></rect>`, x, h-bh, bw-4, bh,
				template.HTMLEscapeString(p.Start.Format("Jan 2")), p.Count)
			if i%2 == 0 {
				fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`, x, h+14, template.HTMLEscapeString(p.Start.Format("Jan 2")))
			}
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built from numbers and escaped text only
}

// listPage asks list for the page a list screen's request names; a
// backward page that would be short at the start of the list is the first
// page instead (see startShort). It returns the rows and the pager.
func listPage[T any](q url.Values, base url.Values, list func(storage.Page) ([]T, string, error)) ([]T, pager, error) {
	p := pageOf(q)
	rows, cursor, err := list(p)
	if err == nil && startShort(p, cursor, len(rows)) {
		p = storage.Page{Limit: pageSize}
		rows, cursor, err = list(p)
	}
	if errors.Is(err, storage.ErrInvalidCursor) {
		return nil, pager{}, BadRequest("cursor", "this page link is out of date: go back to the first page")
	} else if err != nil {
		return nil, pager{}, err
	}
	return rows, pagerOf(base, p, cursor), nil
}

type issuersData struct {
	Items   []issuers.View
	Catalog []issuers.CatalogEntry
	Pager   pager
}

// issuersPage lists the ACME clients by name, a page at a time, with the
// CA catalog.
func (u *UI) issuersPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	list, pg, err := listPage(r.URL.Query(), url.Values{}, func(p storage.Page) ([]*storage.Issuer, string, error) {
		return app.IssuerRegistry().ListPage(r.Context(), storage.IssuerFilter{}, p)
	})
	if err != nil {
		return err
	}
	data := issuersData{Items: make([]issuers.View, 0, len(list)), Catalog: issuers.Catalog(), Pager: pg}
	for _, iss := range list {
		data.Items = append(data.Items, issuers.NewView(iss))
	}
	d.Title, d.Nav, d.Data = "ACME clients", "issuers", data
	u.pages.render(w, http.StatusOK, "issuers", d)
	return nil
}

type dnsListData struct {
	Items []dnsproviders.View
	Pager pager
}

// dnsPage lists the DNS provider clients by name, a page at a time.
func (u *UI) dnsPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	list, pg, err := listPage(r.URL.Query(), url.Values{}, func(p storage.Page) ([]*storage.DNSProvider, string, error) {
		return app.DNS().ListPage(r.Context(), "", p)
	})
	if err != nil {
		return err
	}
	data := dnsListData{Items: make([]dnsproviders.View, 0, len(list)), Pager: pg}
	for _, p := range list {
		data.Items = append(data.Items, dnsproviders.NewView(p))
	}
	d.Title, d.Nav, d.Data = "DNS providers", "dns", data
	u.pages.render(w, http.StatusOK, "dns", d)
	return nil
}

type auditData struct {
	Items  []*storage.AuditEntry
	Filter url.Values
	// Pager links the pages before and after this one, with the filters.
	Pager   pager
	Results []string
	Groups  []string
	// Scoped is true for a group-restricted reader.
	Scoped   bool
	Filtered bool
}

// auditPage shows the audit log, newest first, a page at a time, with
// filters (actor, action, result, group, resource, date range). Admins
// read every entry; operators and viewers the entries of their groups and
// their own actions (the app scopes it: see certlocker.App.AuditLog).
func (u *UI) auditPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	q := r.URL.Query()
	fq := onlyKeys(q, "action", "target", "actor", "group", "result", "since", "until")
	f := storage.AuditFilter{Action: strings.TrimSpace(fq.Get("action")), Target: strings.TrimSpace(fq.Get("target")),
		Actor: strings.TrimSpace(fq.Get("actor")), Group: fq.Get("group"), Result: fq.Get("result")}
	if !storage.ValidAuditResult(f.Result) {
		return BadRequest("result", "result must be ok, refused or failed")
	}
	// dates are whole UTC days: since its start, until its end
	for _, df := range []struct {
		name string
		to   *time.Time
		add  int
	}{{"since", &f.Since, 0}, {"until", &f.Until, 1}} {
		if s := fq.Get(df.name); s != "" {
			t, err := time.Parse("2006-01-02", s)
			if err != nil {
				return BadRequest(df.name, "%s must be a date such as 2026-05-20", df.name)
			}
			*df.to = t.AddDate(0, 0, df.add)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return BadRequest("until", "until must not be before since")
	}
	entries, pg, err := listPage(q, fq, func(p storage.Page) ([]*storage.AuditEntry, string, error) {
		return app.AuditLog(r.Context(), f, p)
	})
	if err != nil {
		return err
	}
	seen := make([]string, 0, len(entries))
	for _, e := range entries {
		seen = append(seen, e.Group)
	}
	d.Title, d.Nav = "Audit log", "audit"
	d.Data = auditData{Items: entries, Filter: fq, Pager: pg,
		Results: []string{storage.AuditOK, storage.AuditRefused, storage.AuditFailed}, Groups: groupsOf(d.Session, append(seen, f.Group)...),
		Scoped: !d.Session.User.Unrestricted(), Filtered: len(fq) > 0}
	u.pages.render(w, http.StatusOK, "audit", d)
	return nil
}

// liveWorkflows streams the workflows list's changes as Server-Sent
// Events ("workflow" events with the row's id, state, status), so the
// list page updates without reloading. The streams of one list share one
// look at the store per second (liveHub); each sends what changed since
// it last sent.
func (u *UI) liveWorkflows(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	q := r.URL.Query()
	f, err := workflow.FilterFromQuery(onlyKeys(q, "state", "issuer", "group", "domain"))
	if err != nil {
		return BadRequest("", "%v", err)
	}
	if _, ok := storage.NarrowGroup(r.Context(), f.Group); !ok {
		return &Error{Status: http.StatusNotFound, Message: "that group is not one of yours"}
	}
	snaps, stop := u.live.subscribe(r.Context(), f)
	defer stop()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	last := map[string]string{}
	first := true
	for {
		select {
		case <-r.Context().Done():
			return nil
		case snap := <-snaps:
			for _, row := range snap.rows {
				if last[row.id] == row.key {
					continue
				}
				last[row.id] = row.key
				fmt.Fprintf(w, "event: workflow\ndata: %s\n\n", row.data)
			}
			if first {
				fmt.Fprint(w, ": ready\n\n")
				first = false
			}
			if rc.Flush() != nil {
				return nil
			}
		}
	}
}

func humanAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}
