package acmetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/cloudflare"
)

// CloudflareAPIHost is the host of the real Cloudflare API, whose requests
// the client returned by Cloudflare.HTTPClient redirects to the fake.
const CloudflareAPIHost = "api.cloudflare.com"

// cloudflareAPIPrefix is the path prefix of the v4 API, kept by the fake so
// only the scheme and host of a request need rewriting.
const cloudflareAPIPrefix = "/client/v4"

// CloudflareEndpoint names one route of the fake Cloudflare API as
// "METHOD /path" with {placeholders}, as in the Cloudflare API reference.
type CloudflareEndpoint string

// The routes the fake implements: the subset libdns/cloudflare v0.2.2 uses,
// plus single-object reads and token verification.
const (
	EndpointListZones          CloudflareEndpoint = "GET /zones"
	EndpointGetZone            CloudflareEndpoint = "GET /zones/{zone_id}"
	EndpointListRecords        CloudflareEndpoint = "GET /zones/{zone_id}/dns_records"
	EndpointCreateRecord       CloudflareEndpoint = "POST /zones/{zone_id}/dns_records"
	EndpointGetRecord          CloudflareEndpoint = "GET /zones/{zone_id}/dns_records/{dns_record_id}"
	EndpointUpdateRecord       CloudflareEndpoint = "PUT /zones/{zone_id}/dns_records/{dns_record_id}"
	EndpointPatchRecord        CloudflareEndpoint = "PATCH /zones/{zone_id}/dns_records/{dns_record_id}"
	EndpointDeleteRecord       CloudflareEndpoint = "DELETE /zones/{zone_id}/dns_records/{dns_record_id}"
	EndpointVerifyUserToken    CloudflareEndpoint = "GET /user/tokens/verify"
	EndpointVerifyAccountToken CloudflareEndpoint = "GET /accounts/{account_id}/tokens/verify"
)

// Cloudflare error codes and messages the fake answers with. The
// authentication, routing, rate-limit and record-existence codes are those of
// the live API; the record validation details (9005, 9021, 9207 and the
// messages in a 1004 error_chain) are approximations, since Cloudflare does
// not document them.
const (
	CFCodeMissingAuth        = 9106  // "Missing X-Auth-Key, X-Auth-Email or Authorization headers" (HTTP 400)
	CFCodeInvalidHeaders     = 6003  // "Invalid request headers" (HTTP 400), chained with 6111
	CFCodeInvalidAuthFormat  = 6111  // "Invalid format for Authorization header"
	CFCodeAuthentication     = 10000 // "Authentication error" (HTTP 403): unknown token, or no access to the zone
	CFCodeUnauthorized       = 9109  // "Unauthorized to access requested resource" (HTTP 403): permission too weak
	CFCodeInvalidToken       = 1000  // "Invalid API Token" (HTTP 401), token verification endpoints
	CFCodeNoRoute            = 7000  // "No route for that URI"
	CFCodeBadIdentifier      = 7003  // "Could not route to ..., perhaps your object identifier is invalid?" (HTTP 400)
	CFCodeRateLimited        = 971   // "Please wait and consider throttling your request speed" (HTTP 429)
	CFCodeDNSValidation      = 1004  // "DNS Validation Error" (HTTP 400), with an error_chain
	CFCodeInvalidIPv4        = 9005  // content of an A record is not an IPv4 address
	CFCodeInvalidTTL         = 9021  // TTL out of range
	CFCodeRecordNotFound     = 81044 // "Record does not exist." (HTTP 404)
	CFCodeIdenticalRecord    = 81058 // "An identical record already exists." (HTTP 400)
	CFCodeMalformedJSON      = 9207  // request body is not valid JSON (HTTP 400)
	CFMessageAuthentication  = "Authentication error"
	CFMessageUnauthorized    = "Unauthorized to access requested resource"
	CFMessageRateLimited     = "Please wait and consider throttling your request speed"
	CFMessageInvalidToken    = "Invalid API Token"
	CFMessageRecordNotFound  = "Record does not exist."
	CFMessageIdenticalRecord = "An identical record already exists."
)

// cfRecordTypes are the record types the fake accepts.
var cfRecordTypes = []string{"A", "AAAA", "CAA", "CNAME", "HTTPS", "MX", "NS", "SRV", "SVCB", "TXT"}

// cfTokenFormat is the character set Cloudflare accepts in a bearer token.
var cfTokenFormat = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// AllZones in a CloudflarePermission grants access to every zone.
const AllZones = "*"

// CloudflarePermission grants an API token access to one zone, or to all
// zones with AllZones. Several permissions for the same zone add up.
type CloudflarePermission struct {
	// Zone is the zone name, or AllZones.
	Zone string
	// ZoneRead is Zone:Read: the zone is listed by GET /zones and readable.
	ZoneRead bool
	// DNSRead is DNS:Read: the zone's records can be listed and read.
	DNSRead bool
	// DNSEdit is DNS:Edit: records can be created, changed and deleted
	// (and read).
	DNSEdit bool
}

// PermZoneRead grants Zone:Read on zone (or AllZones).
func PermZoneRead(zone string) CloudflarePermission {
	return CloudflarePermission{Zone: zone, ZoneRead: true}
}

// PermDNSRead grants DNS:Read on zone (or AllZones).
func PermDNSRead(zone string) CloudflarePermission {
	return CloudflarePermission{Zone: zone, DNSRead: true}
}

// PermDNSEdit grants DNS:Edit on zone (or AllZones).
func PermDNSEdit(zone string) CloudflarePermission {
	return CloudflarePermission{Zone: zone, DNSEdit: true}
}

// Fault is an injected failure of the fake Cloudflare API.
type Fault struct {
	// Endpoint restricts the fault to one route; empty matches any request.
	Endpoint CloudflareEndpoint
	// Status is the HTTP status to answer with.
	Status int
	// Code and Message form the single error of the Cloudflare envelope.
	Code    int
	Message string
	// RetryAfter, when positive, is sent as Retry-After in whole seconds,
	// rounded up.
	RetryAfter time.Duration
	// Body, when set, is sent verbatim instead of a JSON envelope, e.g. an
	// HTML error page such as Cloudflare's edge serves for 502/503/504.
	Body string
	// AfterCommit processes the request normally, state changes and DNS
	// publication included, and only then answers with the fault: a lost
	// response after a successful write.
	AfterCommit bool
}

// RateLimitFault is Cloudflare's answer to a client over its rate limit:
// HTTP 429, code 971, with Retry-After.
func RateLimitFault(retryAfter time.Duration) Fault {
	return Fault{Status: http.StatusTooManyRequests, Code: CFCodeRateLimited, Message: CFMessageRateLimited, RetryAfter: retryAfter}
}

// EdgeErrorFault is a 5xx answer as served by Cloudflare's edge when the API
// origin is unavailable: an HTML page, not a JSON envelope.
func EdgeErrorFault(status int) Fault {
	text := http.StatusText(status)
	return Fault{
		Status: status,
		Body: fmt.Sprintf("<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1></center>\r\n"+
			"<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n", status, text, status, text),
	}
}

// CloudflareRequest is one request received by the fake, as recorded in its
// request log.
type CloudflareRequest struct {
	// Endpoint is the matched route, or "" for an unknown route.
	Endpoint CloudflareEndpoint
	// Method, Path (without the /client/v4 prefix) and Query of the request.
	Method string
	Path   string
	Query  url.Values
	// Token is the bearer token sent, if any.
	Token string
	// Body is the request body.
	Body []byte
	// Status is the HTTP status answered.
	Status int
	// ErrorCodes are the codes of the errors answered, if any.
	ErrorCodes []int
	// Fault reports whether an injected fault produced the answer.
	Fault bool
}

// CloudflareRecord is a DNS record held by the fake, in the API's terms: Name
// is absolute without the trailing dot, Content is as sent (TXT content is
// normally quoted), TTL 1 means automatic.
type CloudflareRecord struct {
	ID      string
	ZoneID  string
	Zone    string
	Type    string
	Name    string
	Content string
	TTL     int
	Proxied bool
	Comment string
}

// CloudflareOption configures NewCloudflare.
type CloudflareOption func(*cloudflareConfig)

type cloudflareConfig struct {
	zones       []string
	accountID   string
	accountName string
}

// WithCloudflareZones hosts only the given zones (default: every zone of the
// DNS server). With a nil DNS server this option is required.
func WithCloudflareZones(zones ...string) CloudflareOption {
	return func(c *cloudflareConfig) { c.zones = append(c.zones, zones...) }
}

// WithCloudflareAccount sets the account that owns the zones and account
// tokens (default: a random ID named "Test Account").
func WithCloudflareAccount(id, name string) CloudflareOption {
	return func(c *cloudflareConfig) { c.accountID, c.accountName = id, name }
}

// Cloudflare is a fake of the Cloudflare v4 API (the zone, DNS record and
// token verification routes libdns/cloudflare v0.2.2 and similar clients
// use), served over TLS on a random 127.0.0.1 port under /client/v4.
// Responses use Cloudflare's envelope, status codes, error codes, record
// shapes and pagination (result_info).
//
// Records are stored per zone. TXT records created, changed or deleted
// through the API are published to, or withdrawn from, the DNSServer, so a
// DNS-01 record written through libdns/cloudflare is what a validating CA
// resolves; A and AAAA records set the name's addresses there. Other types
// live in the API only. Records a test writes to the DNSServer directly are
// not visible through the API.
//
// Names follow the live API: a record name may be sent relative to the zone
// ("_acme-challenge", "@") or absolute, and is always returned absolute
// without the trailing dot; name filters match absolute names only; TXT
// content is stored and returned as sent (libdns/cloudflare quotes it) and
// published to DNS unquoted. The zone name filter of GET /zones ignores case
// and a trailing dot, as certmagic passes "example.com.".
//
// Authentication: requests need "Authorization: Bearer <token>" with a token
// registered by AddToken or AddAccountToken. Zone listing is filtered by
// Zone:Read; record reads need DNS:Read or DNS:Edit, writes DNS:Edit. An
// unknown token gets 403 with code 10000 "Authentication error" (the live API
// has also been seen answering some rejected tokens with 403 and 9109
// "Invalid access token"), a token with no permission on the zone gets
// 403/10000, and one whose permission is too weak gets 403 with 9109
// "Unauthorized to access requested resource". A missing Authorization
// header gets 400/9106 and a malformed one 400/6003 with 6111 in its
// error_chain.
type Cloudflare struct {
	srv         *httptest.Server
	dns         *DNSServer
	accountID   string
	accountName string

	mu        sync.Mutex
	zones     []*cfZone // sorted by name
	tokens    map[string]*cfToken
	faults    []Fault
	hook      func(*http.Request) *Fault
	requests  []CloudflareRequest
	published map[string]cfPublication // by record name: what went to DNS
}

type cfZone struct {
	id      string
	name    string // lower case, no trailing dot
	created time.Time
	records []*cfRecord // in creation order
}

type cfRecord struct {
	id       string
	typ      string
	name     string
	content  string
	ttl      int
	proxied  bool
	comment  string
	priority *int
	created  time.Time
	modified time.Time
}

type cfToken struct {
	id      string
	account string // "" for a user token
	perms   []CloudflarePermission
}

// NewCloudflare starts a fake Cloudflare API hosting the zones of dns (or
// those given with WithCloudflareZones) and stops it with t.Cleanup. dns may
// be nil for an API-only fake. No token is valid until added with AddToken.
func NewCloudflare(t testing.TB, dns *DNSServer, opts ...CloudflareOption) *Cloudflare {
	t.Helper()
	var cfg cloudflareConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.accountID == "" {
		cfg.accountID = newCFID()
	}
	if cfg.accountName == "" {
		cfg.accountName = "Test Account"
	}
	zones := cfg.zones
	if len(zones) == 0 {
		if dns == nil {
			t.Fatalf("starting fake cloudflare: no dns server and no zones")
		}
		zones = dns.Zones()
	}

	c := &Cloudflare{
		dns:         dns,
		accountID:   cfg.accountID,
		accountName: cfg.accountName,
		tokens:      make(map[string]*cfToken),
		published:   make(map[string]cfPublication),
	}
	now := time.Now().UTC()
	for _, z := range zones {
		name := cfZoneName(z)
		if dns != nil {
			if apex, ok := dns.Zone(name); !ok || cfZoneName(apex) != name {
				t.Fatalf("starting fake cloudflare: zone %q is not a zone of the dns server", z)
			}
		}
		if c.zoneByName(name) == nil {
			c.zones = append(c.zones, &cfZone{id: newCFID(), name: name, created: now})
		}
	}
	sort.Slice(c.zones, func(i, j int) bool { return c.zones[i].name < c.zones[j].name })

	mux := http.NewServeMux()
	c.route(mux, EndpointListZones, true, c.listZones)
	c.route(mux, EndpointGetZone, true, c.getZone)
	c.route(mux, EndpointListRecords, true, c.listRecords)
	c.route(mux, EndpointCreateRecord, true, c.createRecord)
	c.route(mux, EndpointGetRecord, true, c.getRecord)
	c.route(mux, EndpointUpdateRecord, true, c.updateRecord)
	c.route(mux, EndpointPatchRecord, true, c.updateRecord)
	c.route(mux, EndpointDeleteRecord, true, c.deleteRecord)
	c.route(mux, EndpointVerifyUserToken, false, c.verifyToken)
	c.route(mux, EndpointVerifyAccountToken, false, c.verifyToken)
	c.route(mux, "", false, func(*http.Request, *cfToken) cfReply {
		return cfFail(http.StatusNotFound, cfError{Code: CFCodeNoRoute, Message: "No route for that URI"})
	})

	c.srv = httptest.NewUnstartedServer(mux)
	c.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	return c
}

// URL returns the base URL of the fake API, the equivalent of
// https://api.cloudflare.com/client/v4.
func (c *Cloudflare) URL() string { return c.srv.URL + cloudflareAPIPrefix }

// AccountID returns the ID of the account owning the zones.
func (c *Cloudflare) AccountID() string { return c.accountID }

// ZoneID returns the ID of zone (with or without the trailing dot), or "".
func (c *Cloudflare) ZoneID(zone string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if z := c.zoneByName(cfZoneName(zone)); z != nil {
		return z.id
	}
	return ""
}

// AddToken registers a user API token with the given permissions and
// returns its token ID. Adding an existing token replaces its permissions.
func (c *Cloudflare) AddToken(token string, perms ...CloudflarePermission) string {
	return c.addToken(token, "", perms)
}

// AddAccountToken registers an account-owned API token (verifiable only at
// /accounts/{account_id}/tokens/verify) and returns its token ID.
func (c *Cloudflare) AddAccountToken(token string, perms ...CloudflarePermission) string {
	return c.addToken(token, c.accountID, perms)
}

func (c *Cloudflare) addToken(token, account string, perms []CloudflarePermission) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	tok := &cfToken{id: newCFID(), account: account}
	for _, p := range perms {
		if p.Zone != AllZones {
			p.Zone = cfZoneName(p.Zone)
		}
		tok.perms = append(tok.perms, p)
	}
	c.tokens[token] = tok
	return tok.id
}

// RevokeToken makes token unknown to the fake.
func (c *Cloudflare) RevokeToken(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tokens, token)
}

// FailNext makes the next n requests matching f.Endpoint fail with f, in
// order after faults queued earlier. Faults are applied before
// authentication, as rate limiting is in the live API.
func (c *Cloudflare) FailNext(n int, f Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range n {
		c.faults = append(c.faults, f)
	}
}

// SetFaultHook installs fn, consulted for every request before the FailNext
// queue; a non-nil Fault from fn is applied (its Endpoint is ignored). A nil
// fn removes the hook. fn runs on server goroutines, concurrently for
// concurrent requests, and may call methods of c.
func (c *Cloudflare) SetFaultHook(fn func(r *http.Request) *Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hook = fn
}

// PendingFaults returns how many FailNext faults have not been used yet.
func (c *Cloudflare) PendingFaults() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.faults)
}

// Requests returns a copy of the request log, in arrival order.
func (c *Cloudflare) Requests() []CloudflareRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}

// RequestCount returns how many logged requests hit endpoint ("" counts all).
func (c *Cloudflare) RequestCount(endpoint CloudflareEndpoint) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.requests {
		if endpoint == "" || r.Endpoint == endpoint {
			n++
		}
	}
	return n
}

// ResetRequests clears the request log.
func (c *Cloudflare) ResetRequests() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = nil
}

// Records returns a snapshot of the records of zone, in creation order.
func (c *Cloudflare) Records(zone string) []CloudflareRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	z := c.zoneByName(cfZoneName(zone))
	if z == nil {
		return nil
	}
	out := make([]CloudflareRecord, 0, len(z.records))
	for _, r := range z.records {
		out = append(out, CloudflareRecord{
			ID: r.id, ZoneID: z.id, Zone: z.name, Type: r.typ, Name: r.name,
			Content: r.content, TTL: r.ttl, Proxied: r.proxied, Comment: r.comment,
		})
	}
	return out
}

// AddRecord creates a record directly, as if made in the dashboard (no
// request is logged, no fault applies), and publishes it to DNS like an API
// write. name may be relative to zone or absolute.
func (c *Cloudflare) AddRecord(zone, typ, name, content string) (CloudflareRecord, error) {
	c.mu.Lock()
	z := c.zoneByName(cfZoneName(zone))
	if z == nil {
		c.mu.Unlock()
		return CloudflareRecord{}, fmt.Errorf("adding record: unknown zone %q", zone)
	}
	in := cfRecordInput{Type: typ, Name: name, Content: content}
	rec, reply := c.createLocked(z, in)
	c.mu.Unlock()
	if reply != nil {
		return CloudflareRecord{}, fmt.Errorf("adding record: %s", reply.errorText())
	}
	return CloudflareRecord{ID: rec.id, ZoneID: z.id, Zone: z.name, Type: rec.typ, Name: rec.name,
		Content: rec.content, TTL: rec.ttl, Proxied: rec.proxied, Comment: rec.comment}, nil
}

// HTTPClient returns a client that sends requests for
// https://api.cloudflare.com/client/v4/... to the fake (rewriting only the
// scheme and host) and trusts its TLS certificate. Requests to any other
// host fail without touching the network.
func (c *Cloudflare) HTTPClient() *http.Client {
	target, _ := url.Parse(c.srv.URL)
	return &http.Client{Transport: &cfRewriteTransport{target: target, base: c.srv.Client().Transport}}
}

// Provider returns a libdns/cloudflare provider that talks to the fake with
// apiToken (DNS edits) and, if not empty, zoneToken (zone lookups).
func (c *Cloudflare) Provider(apiToken, zoneToken string) *cloudflare.Provider {
	return &cloudflare.Provider{APIToken: apiToken, ZoneToken: zoneToken, HTTPClient: c.HTTPClient()}
}

// cfRewriteTransport redirects Cloudflare API requests to the fake.
type cfRewriteTransport struct {
	target *url.URL
	base   http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (tr *cfRewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case req.URL.Host == tr.target.Host:
		return tr.base.RoundTrip(req)
	case strings.EqualFold(req.URL.Hostname(), CloudflareAPIHost) && req.URL.Scheme == "https" &&
		(req.URL.Port() == "" || req.URL.Port() == "443"):
		r := req.Clone(req.Context())
		r.URL.Scheme = tr.target.Scheme
		r.URL.Host = tr.target.Host
		r.Host = ""
		return tr.base.RoundTrip(r)
	default:
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("sending request to %s: only https://%s is faked", req.URL.Redacted(), CloudflareAPIHost)
	}
}

// cfError is an entry of the envelope's errors array.
type cfError struct {
	Code       int       `json:"code"`
	Message    string    `json:"message"`
	ErrorChain []cfError `json:"error_chain,omitempty"`
}

// cfMessage is an entry of the envelope's messages array.
type cfMessage struct {
	Code    int     `json:"code"`
	Message string  `json:"message"`
	Type    *string `json:"type"`
}

type cfResultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

type cfEnvelope struct {
	Success    bool          `json:"success"`
	Errors     []cfError     `json:"errors"`
	Messages   []cfMessage   `json:"messages"`
	Result     any           `json:"result"`
	ResultInfo *cfResultInfo `json:"result_info,omitempty"`
}

// cfReply is what a route handler answers.
type cfReply struct {
	status   int
	result   any
	info     *cfResultInfo
	errors   []cfError
	messages []cfMessage
}

func cfOK(result any) cfReply { return cfReply{status: http.StatusOK, result: result} }

func cfFail(status int, errs ...cfError) cfReply { return cfReply{status: status, errors: errs} }

func (r *cfReply) errorText() string {
	var parts []string
	for _, e := range r.errors {
		parts = append(parts, fmt.Sprintf("%d %s", e.Code, e.Message))
		for _, c := range e.ErrorChain {
			parts = append(parts, fmt.Sprintf("%d %s", c.Code, c.Message))
		}
	}
	return strings.Join(parts, "; ")
}

var (
	errAuthentication = cfError{Code: CFCodeAuthentication, Message: CFMessageAuthentication}
	errUnauthorized   = cfError{Code: CFCodeUnauthorized, Message: CFMessageUnauthorized}
)

// route registers endpoint on mux. With auth, the handler only runs for a
// request bearing a registered token; otherwise it gets the token, if known.
func (c *Cloudflare) route(mux *http.ServeMux, endpoint CloudflareEndpoint, auth bool, h func(*http.Request, *cfToken) cfReply) {
	pattern := "/"
	if endpoint != "" {
		method, path, _ := strings.Cut(string(endpoint), " ")
		pattern = method + " " + cloudflareAPIPrefix + path
	}
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		entry := CloudflareRequest{
			Endpoint: endpoint,
			Method:   r.Method,
			Path:     strings.TrimPrefix(r.URL.Path, cloudflareAPIPrefix),
			Query:    r.URL.Query(),
			Body:     body,
		}
		entry.Token, _ = bearerToken(r)

		fault := c.takeFault(r, endpoint)
		if fault == nil || fault.AfterCommit {
			tok, authReply := c.authenticate(r)
			var reply cfReply
			if auth && authReply != nil {
				reply = *authReply
			} else {
				reply = h(r, tok)
			}
			if fault == nil {
				entry.Status = reply.status
				for _, e := range reply.errors {
					entry.ErrorCodes = append(entry.ErrorCodes, e.Code)
				}
				c.log(entry)
				writeReply(w, reply)
				return
			}
		}
		entry.Status, entry.ErrorCodes, entry.Fault = fault.Status, faultCodes(fault), true
		c.log(entry)
		writeFault(w, fault)
	})
}

func (c *Cloudflare) log(entry CloudflareRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, entry)
}

// takeFault returns the fault to apply to r, if any, consuming a queued one.
func (c *Cloudflare) takeFault(r *http.Request, endpoint CloudflareEndpoint) *Fault {
	c.mu.Lock()
	hook := c.hook
	c.mu.Unlock()
	if hook != nil {
		if f := hook(r); f != nil {
			return f
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, f := range c.faults {
		if f.Endpoint == "" || f.Endpoint == endpoint {
			c.faults = slices.Delete(c.faults, i, i+1)
			return &f
		}
	}
	return nil
}

func faultCodes(f *Fault) []int {
	if f.Body != "" || f.Code == 0 {
		return nil
	}
	return []int{f.Code}
}

func writeFault(w http.ResponseWriter, f *Fault) {
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
	}
	if f.Body != "" {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body)
		return
	}
	reply := cfReply{status: f.Status}
	if f.Code != 0 || f.Message != "" {
		reply.errors = []cfError{{Code: f.Code, Message: f.Message}}
	}
	writeReply(w, reply)
}

func writeReply(w http.ResponseWriter, r cfReply) {
	env := cfEnvelope{
		Success:    len(r.errors) == 0 && r.status < 400,
		Errors:     r.errors,
		Messages:   r.messages,
		Result:     r.result,
		ResultInfo: r.info,
	}
	if env.Errors == nil {
		env.Errors = []cfError{}
	}
	if env.Messages == nil {
		env.Messages = []cfMessage{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	_ = json.NewEncoder(w).Encode(env)
}

// bearerToken extracts the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, cfTokenFormat.MatchString(token)
}

// authenticate returns the token of r, or the error reply for a missing,
// malformed or unknown token.
func (c *Cloudflare) authenticate(r *http.Request) (*cfToken, *cfReply) {
	if r.Header.Get("Authorization") == "" {
		reply := cfFail(http.StatusBadRequest, cfError{Code: CFCodeMissingAuth, Message: "Missing X-Auth-Key, X-Auth-Email or Authorization headers"})
		return nil, &reply
	}
	token, ok := bearerToken(r)
	if !ok {
		reply := cfFail(http.StatusBadRequest, cfError{
			Code:       CFCodeInvalidHeaders,
			Message:    "Invalid request headers",
			ErrorChain: []cfError{{Code: CFCodeInvalidAuthFormat, Message: "Invalid format for Authorization header"}},
		})
		return nil, &reply
	}
	c.mu.Lock()
	tok := c.tokens[token]
	c.mu.Unlock()
	if tok == nil {
		reply := cfFail(http.StatusForbidden, errAuthentication)
		return nil, &reply
	}
	return tok, nil
}

// access is a permission level on a zone.
type access int

const (
	accessZoneRead access = iota
	accessDNSRead
	accessDNSEdit
)

// allows reports whether tok may do what level requires on zone, and whether
// it has any permission on the zone at all.
func (tok *cfToken) allows(zone string, level access) (ok, some bool) {
	for _, p := range tok.perms {
		if p.Zone != AllZones && p.Zone != zone {
			continue
		}
		some = some || p.ZoneRead || p.DNSRead || p.DNSEdit
		switch level {
		case accessZoneRead:
			ok = ok || p.ZoneRead
		case accessDNSRead:
			ok = ok || p.DNSRead || p.DNSEdit
		case accessDNSEdit:
			ok = ok || p.DNSEdit
		}
	}
	return ok, some
}

// authorize returns the error reply if tok may not do level on z.
func authorize(tok *cfToken, z *cfZone, level access) *cfReply {
	ok, some := tok.allows(z.name, level)
	if ok {
		return nil
	}
	reply := cfFail(http.StatusForbidden, errAuthentication)
	if some {
		reply = cfFail(http.StatusForbidden, errUnauthorized)
	}
	return &reply
}

// zoneFromPath resolves the {zone_id} of r and checks tok's access to it.
// The caller must hold c.mu.
func (c *Cloudflare) zoneFromPath(r *http.Request, tok *cfToken, level access) (*cfZone, *cfReply) {
	id := r.PathValue("zone_id")
	for _, z := range c.zones {
		if z.id == id {
			return z, authorize(tok, z, level)
		}
	}
	reply := cfFail(http.StatusBadRequest,
		cfError{Code: CFCodeBadIdentifier, Message: fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?",
			strings.TrimPrefix(r.URL.Path, cloudflareAPIPrefix))},
		cfError{Code: CFCodeNoRoute, Message: "No route for that URI"})
	return nil, &reply
}

func (c *Cloudflare) zoneByName(name string) *cfZone {
	for _, z := range c.zones {
		if z.name == name {
			return z
		}
	}
	return nil
}

// zoneJSON renders z as the API does, with the permissions of tok.
func (c *Cloudflare) zoneJSON(z *cfZone, tok *cfToken) map[string]any {
	perms := []string{}
	if ok, _ := tok.allows(z.name, accessZoneRead); ok {
		perms = append(perms, "#zone:read")
	}
	if ok, _ := tok.allows(z.name, accessDNSRead); ok {
		perms = append(perms, "#dns_records:read")
	}
	if ok, _ := tok.allows(z.name, accessDNSEdit); ok {
		perms = append(perms, "#dns_records:edit")
	}
	ns := []string{z.name}
	if c.dns != nil {
		ns = []string{strings.TrimSuffix(c.dns.NSHost(z.name), ".")}
	}
	ts := z.created.Format(time.RFC3339Nano)
	return map[string]any{
		"id":                    z.id,
		"name":                  z.name,
		"status":                "active",
		"paused":                false,
		"type":                  "full",
		"development_mode":      0,
		"name_servers":          ns,
		"original_name_servers": nil,
		"original_registrar":    nil,
		"original_dnshost":      nil,
		"created_on":            ts,
		"modified_on":           ts,
		"activated_on":          ts,
		"meta":                  map[string]any{"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3, "phishing_detected": false},
		"owner":                 map[string]any{"id": nil, "type": "user", "email": nil},
		"account":               map[string]any{"id": c.accountID, "name": c.accountName},
		"permissions":           perms,
		"plan": map[string]any{
			"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "price": 0, "currency": "USD",
			"frequency": "", "is_subscribed": false, "can_subscribe": false, "legacy_id": "free",
			"legacy_discount": false, "externally_managed": false,
		},
	}
}

// paginate applies page and per_page to n items and returns the bounds and
// the result_info.
func paginate(q url.Values, n, defPerPage, minPerPage, maxPerPage int) (lo, hi int, info *cfResultInfo) {
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page < 1 {
		page = 1
	}
	perPage, err := strconv.Atoi(q.Get("per_page"))
	if err != nil {
		perPage = defPerPage
	}
	perPage = min(max(perPage, minPerPage), maxPerPage)
	lo = min((page-1)*perPage, n)
	hi = min(lo+perPage, n)
	return lo, hi, &cfResultInfo{
		Page:       page,
		PerPage:    perPage,
		Count:      hi - lo,
		TotalCount: n,
		TotalPages: (n + perPage - 1) / perPage,
	}
}

func (c *Cloudflare) listZones(r *http.Request, tok *cfToken) cfReply {
	q := r.URL.Query()
	name := cfZoneName(q.Get("name"))
	c.mu.Lock()
	defer c.mu.Unlock()
	var zones []*cfZone
	for _, z := range c.zones {
		if ok, _ := tok.allows(z.name, accessZoneRead); !ok {
			continue
		}
		if name != "" && z.name != name {
			continue
		}
		if id := q.Get("account.id"); id != "" && id != c.accountID {
			continue
		}
		if st := q.Get("status"); st != "" && st != "active" {
			continue
		}
		zones = append(zones, z)
	}
	if q.Get("direction") == "desc" {
		slices.Reverse(zones)
	}
	lo, hi, info := paginate(q, len(zones), 20, 5, 50)
	result := make([]any, 0, hi-lo)
	for _, z := range zones[lo:hi] {
		result = append(result, c.zoneJSON(z, tok))
	}
	reply := cfOK(result)
	reply.info = info
	return reply
}

func (c *Cloudflare) getZone(r *http.Request, tok *cfToken) cfReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	z, fail := c.zoneFromPath(r, tok, accessZoneRead)
	if fail != nil {
		return *fail
	}
	return cfOK(c.zoneJSON(z, tok))
}

// recordJSON renders rec as the API does.
func recordJSON(z *cfZone, rec *cfRecord) map[string]any {
	var comment any
	if rec.comment != "" {
		comment = rec.comment
	}
	m := map[string]any{
		"id":          rec.id,
		"zone_id":     z.id,
		"zone_name":   z.name,
		"name":        rec.name,
		"type":        rec.typ,
		"content":     rec.content,
		"proxiable":   rec.typ == "A" || rec.typ == "AAAA" || rec.typ == "CNAME",
		"proxied":     rec.proxied,
		"ttl":         rec.ttl,
		"settings":    map[string]any{},
		"meta":        map[string]any{},
		"comment":     comment,
		"tags":        []string{},
		"created_on":  rec.created.Format(time.RFC3339Nano),
		"modified_on": rec.modified.Format(time.RFC3339Nano),
	}
	if rec.priority != nil {
		m["priority"] = *rec.priority
	}
	return m
}

// recordMatches applies the dns_records list filters of q to rec: type,
// name and content (exact, or with .exact, .contains, .startswith and
// .endswith), proxied, combined with match=all (default) or match=any. Names
// compare case-insensitively and ignore a trailing dot.
func recordMatches(q url.Values, rec *cfRecord) bool {
	var tests []bool
	add := func(ok bool) { tests = append(tests, ok) }
	if q.Has("type") {
		add(strings.EqualFold(rec.typ, q.Get("type")))
	}
	for _, key := range []string{"name", "name.exact"} {
		if q.Has(key) {
			add(rec.name == cfZoneName(q.Get(key)))
		}
	}
	for _, key := range []string{"content", "content.exact"} {
		if q.Has(key) {
			add(rec.content == q.Get(key))
		}
	}
	for field, value := range map[string]string{"name": rec.name, "content": rec.content} {
		value = strings.ToLower(value)
		if q.Has(field + ".contains") {
			add(strings.Contains(value, strings.ToLower(q.Get(field+".contains"))))
		}
		if q.Has(field + ".startswith") {
			add(strings.HasPrefix(value, strings.ToLower(q.Get(field+".startswith"))))
		}
		if q.Has(field + ".endswith") {
			add(strings.HasSuffix(value, strings.ToLower(q.Get(field+".endswith"))))
		}
	}
	if q.Has("proxied") {
		add(strconv.FormatBool(rec.proxied) == q.Get("proxied"))
	}
	if len(tests) == 0 {
		return true
	}
	if q.Get("match") == "any" {
		return slices.Contains(tests, true)
	}
	return !slices.Contains(tests, false)
}

func (c *Cloudflare) listRecords(r *http.Request, tok *cfToken) cfReply {
	q := r.URL.Query()
	c.mu.Lock()
	defer c.mu.Unlock()
	z, fail := c.zoneFromPath(r, tok, accessDNSRead)
	if fail != nil {
		return *fail
	}
	var recs []*cfRecord
	for _, rec := range z.records {
		if recordMatches(q, rec) {
			recs = append(recs, rec)
		}
	}
	switch q.Get("order") {
	case "type", "name", "content", "ttl", "proxied":
		key := q.Get("order")
		sort.SliceStable(recs, func(i, j int) bool {
			a, b := recs[i], recs[j]
			switch key {
			case "type":
				return a.typ < b.typ
			case "name":
				return a.name < b.name
			case "content":
				return a.content < b.content
			case "ttl":
				return a.ttl < b.ttl
			default:
				return !a.proxied && b.proxied
			}
		})
	}
	if q.Get("direction") == "desc" {
		slices.Reverse(recs)
	}
	lo, hi, info := paginate(q, len(recs), 100, 5, 5000000)
	result := make([]any, 0, hi-lo)
	for _, rec := range recs[lo:hi] {
		result = append(result, recordJSON(z, rec))
	}
	reply := cfOK(result)
	reply.info = info
	return reply
}

func (c *Cloudflare) getRecord(r *http.Request, tok *cfToken) cfReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	z, fail := c.zoneFromPath(r, tok, accessDNSRead)
	if fail != nil {
		return *fail
	}
	_, rec := z.record(r.PathValue("dns_record_id"))
	if rec == nil {
		return cfFail(http.StatusNotFound, cfError{Code: CFCodeRecordNotFound, Message: CFMessageRecordNotFound})
	}
	return cfOK(recordJSON(z, rec))
}

func (z *cfZone) record(id string) (int, *cfRecord) {
	for i, rec := range z.records {
		if rec.id == id {
			return i, rec
		}
	}
	return -1, nil
}

// cfRecordInput is the JSON body of a record create or update.
type cfRecordInput struct {
	Type     string  `json:"type"`
	Name     string  `json:"name"`
	Content  string  `json:"content"`
	TTL      *int    `json:"ttl"`
	Proxied  *bool   `json:"proxied"`
	Comment  *string `json:"comment"`
	Priority *int    `json:"priority"`
}

func decodeRecordInput(r *http.Request) (cfRecordInput, *cfReply) {
	var in cfRecordInput
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&in); err != nil {
		reply := cfFail(http.StatusBadRequest, cfError{Code: CFCodeMalformedJSON, Message: "Malformed JSON in request body."})
		return in, &reply
	}
	return in, nil
}

func dnsValidationError(code int, msg string) *cfReply {
	reply := cfFail(http.StatusBadRequest, cfError{
		Code:       CFCodeDNSValidation,
		Message:    "DNS Validation Error",
		ErrorChain: []cfError{{Code: code, Message: msg}},
	})
	return &reply
}

// validateRecord normalises rec within z and returns the validation error
// reply, if any.
func validateRecord(z *cfZone, rec *cfRecord) *cfReply {
	rec.typ = strings.ToUpper(strings.TrimSpace(rec.typ))
	if !slices.Contains(cfRecordTypes, rec.typ) {
		return dnsValidationError(CFCodeDNSValidation, fmt.Sprintf("Invalid DNS record type %q.", rec.typ))
	}
	if strings.TrimSpace(rec.name) == "" {
		return dnsValidationError(CFCodeDNSValidation, "DNS name is invalid.")
	}
	rec.name = absoluteRecordName(rec.name, z.name)
	if rec.content == "" && rec.typ != "SRV" && rec.typ != "HTTPS" && rec.typ != "SVCB" && rec.typ != "CAA" {
		return dnsValidationError(CFCodeDNSValidation, "Content is required.")
	}
	switch rec.typ {
	case "A":
		if a, err := netip.ParseAddr(rec.content); err != nil || !a.Is4() {
			return dnsValidationError(CFCodeInvalidIPv4, "Content for A record is invalid. Must be a valid IPv4 address")
		}
	case "AAAA":
		if a, err := netip.ParseAddr(rec.content); err != nil || !a.Is6() || a.Is4In6() {
			return dnsValidationError(CFCodeDNSValidation, "Content for AAAA record is invalid. Must be a valid IPv6 address")
		}
	}
	if rec.ttl == 0 {
		rec.ttl = 1
	}
	if rec.ttl != 1 && (rec.ttl < 60 || rec.ttl > 86400) {
		return dnsValidationError(CFCodeInvalidTTL, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for automatic.")
	}
	if rec.proxied && rec.typ != "A" && rec.typ != "AAAA" && rec.typ != "CNAME" {
		return dnsValidationError(CFCodeDNSValidation, fmt.Sprintf("Record type %s cannot be proxied.", rec.typ))
	}
	return nil
}

// absoluteRecordName expands name the way the API does: "@" and the zone
// name mean the apex, names inside the zone are kept, anything else is taken
// as relative to the zone.
func absoluteRecordName(name, zone string) string {
	name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	switch {
	case name == "@" || name == zone:
		return zone
	case strings.HasSuffix(name, "."+zone):
		return name
	default:
		return name + "." + zone
	}
}

// duplicate reports whether z has a record identical to rec other than
// rec itself.
func (z *cfZone) duplicate(rec *cfRecord) bool {
	for _, other := range z.records {
		if other.id != rec.id && other.typ == rec.typ && other.name == rec.name && other.content == rec.content {
			return true
		}
	}
	return false
}

func (c *Cloudflare) createRecord(r *http.Request, tok *cfToken) cfReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	z, fail := c.zoneFromPath(r, tok, accessDNSEdit)
	if fail != nil {
		return *fail
	}
	in, fail := decodeRecordInput(r)
	if fail != nil {
		return *fail
	}
	rec, fail := c.createLocked(z, in)
	if fail != nil {
		return *fail
	}
	return cfOK(recordJSON(z, rec))
}

// createLocked validates and stores a new record and publishes it to DNS.
func (c *Cloudflare) createLocked(z *cfZone, in cfRecordInput) (*cfRecord, *cfReply) {
	now := time.Now().UTC()
	rec := &cfRecord{id: newCFID(), typ: in.Type, name: in.Name, content: in.Content, priority: in.Priority, created: now, modified: now}
	if in.TTL != nil {
		rec.ttl = *in.TTL
	}
	if in.Proxied != nil {
		rec.proxied = *in.Proxied
	}
	if in.Comment != nil {
		rec.comment = *in.Comment
	}
	if fail := validateRecord(z, rec); fail != nil {
		return nil, fail
	}
	if z.duplicate(rec) {
		reply := cfFail(http.StatusBadRequest, cfError{Code: CFCodeIdenticalRecord, Message: CFMessageIdenticalRecord})
		return nil, &reply
	}
	z.records = append(z.records, rec)
	c.publishLocked(z, rec.name)
	return rec, nil
}

// updateRecord serves PUT (replace) and PATCH (merge) of a record.
func (c *Cloudflare) updateRecord(r *http.Request, tok *cfToken) cfReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	z, fail := c.zoneFromPath(r, tok, accessDNSEdit)
	if fail != nil {
		return *fail
	}
	_, old := z.record(r.PathValue("dns_record_id"))
	if old == nil {
		return cfFail(http.StatusNotFound, cfError{Code: CFCodeRecordNotFound, Message: CFMessageRecordNotFound})
	}
	in, fail := decodeRecordInput(r)
	if fail != nil {
		return *fail
	}
	upd := *old
	if r.Method == http.MethodPut {
		upd = cfRecord{id: old.id, typ: in.Type, name: in.Name, content: in.Content, priority: in.Priority, created: old.created}
	} else {
		if in.Type != "" {
			upd.typ = in.Type
		}
		if in.Name != "" {
			upd.name = in.Name
		}
		if in.Content != "" {
			upd.content = in.Content
		}
		if in.Priority != nil {
			upd.priority = in.Priority
		}
	}
	if in.TTL != nil {
		upd.ttl = *in.TTL
	}
	if in.Proxied != nil {
		upd.proxied = *in.Proxied
	}
	if in.Comment != nil {
		upd.comment = *in.Comment
	}
	upd.modified = time.Now().UTC()
	if fail := validateRecord(z, &upd); fail != nil {
		return *fail
	}
	if z.duplicate(&upd) {
		return cfFail(http.StatusBadRequest, cfError{Code: CFCodeIdenticalRecord, Message: CFMessageIdenticalRecord})
	}
	oldName := old.name
	*old = upd
	c.publishLocked(z, oldName)
	c.publishLocked(z, upd.name)
	return cfOK(recordJSON(z, old))
}

func (c *Cloudflare) deleteRecord(r *http.Request, tok *cfToken) cfReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	z, fail := c.zoneFromPath(r, tok, accessDNSEdit)
	if fail != nil {
		return *fail
	}
	i, rec := z.record(r.PathValue("dns_record_id"))
	if rec == nil {
		return cfFail(http.StatusNotFound, cfError{Code: CFCodeRecordNotFound, Message: CFMessageRecordNotFound})
	}
	z.records = slices.Delete(z.records, i, i+1)
	c.publishLocked(z, rec.name)
	// The live API answers a delete with the record ID only.
	return cfOK(map[string]any{"id": rec.id})
}

// publishLocked brings the DNS server's records of name in line with the
// API's records of name. TXT values the fake published earlier but no longer
// holds are withdrawn and held ones are added; values a test set directly on
// the DNS server are left alone. A and AAAA records replace the name's
// addresses whenever the API holds some or held some before.
func (c *Cloudflare) publishLocked(z *cfZone, name string) {
	if c.dns == nil {
		return
	}
	var txts []string
	var addrs []netip.Addr
	for _, rec := range z.records {
		if rec.name != name {
			continue
		}
		switch rec.typ {
		case "TXT":
			if v := txtContentValue(rec.content); !slices.Contains(txts, v) {
				txts = append(txts, v)
			}
		case "A", "AAAA":
			if a, err := netip.ParseAddr(rec.content); err == nil {
				addrs = append(addrs, a)
			}
		}
	}
	prev := c.published[name]
	for _, v := range prev.txt {
		if !slices.Contains(txts, v) {
			c.dns.DeleteTXT(name, v)
		}
	}
	if len(txts) > 0 {
		c.dns.AddTXT(name, txts...)
	}
	if len(addrs) > 0 || prev.addrs {
		c.dns.SetAddrs(name, addrs...)
	}
	if len(txts) == 0 && len(addrs) == 0 {
		delete(c.published, name)
		return
	}
	c.published[name] = cfPublication{txt: txts, addrs: len(addrs) > 0}
}

// cfPublication is what the fake last published to DNS for one name.
type cfPublication struct {
	txt   []string
	addrs bool
}

// txtContentValue turns the content of a TXT record as stored by the API
// into the value DNS serves: one or more quoted character-strings are
// unquoted and joined; unquoted content is served as is.
func txtContentValue(content string) string {
	s := strings.TrimSpace(content)
	if !strings.HasPrefix(s, `"`) {
		return content
	}
	var out strings.Builder
	for len(s) > 0 {
		if s[0] != '"' {
			return content
		}
		i := 1
		closed := false
		for i < len(s) {
			ch := s[i]
			if ch == '\\' && i+1 < len(s) {
				out.WriteByte(s[i+1])
				i += 2
				continue
			}
			if ch == '"' {
				closed = true
				i++
				break
			}
			out.WriteByte(ch)
			i++
		}
		if !closed {
			return content
		}
		s = strings.TrimLeft(s[i:], " \t")
	}
	return out.String()
}

// verifyToken serves /user/tokens/verify and
// /accounts/{account_id}/tokens/verify. Each only knows tokens of its owner.
func (c *Cloudflare) verifyToken(r *http.Request, tok *cfToken) cfReply {
	if r.Header.Get("Authorization") == "" {
		return cfFail(http.StatusBadRequest, cfError{Code: CFCodeMissingAuth, Message: "Missing X-Auth-Key, X-Auth-Email or Authorization headers"})
	}
	if _, ok := bearerToken(r); !ok {
		return cfFail(http.StatusBadRequest, cfError{
			Code:       CFCodeInvalidHeaders,
			Message:    "Invalid request headers",
			ErrorChain: []cfError{{Code: CFCodeInvalidAuthFormat, Message: "Invalid format for Authorization header"}},
		})
	}
	owner := r.PathValue("account_id")
	if tok == nil || tok.account != owner {
		return cfFail(http.StatusUnauthorized, cfError{Code: CFCodeInvalidToken, Message: CFMessageInvalidToken})
	}
	reply := cfOK(map[string]any{"id": tok.id, "status": "active"})
	reply.messages = []cfMessage{{Code: 10000, Message: "This API Token is valid and active"}}
	return reply
}

// cfZoneName lower-cases a zone name and drops the trailing dot.
func cfZoneName(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// newCFID returns a random Cloudflare-style 32-hex-digit identifier.
func newCFID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
