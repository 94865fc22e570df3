package acmetest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// cfResponse is a decoded Cloudflare envelope as a client sees it.
type cfResponse struct {
	status   int
	header   http.Header
	raw      []byte
	Success  bool            `json:"success"`
	Errors   []cfError       `json:"errors"`
	Messages []cfMessage     `json:"messages"`
	Result   json.RawMessage `json:"result"`
	Info     *cfResultInfo   `json:"result_info"`
}

func (r *cfResponse) codes() []int {
	var out []int
	for _, e := range r.Errors {
		out = append(out, e.Code)
	}
	return out
}

// cfCall sends a request to the real Cloudflare API URL through the fake's
// client, with token as bearer token unless it is empty (and with auth as the
// raw Authorization header if set).
func cfCall(t *testing.T, c *Cloudflare, method, path, auth string, body any) *cfResponse {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "https://api.cloudflare.com/client/v4"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := &cfResponse{status: resp.StatusCode, header: resp.Header, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
		if out.Errors == nil || out.Messages == nil {
			t.Fatalf("%s %s: errors/messages must be arrays: %s", method, path, raw)
		}
	}
	return out
}

func bearer(token string) string { return "Bearer " + token }

// newCloudflareFixture starts a DNS server and a fake API for example.test and
// other.test with a few tokens.
func newCloudflareFixture(t *testing.T) (*DNSServer, *Cloudflare) {
	t.Helper()
	d := NewDNSServer(t, "example.test", "other.test")
	c := NewCloudflare(t, d)
	c.AddToken("edit-token", PermZoneRead("example.test"), PermDNSEdit("example.test"))
	c.AddToken("read-token", PermZoneRead("example.test"), PermDNSRead("example.test"))
	c.AddToken("dns-only-token", PermDNSEdit("example.test"))
	c.AddToken("zone-token", PermZoneRead(AllZones))
	c.AddToken("other-token", PermZoneRead("other.test"), PermDNSEdit("other.test"))
	c.AddAccountToken("account-token", PermDNSEdit(AllZones))
	return d, c
}

func TestCloudflareAuthentication(t *testing.T) {
	t.Parallel()
	_, c := newCloudflareFixture(t)
	zone := c.ZoneID("example.test")
	records := "/zones/" + zone + "/dns_records"
	txt := map[string]any{"type": "TXT", "name": "_acme-challenge", "content": `"v"`}

	tests := []struct {
		name     string
		method   string
		path     string
		auth     string
		body     any
		status   int
		codes    []int
		messages []string
	}{
		{name: "missing header", method: "GET", path: "/zones", status: 400, codes: []int{CFCodeMissingAuth}},
		{name: "malformed token", method: "GET", path: "/zones", auth: "Bearer not a token!", status: 400, codes: []int{CFCodeInvalidHeaders}},
		{name: "not bearer", method: "GET", path: "/zones", auth: "Basic Zm9vOmJhcg==", status: 400, codes: []int{CFCodeInvalidHeaders}},
		{name: "unknown token", method: "GET", path: "/zones", auth: bearer("nope"), status: 403, codes: []int{CFCodeAuthentication}},
		{name: "unknown token on records", method: "GET", path: records, auth: bearer("nope"), status: 403, codes: []int{CFCodeAuthentication}},
		{name: "no permission on zone", method: "GET", path: records, auth: bearer("other-token"), status: 403, codes: []int{CFCodeAuthentication}},
		{name: "read-only token cannot write", method: "POST", path: records, auth: bearer("read-token"), body: txt, status: 403, codes: []int{CFCodeUnauthorized}},
		{name: "read-only token can read", method: "GET", path: records, auth: bearer("read-token"), status: 200},
		{name: "zone-read token cannot read records", method: "GET", path: records, auth: bearer("zone-token"), status: 403, codes: []int{CFCodeUnauthorized}},
		{name: "dns-only token cannot read zone", method: "GET", path: "/zones/" + zone, auth: bearer("dns-only-token"), status: 403, codes: []int{CFCodeUnauthorized}},
		{name: "verify user token", method: "GET", path: "/user/tokens/verify", auth: bearer("edit-token"), status: 200, messages: []string{"This API Token is valid and active"}},
		{name: "verify unknown token", method: "GET", path: "/user/tokens/verify", auth: bearer("nope"), status: 401, codes: []int{CFCodeInvalidToken}},
		{name: "verify malformed token", method: "GET", path: "/user/tokens/verify", auth: "Bearer a b", status: 400, codes: []int{CFCodeInvalidHeaders}},
		{name: "verify account token as user token", method: "GET", path: "/user/tokens/verify", auth: bearer("account-token"), status: 401, codes: []int{CFCodeInvalidToken}},
		{name: "verify account token", method: "GET", path: "/accounts/" + c.AccountID() + "/tokens/verify", auth: bearer("account-token"), status: 200, messages: []string{"This API Token is valid and active"}},
		{name: "verify account token on other account", method: "GET", path: "/accounts/0123456789abcdef0123456789abcdef/tokens/verify", auth: bearer("account-token"), status: 401, codes: []int{CFCodeInvalidToken}},
		{name: "verify user token as account token", method: "GET", path: "/accounts/" + c.AccountID() + "/tokens/verify", auth: bearer("edit-token"), status: 401, codes: []int{CFCodeInvalidToken}},
		{name: "unknown route", method: "GET", path: "/zones/" + zone + "/settings", auth: bearer("edit-token"), status: 404, codes: []int{CFCodeNoRoute}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := cfCall(t, c, tc.method, tc.path, tc.auth, tc.body)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tc.status, r.raw)
			}
			if got := r.codes(); !slices.Equal(got, tc.codes) {
				t.Fatalf("codes = %v, want %v: %s", got, tc.codes, r.raw)
			}
			if r.Success != (tc.status == 200) {
				t.Fatalf("success = %t for status %d", r.Success, r.status)
			}
			var msgs []string
			for _, m := range r.Messages {
				msgs = append(msgs, m.Message)
			}
			if !slices.Equal(msgs, tc.messages) {
				t.Fatalf("messages = %q, want %q", msgs, tc.messages)
			}
		})
	}

	t.Run("invalid format error chain", func(t *testing.T) {
		r := cfCall(t, c, "GET", "/zones", "Bearer a b", nil)
		if len(r.Errors) != 1 || len(r.Errors[0].ErrorChain) != 1 || r.Errors[0].ErrorChain[0].Code != CFCodeInvalidAuthFormat {
			t.Fatalf("errors = %+v", r.Errors)
		}
	})
	t.Run("revoked token", func(t *testing.T) {
		c.AddToken("short-lived", PermZoneRead(AllZones))
		if r := cfCall(t, c, "GET", "/zones", bearer("short-lived"), nil); r.status != 200 {
			t.Fatalf("status before revocation = %d", r.status)
		}
		c.RevokeToken("short-lived")
		if r := cfCall(t, c, "GET", "/zones", bearer("short-lived"), nil); r.status != 403 {
			t.Fatalf("status after revocation = %d", r.status)
		}
	})
}

func TestCloudflareZones(t *testing.T) {
	t.Parallel()
	_, c := newCloudflareFixture(t)

	type zone struct {
		ID          string   `json:"id"`
		Name        string   `json:"name"`
		Status      string   `json:"status"`
		NameServers []string `json:"name_servers"`
		Permissions []string `json:"permissions"`
		Account     struct {
			ID string `json:"id"`
		} `json:"account"`
	}
	tests := []struct {
		name  string
		token string
		query string
		want  []string
	}{
		{name: "all zones", token: "zone-token", want: []string{"example.test", "other.test"}},
		{name: "by name", token: "zone-token", query: "?name=example.test", want: []string{"example.test"}},
		{name: "by name with trailing dot and case", token: "zone-token", query: "?name=Example.TEST.", want: []string{"example.test"}},
		{name: "unknown name", token: "zone-token", query: "?name=nope.test", want: nil},
		{name: "scoped token sees its zone", token: "edit-token", want: []string{"example.test"}},
		{name: "dns-only token sees nothing", token: "dns-only-token", query: "?name=example.test", want: nil},
		{name: "account filter", token: "zone-token", query: "?account.id=" + c.AccountID() + "&status=active", want: []string{"example.test", "other.test"}},
		{name: "descending", token: "zone-token", query: "?direction=desc", want: []string{"other.test", "example.test"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := cfCall(t, c, "GET", "/zones"+tc.query, bearer(tc.token), nil)
			if r.status != 200 || !r.Success {
				t.Fatalf("status = %d: %s", r.status, r.raw)
			}
			var zones []zone
			if err := json.Unmarshal(r.Result, &zones); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, z := range zones {
				names = append(names, z.Name)
				if z.ID != c.ZoneID(z.Name) || z.Status != "active" || z.Account.ID != c.AccountID() {
					t.Errorf("zone %+v", z)
				}
				if !slices.Equal(z.NameServers, []string{"ns1." + z.Name}) {
					t.Errorf("name servers = %q", z.NameServers)
				}
			}
			if !slices.Equal(names, tc.want) {
				t.Fatalf("zones = %q, want %q", names, tc.want)
			}
			if r.Info == nil || r.Info.Count != len(tc.want) || r.Info.TotalCount != len(tc.want) || r.Info.PerPage != 20 || r.Info.Page != 1 {
				t.Fatalf("result_info = %+v", r.Info)
			}
		})
	}

	t.Run("get zone", func(t *testing.T) {
		r := cfCall(t, c, "GET", "/zones/"+c.ZoneID("example.test"), bearer("edit-token"), nil)
		var z zone
		if err := json.Unmarshal(r.Result, &z); err != nil || r.status != 200 {
			t.Fatalf("status %d, %v: %s", r.status, err, r.raw)
		}
		want := []string{"#zone:read", "#dns_records:read", "#dns_records:edit"}
		if z.Name != "example.test" || !slices.Equal(z.Permissions, want) {
			t.Fatalf("zone = %+v", z)
		}
	})
	t.Run("unknown zone id", func(t *testing.T) {
		r := cfCall(t, c, "GET", "/zones/0123456789abcdef0123456789abcdef/dns_records", bearer("edit-token"), nil)
		if r.status != 400 || !slices.Equal(r.codes(), []int{CFCodeBadIdentifier, CFCodeNoRoute}) {
			t.Fatalf("status %d codes %v", r.status, r.codes())
		}
	})
}

// cfRecordJSON is a record as the API returns it.
type cfRecordJSON struct {
	ID       string `json:"id"`
	ZoneID   string `json:"zone_id"`
	ZoneName string `json:"zone_name"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Content  string `json:"content"`
	TTL      int    `json:"ttl"`
	Proxied  bool   `json:"proxied"`
	Created  string `json:"created_on"`
}

func decodeRecord(t *testing.T, r *cfResponse) cfRecordJSON {
	t.Helper()
	var rec cfRecordJSON
	if err := json.Unmarshal(r.Result, &rec); err != nil {
		t.Fatalf("decoding record %s: %v", r.raw, err)
	}
	return rec
}

func TestCloudflareRecordLifecycle(t *testing.T) {
	t.Parallel()
	d, c := newCloudflareFixture(t)
	zoneID := c.ZoneID("example.test")
	records := "/zones/" + zoneID + "/dns_records"
	auth := bearer("edit-token")

	// libdns/cloudflare sends the name relative to the zone and TXT content
	// quoted; the API answers with the absolute name and TTL 1 (automatic).
	r := cfCall(t, c, "POST", records, auth, map[string]any{"type": "TXT", "name": "_acme-challenge.www", "content": `"digest-1"`})
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	rec := decodeRecord(t, r)
	if rec.Name != "_acme-challenge.www.example.test" || rec.Content != `"digest-1"` || rec.TTL != 1 || rec.ZoneID != zoneID || rec.ZoneName != "example.test" || len(rec.ID) != 32 {
		t.Fatalf("created record = %+v", rec)
	}
	if got := d.TXT("_acme-challenge.www.example.test"); !slices.Equal(got, []string{"digest-1"}) {
		t.Fatalf("published TXT = %q", got)
	}

	for _, body := range []map[string]any{
		{"type": "TXT", "name": "_acme-challenge.www.example.test", "content": `"digest-2"`, "ttl": 120},
		{"type": "TXT", "name": "@", "content": "unquoted apex"},
		{"type": "A", "name": "www", "content": "127.0.0.1"},
	} {
		if r := cfCall(t, c, "POST", records, auth, body); r.status != 200 {
			t.Fatalf("create %v: %d %s", body, r.status, r.raw)
		}
	}
	if got := d.TXT("example.test"); !slices.Equal(got, []string{"unquoted apex"}) {
		t.Fatalf("apex TXT = %q", got)
	}

	listTests := []struct {
		name  string
		query string
		want  []string
	}{
		{name: "all", query: "", want: []string{`"digest-1"`, `"digest-2"`, "unquoted apex", "127.0.0.1"}},
		{name: "type", query: "?type=A", want: []string{"127.0.0.1"}},
		{name: "name is absolute", query: "?type=TXT&name=_acme-challenge.www.example.test", want: []string{`"digest-1"`, `"digest-2"`}},
		{name: "relative name matches nothing", query: "?name=_acme-challenge.www", want: nil},
		{name: "name.exact", query: "?name.exact=www.example.test", want: []string{"127.0.0.1"}},
		{name: "content.contains unquoted", query: "?type=TXT&content.contains=digest-2", want: []string{`"digest-2"`}},
		{name: "content exact quoted", query: "?content=%22digest-1%22", want: []string{`"digest-1"`}},
		{name: "name.startswith", query: "?name.startswith=_acme", want: []string{`"digest-1"`, `"digest-2"`}},
		{name: "match any", query: "?match=any&type=A&content.exact=unquoted+apex", want: []string{"unquoted apex", "127.0.0.1"}},
		{name: "order by content desc", query: "?type=TXT&order=content&direction=desc", want: []string{"unquoted apex", `"digest-2"`, `"digest-1"`}},
		{name: "second page", query: "?per_page=5&page=2", want: nil},
	}
	for _, tc := range listTests {
		t.Run("list/"+tc.name, func(t *testing.T) {
			r := cfCall(t, c, "GET", records+tc.query, auth, nil)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			var recs []cfRecordJSON
			if err := json.Unmarshal(r.Result, &recs); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, rec := range recs {
				got = append(got, rec.Content)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("contents = %q, want %q", got, tc.want)
			}
			if r.Info == nil || r.Info.PerPage == 0 {
				t.Fatalf("result_info = %+v", r.Info)
			}
		})
	}

	t.Run("patch", func(t *testing.T) {
		r := cfCall(t, c, "PATCH", records+"/"+rec.ID, auth, map[string]any{"content": `"digest-3"`})
		if got := decodeRecord(t, r); r.status != 200 || got.Content != `"digest-3"` || got.Name != rec.Name {
			t.Fatalf("patch: %d %s", r.status, r.raw)
		}
		if got := d.TXT("_acme-challenge.www.example.test"); !slices.Equal(got, []string{"digest-2", "digest-3"}) {
			t.Fatalf("TXT after patch = %q", got)
		}
	})
	t.Run("put renames", func(t *testing.T) {
		r := cfCall(t, c, "PUT", records+"/"+rec.ID, auth, map[string]any{"type": "TXT", "name": "moved", "content": `"digest-3"`})
		if got := decodeRecord(t, r); r.status != 200 || got.Name != "moved.example.test" || got.TTL != 1 {
			t.Fatalf("put: %d %s", r.status, r.raw)
		}
		if got := d.TXT("_acme-challenge.www.example.test"); !slices.Equal(got, []string{"digest-2"}) {
			t.Fatalf("old name TXT after put = %q", got)
		}
		if got := d.TXT("moved.example.test"); !slices.Equal(got, []string{"digest-3"}) {
			t.Fatalf("new name TXT after put = %q", got)
		}
	})
	t.Run("get", func(t *testing.T) {
		r := cfCall(t, c, "GET", records+"/"+rec.ID, auth, nil)
		if got := decodeRecord(t, r); got.ID != rec.ID || got.Name != "moved.example.test" {
			t.Fatalf("get: %d %s", r.status, r.raw)
		}
	})
	t.Run("delete answers with the id only", func(t *testing.T) {
		r := cfCall(t, c, "DELETE", records+"/"+rec.ID, auth, nil)
		if r.status != 200 || string(r.Result) != `{"id":"`+rec.ID+`"}` {
			t.Fatalf("delete: %d %s", r.status, r.raw)
		}
		if got := d.TXT("moved.example.test"); got != nil {
			t.Fatalf("TXT after delete = %q", got)
		}
		if r := cfCall(t, c, "DELETE", records+"/"+rec.ID, auth, nil); r.status != 404 || !slices.Equal(r.codes(), []int{CFCodeRecordNotFound}) {
			t.Fatalf("second delete: %d %s", r.status, r.raw)
		}
	})

	errorTests := []struct {
		name   string
		method string
		body   any
		status int
		codes  []int
	}{
		{name: "identical record", method: "POST", body: map[string]any{"type": "TXT", "name": "_acme-challenge.www", "content": `"digest-2"`}, status: 400, codes: []int{CFCodeIdenticalRecord}},
		{name: "bad A content", method: "POST", body: map[string]any{"type": "A", "name": "x", "content": "::1"}, status: 400, codes: []int{CFCodeDNSValidation}},
		{name: "bad type", method: "POST", body: map[string]any{"type": "BOGUS", "name": "x", "content": "y"}, status: 400, codes: []int{CFCodeDNSValidation}},
		{name: "bad ttl", method: "POST", body: map[string]any{"type": "TXT", "name": "x", "content": "y", "ttl": 5}, status: 400, codes: []int{CFCodeDNSValidation}},
		{name: "missing content", method: "POST", body: map[string]any{"type": "TXT", "name": "x"}, status: 400, codes: []int{CFCodeDNSValidation}},
		{name: "malformed json", method: "POST", body: "not an object", status: 400, codes: []int{CFCodeMalformedJSON}},
	}
	for _, tc := range errorTests {
		t.Run("error/"+tc.name, func(t *testing.T) {
			r := cfCall(t, c, tc.method, records, auth, tc.body)
			if r.status != tc.status || !slices.Equal(r.codes(), tc.codes) || r.Success {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
	}
	if got := len(c.Records("example.test.")); got != 3 {
		t.Fatalf("records left = %d, want 3", got)
	}
}

func TestCloudflareFaults(t *testing.T) {
	t.Parallel()
	zonesPath := "/zones?name=example.test"
	tests := []struct {
		name       string
		setup      func(c *Cloudflare)
		method     string
		path       string
		body       any
		status     int
		codes      []int
		retryAfter string
		html       bool
		published  bool
	}{
		{
			name:   "rate limit",
			setup:  func(c *Cloudflare) { c.FailNext(1, RateLimitFault(1500*time.Millisecond)) },
			method: "GET", path: zonesPath, status: 429, codes: []int{CFCodeRateLimited}, retryAfter: "2",
		},
		{
			name:   "rate limit before authentication",
			setup:  func(c *Cloudflare) { c.FailNext(1, RateLimitFault(time.Second)); c.RevokeToken("edit-token") },
			method: "GET", path: zonesPath, status: 429, codes: []int{CFCodeRateLimited}, retryAfter: "1",
		},
		{
			name: "fault for another endpoint does not apply",
			setup: func(c *Cloudflare) {
				c.FailNext(1, Fault{Endpoint: EndpointDeleteRecord, Status: 500, Code: 1, Message: "x"})
			},
			method: "GET", path: zonesPath, status: 200,
		},
		{
			name:   "edge 502 is html",
			setup:  func(c *Cloudflare) { c.FailNext(1, EdgeErrorFault(http.StatusBadGateway)) },
			method: "GET", path: zonesPath, status: 502, html: true,
		},
		{
			name: "hook",
			setup: func(c *Cloudflare) {
				c.SetFaultHook(func(r *http.Request) *Fault {
					if r.Method == http.MethodPost {
						return &Fault{Status: 503, Code: 10001, Message: "service unavailable"}
					}
					return nil
				})
			},
			method: "POST", path: "records", body: map[string]any{"type": "TXT", "name": "h", "content": `"v"`}, status: 503, codes: []int{10001},
		},
		{
			name: "lost response after commit",
			setup: func(c *Cloudflare) {
				c.FailNext(1, Fault{Endpoint: EndpointCreateRecord, Status: 500, Code: 10002, Message: "internal", AfterCommit: true})
			},
			method: "POST", path: "records", body: map[string]any{"type": "TXT", "name": "h", "content": `"v"`}, status: 500, codes: []int{10002}, published: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, c := newCloudflareFixture(t)
			tc.setup(c)
			path := tc.path
			if path == "records" {
				path = "/zones/" + c.ZoneID("example.test") + "/dns_records"
			}
			r := cfCall(t, c, tc.method, path, bearer("edit-token"), tc.body)
			if r.status != tc.status || !slices.Equal(r.codes(), tc.codes) {
				t.Fatalf("%d %v: %s", r.status, r.codes(), r.raw)
			}
			if got := r.header.Get("Retry-After"); got != tc.retryAfter {
				t.Fatalf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			if isHTML := bytes.HasPrefix(r.raw, []byte("<html>")); isHTML != tc.html {
				t.Fatalf("html body = %t: %s", isHTML, r.raw)
			}
			if got := len(d.TXT("h.example.test")) > 0; got != tc.published {
				t.Fatalf("published = %t, want %t", got, tc.published)
			}
			log := c.Requests()
			if len(log) != 1 || log[0].Status != tc.status || log[0].Fault != (tc.status != 200) || log[0].Token != "edit-token" {
				t.Fatalf("request log = %+v", log)
			}
		})
	}

	t.Run("fail next n in order", func(t *testing.T) {
		t.Parallel()
		_, c := newCloudflareFixture(t)
		c.FailNext(2, RateLimitFault(time.Second))
		c.FailNext(1, Fault{Status: 500, Code: 10002, Message: "internal"})
		var statuses []int
		for range 4 {
			statuses = append(statuses, cfCall(t, c, "GET", zonesPath, bearer("edit-token"), nil).status)
		}
		if want := []int{429, 429, 500, 200}; !slices.Equal(statuses, want) {
			t.Fatalf("statuses = %v, want %v", statuses, want)
		}
		if c.PendingFaults() != 0 || c.RequestCount(EndpointListZones) != 4 || c.RequestCount(EndpointCreateRecord) != 0 {
			t.Fatalf("pending %d, list count %d", c.PendingFaults(), c.RequestCount(EndpointListZones))
		}
		c.ResetRequests()
		if c.RequestCount("") != 0 {
			t.Fatalf("request log not reset")
		}
	})
}

func TestCloudflareHTTPClient(t *testing.T) {
	t.Parallel()
	_, c := newCloudflareFixture(t)
	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{name: "real api url is rewritten", url: "https://api.cloudflare.com/client/v4/user/tokens/verify"},
		{name: "explicit port 443", url: "https://api.cloudflare.com:443/client/v4/user/tokens/verify"},
		{name: "fake url itself", url: c.URL() + "/user/tokens/verify"},
		{name: "plain http is refused", url: "http://api.cloudflare.com/client/v4/user/tokens/verify", wantErr: true},
		{name: "other host is refused", url: "https://example.com/", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), "GET", tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", bearer("edit-token"))
			resp, err := c.HTTPClient().Do(req)
			if tc.wantErr {
				if err == nil {
					_ = resp.Body.Close()
					t.Fatal("request succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d", resp.StatusCode)
			}
		})
	}
}

func TestCloudflareAddRecord(t *testing.T) {
	t.Parallel()
	d, c := newCloudflareFixture(t)
	rec, err := c.AddRecord("example.test.", "TXT", "_acme-challenge", `"stale"`)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Name != "_acme-challenge.example.test" || rec.ZoneID != c.ZoneID("example.test") || rec.TTL != 1 {
		t.Fatalf("record = %+v", rec)
	}
	if got := d.TXT("_acme-challenge.example.test"); !slices.Equal(got, []string{"stale"}) {
		t.Fatalf("TXT = %q", got)
	}
	if _, err := c.AddRecord("example.test", "TXT", "_acme-challenge", `"stale"`); err == nil {
		t.Fatal("duplicate accepted")
	}
	if _, err := c.AddRecord("nope.test", "TXT", "x", "y"); err == nil {
		t.Fatal("unknown zone accepted")
	}
	if c.RequestCount("") != 0 {
		t.Fatal("AddRecord logged a request")
	}
}

func TestTXTContentValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{name: "quoted", content: `"abc"`, want: "abc"},
		{name: "unquoted", content: "abc def", want: "abc def"},
		{name: "several strings", content: `"ab" "cd"`, want: "abcd"},
		{name: "escaped quote", content: `"a\"b"`, want: `a"b`},
		{name: "unterminated", content: `"abc`, want: `"abc`},
		{name: "garbage after string", content: `"a" b`, want: `"a" b`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := txtContentValue(tc.content); got != tc.want {
				t.Fatalf("txtContentValue(%q) = %q, want %q", tc.content, got, tc.want)
			}
		})
	}
}

func TestNewCloudflareZones(t *testing.T) {
	t.Parallel()
	d := NewDNSServer(t, "example.test", "other.test")
	tests := []struct {
		name string
		dns  *DNSServer
		opts []CloudflareOption
		want []string
	}{
		{name: "all zones of the dns server", dns: d, want: []string{"example.test", "other.test"}},
		{name: "subset", dns: d, opts: []CloudflareOption{WithCloudflareZones("other.test.")}, want: []string{"other.test"}},
		{name: "api only", opts: []CloudflareOption{WithCloudflareZones("api.test"), WithCloudflareAccount("0123456789abcdef0123456789abcdef", "Acme")}, want: []string{"api.test"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := NewCloudflare(t, tc.dns, tc.opts...)
			c.AddToken("t", PermZoneRead(AllZones), PermDNSEdit(AllZones))
			r := cfCall(t, c, "GET", "/zones", bearer("t"), nil)
			var zones []struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(r.Result, &zones); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, z := range zones {
				got = append(got, z.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("zones = %q, want %q", got, tc.want)
			}
			for _, z := range tc.want {
				if len(c.ZoneID(z)) != 32 {
					t.Fatalf("zone id of %s = %q", z, c.ZoneID(z))
				}
			}
			if tc.dns == nil {
				rec := cfCall(t, c, "POST", "/zones/"+c.ZoneID("api.test")+"/dns_records", bearer("t"), map[string]any{"type": "TXT", "name": "x", "content": `"v"`})
				if rec.status != 200 {
					t.Fatalf("create without dns server: %d %s", rec.status, rec.raw)
				}
			}
		})
	}
}
