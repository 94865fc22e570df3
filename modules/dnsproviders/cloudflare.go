package dnsproviders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/retry"
)

// cloudflareAPI is the Cloudflare v4 API base; libdns/cloudflare uses the
// same constant. Tests redirect it with an HTTP client.
const cloudflareAPI = "https://api.cloudflare.com/client/v4"

// Cloudflare error codes CertLocker tells apart.
const (
	cfCodeInvalidToken      = 1000  // "Invalid API Token" (token verification)
	cfCodeAuthentication    = 10000 // unknown token, or no access to the zone
	cfCodeUnauthorized      = 9109  // permission too weak (also "Invalid access token")
	cfCodeMissingAuth       = 9106
	cfCodeInvalidHeaders    = 6003
	cfCodeInvalidAuthFormat = 6111
	cfCodeRecordNotFound    = 81044
	cfCodeIdenticalRecord   = 81058
)

// cfAPIError is a failed Cloudflare API call, after retries. It never holds
// a token: Cloudflare's messages do not echo them, and the request is
// described by method and path only.
type cfAPIError struct {
	Method, Path string
	Status       int
	Attempts     int
	Errors       []cfError
	Transport    string // a network failure, if no HTTP answer came
	kind         error
}

type cfError struct {
	Code       int       `json:"code"`
	Message    string    `json:"message"`
	ErrorChain []cfError `json:"error_chain,omitempty"`
}

func (e *cfAPIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cloudflare %s %s: ", e.Method, e.Path)
	if e.Transport != "" {
		b.WriteString(e.Transport)
	} else {
		fmt.Fprintf(&b, "HTTP %d", e.Status)
	}
	for _, c := range e.codes() {
		fmt.Fprintf(&b, "; %d %s", c.Code, c.Message)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

func (e *cfAPIError) Unwrap() error { return e.kind }

// codes flattens the errors and their chains.
func (e *cfAPIError) codes() []cfError {
	var out []cfError
	var add func([]cfError)
	add = func(list []cfError) {
		for _, c := range list {
			out = append(out, cfError{Code: c.Code, Message: c.Message})
			add(c.ErrorChain)
		}
	}
	add(e.Errors)
	return out
}

func (e *cfAPIError) has(code int) bool {
	for _, c := range e.codes() {
		if c.Code == code {
			return true
		}
	}
	return false
}

// classify sets the error's kind from its status and codes.
func (e *cfAPIError) classify() {
	switch {
	case e.Transport != "" || e.Status >= 500:
		e.kind = ErrUnavailable
	case e.Status == http.StatusTooManyRequests:
		e.kind = ErrRateLimited
	case e.has(cfCodeUnauthorized):
		e.kind = ErrPermission
	case e.Status == http.StatusUnauthorized, e.has(cfCodeInvalidToken), e.has(cfCodeMissingAuth),
		e.has(cfCodeInvalidHeaders), e.has(cfCodeInvalidAuthFormat):
		e.kind = ErrInvalidCredentials
	case e.has(cfCodeAuthentication):
		// an unknown token, or a known one without access to the zone
		e.kind = ErrInvalidCredentials
	case e.Status == http.StatusForbidden:
		e.kind = ErrPermission
	case e.Status == http.StatusNotFound && !e.has(cfCodeRecordNotFound):
		e.kind = ErrZoneNotFound
	default:
		e.kind = ErrProviderFailed
	}
}

// cfDoer sends Cloudflare API requests: it retries rate limits (429, with
// Retry-After honoured up to the maximum wait), provider-side failures
// (5xx, including Cloudflare's HTML edge pages) and network errors through
// internal/retry, and turns every final failure into a *cfAPIError.
// libdns/cloudflare returns that error unchanged, so callers can map it.
type cfDoer struct {
	client *http.Client
	// policy is the retry policy; its OnRetry is set per request
	policy retry.Policy
	logger *zap.Logger
}

// Do implements libdns/cloudflare's HTTPClient.
func (d *cfDoer) Do(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	path := strings.TrimPrefix(req.URL.Path, "/client/v4")
	p := d.policy
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	p.OnRetry = func(attempt int, err error, wait time.Duration) {
		if ce := d.logger.Check(zap.DebugLevel, "retrying cloudflare api request"); ce != nil {
			status := 0
			var e *cfAPIError
			if errors.As(err, &e) {
				status = e.Status
			}
			ce.Write(zap.String("method", req.Method), zap.String("path", path), zap.Int("attempt", attempt),
				zap.Int("status", status), zap.Duration("wait", wait))
		}
	}
	var resp *http.Response
	err := retry.Do(ctx, p, func(attempt int) error {
		r := req.Clone(ctx)
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return retry.Permanent(err)
			}
			r.Body = body
		}
		res, err := d.client.Do(r)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return retry.Permanent(ctx.Err())
			}
			e := &cfAPIError{Method: req.Method, Path: path, Attempts: attempt, Transport: transportMessage(err)}
			e.classify()
			return e
		case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
			wait := retry.ParseRetryAfter(res.Header.Get("Retry-After"), now())
			e := readAPIError(req.Method, path, res, attempt)
			e.classify()
			return retry.After(e, wait)
		case res.StatusCode >= 400:
			e := readAPIError(req.Method, path, res, attempt)
			e.classify()
			return retry.Permanent(e)
		}
		resp = res
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// readAPIError reads and closes a failed response; the body is a
// Cloudflare envelope or, from the edge, an HTML page.
func readAPIError(method, path string, resp *http.Response, attempt int) *cfAPIError {
	defer resp.Body.Close()
	e := &cfAPIError{Method: method, Path: path, Status: resp.StatusCode, Attempts: attempt}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env struct {
		Errors []cfError `json:"errors"`
	}
	if json.Unmarshal(b, &env) == nil {
		e.Errors = env.Errors
	}
	return e
}

// transportMessage describes a network error without the URL's query.
func transportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// cfClient makes the API calls libdns/cloudflare does not: token
// verification and zone details, for Verify.
type cfClient struct {
	doer      *cfDoer
	apiToken  string
	zoneToken string
}

type cfZoneInfo struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Account struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"account"`
	Permissions []string `json:"permissions"`
	NameServers []string `json:"name_servers"`
}

// get GETs path (below the API base) with token and decodes the result.
func (c *cfClient) get(ctx context.Context, path string, q url.Values, token string, out any) error {
	u := cloudflareAPI + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.doer.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Success bool            `json:"success"`
		Errors  []cfError       `json:"errors"`
		Result  json.RawMessage `json:"result"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&env); err != nil {
		return fmt.Errorf("cloudflare GET %s: decoding the answer: %v", path, err)
	}
	if !env.Success || len(env.Errors) > 0 {
		e := &cfAPIError{Method: http.MethodGet, Path: path, Status: resp.StatusCode, Errors: env.Errors, Attempts: 1}
		e.classify()
		return e
	}
	if out != nil && len(env.Result) > 0 {
		return json.Unmarshal(env.Result, out)
	}
	return nil
}

// verifyToken checks a token at the user endpoint, then, for an account
// token, at the account's endpoint. It returns the token's status.
func (c *cfClient) verifyToken(ctx context.Context, token, accountID string) (string, error) {
	var res struct {
		Status string `json:"status"`
	}
	err := c.get(ctx, "/user/tokens/verify", nil, token, &res)
	var apiErr *cfAPIError
	if err != nil && accountID != "" && errors.As(err, &apiErr) && errors.Is(err, ErrInvalidCredentials) {
		err = c.get(ctx, "/accounts/"+url.PathEscape(accountID)+"/tokens/verify", nil, token, &res)
	}
	return res.Status, err
}

// zone looks a zone up by name with the zone token (or the API token).
func (c *cfClient) zone(ctx context.Context, name string) (*cfZoneInfo, error) {
	tok := c.zoneToken
	if tok == "" {
		tok = c.apiToken
	}
	var zones []cfZoneInfo
	if err := c.get(ctx, "/zones", url.Values{"name": {name}}, tok, &zones); err != nil {
		return nil, err
	}
	for i := range zones {
		if strings.EqualFold(strings.TrimSuffix(zones[i].Name, "."), name) {
			return &zones[i], nil
		}
	}
	return nil, nil
}

// readRecords lists a few TXT records of the zone with the API token,
// which proves it may read the zone's DNS records.
func (c *cfClient) readRecords(ctx context.Context, zoneID string) error {
	return c.get(ctx, "/zones/"+url.PathEscape(zoneID)+"/dns_records", url.Values{"type": {"TXT"}, "per_page": {"5"}}, c.apiToken, nil)
}

// cloudflareMessage turns a Cloudflare failure during op on zone into an
// operator's sentence.
func cloudflareMessage(err error, op, zone string) string {
	var e *cfAPIError
	if !errors.As(err, &e) {
		if strings.Contains(err.Error(), "expected 1 zone, got 0") {
			return fmt.Sprintf("%s: zone %s is not in this Cloudflare account, or the token cannot see it (it needs Zone → Zone → Read; give a zone_token for that if the API token is limited to DNS)", op, zone)
		}
		return fmt.Sprintf("%s: %v", op, err)
	}
	var msg string
	switch {
	case e.Status == http.StatusTooManyRequests:
		msg = fmt.Sprintf("Cloudflare's rate limit was reached (HTTP 429) and %d attempts did not get through; try again later", e.Attempts)
	case e.Transport != "":
		msg = fmt.Sprintf("Cloudflare's API could not be reached after %d attempts: %s", e.Attempts, e.Transport)
	case e.Status >= 500:
		msg = fmt.Sprintf("Cloudflare's API failed on its side (HTTP %d) %d times in a row; try again later", e.Status, e.Attempts)
	case e.has(cfCodeMissingAuth), e.has(cfCodeInvalidHeaders), e.has(cfCodeInvalidAuthFormat):
		msg = "Cloudflare refused the API token as malformed: paste the token itself"
	case e.has(cfCodeInvalidToken) || e.Status == http.StatusUnauthorized:
		msg = "Cloudflare does not accept the API token: it is invalid, expired or revoked"
	case e.has(cfCodeUnauthorized):
		msg = fmt.Sprintf("the API token lacks a permission on zone %s: it needs Zone → DNS → Edit there", zone)
	case e.has(cfCodeAuthentication):
		msg = fmt.Sprintf("Cloudflare refused the API token for zone %s: the token is invalid, or has no permission on that zone (it needs Zone → DNS → Edit)", zone)
	case e.Status == http.StatusNotFound || e.has(7003):
		msg = fmt.Sprintf("zone %s was not found in Cloudflare", zone)
	default:
		msg = e.Error()
	}
	return op + ": " + msg
}
