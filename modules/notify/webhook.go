package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/placeholder"
	"github.com/certlocker/caddy-certlocker/internal/retry"
)

func init() {
	caddy.RegisterModule(Webhook{})
}

// SignatureHeader carries the HMAC-SHA256 of the body, "sha256=<hex>",
// keyed with the webhook's secret, so receivers can check the sender.
const SignatureHeader = "X-CertLocker-Signature"

// Webhook posts events as JSON to a URL: CertLocker's own shape, or a
// Slack-compatible message ({"text": ...}) for Slack, Mattermost and
// friends. Failed deliveries are retried with back-off.
type Webhook struct {
	// URL receives the POSTs. Placeholders are expanded. With format
	// slack the URL is the credential (Slack's hold a token) and must be
	// a placeholder alone, e.g. "{env.SLACK_WEBHOOK_URL}", so it stays out
	// of GET /config/.
	URL string `json:"url,omitempty"`

	// Events lists the event names to send. Default: all CertLocker
	// events ("certlocker.workflow_state", "certlocker.cert_issued",
	// "certlocker.workflow_failed").
	Events []string `json:"events,omitempty"`

	// Format is "generic" (the event as JSON) or "slack". Default: generic.
	Format string `json:"format,omitempty"`

	// Secret keys the HMAC-SHA256 signature in the X-CertLocker-Signature
	// header. It must be a placeholder alone, such as
	// "{env.WEBHOOK_SECRET}", like every secret in a config. Default: no
	// signature.
	Secret string `json:"secret,omitempty"`

	// MaxAttempts is how many times one event is tried. Between attempts
	// the wait doubles from 2s (with jitter); a receiver's Retry-After is
	// honoured up to 5 minutes. Default: 5.
	MaxAttempts int `json:"max_attempts,omitempty"`

	// Timeout bounds one delivery attempt. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	url    string
	secret []byte
	client *http.Client
	logger *zap.Logger
	queue  chan Event
	policy retry.Policy
	// ctx ends at Cleanup, cutting a wait short
	ctx  context.Context
	stop context.CancelFunc
	done chan struct{}
}

// Back-off between delivery attempts.
const (
	baseWait = 2 * time.Second
	// maxWait caps a wait, a receiver's Retry-After included.
	maxWait = 5 * time.Minute
)

// CaddyModule returns the Caddy module information.
func (Webhook) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "certlocker.notifiers.webhook",
		New: func() caddy.Module { return new(Webhook) },
	}
}

// Provision expands placeholders and starts the delivery worker.
func (wh *Webhook) Provision(ctx caddy.Context) error {
	wh.logger = ctx.Logger()
	// secrets in a config are placeholders alone (checked before they
	// are expanded): a Slack URL is one
	if wh.Secret != "" && !placeholder.Only(wh.Secret) {
		return errors.New(`webhook secret must be a placeholder such as {env.WEBHOOK_SECRET}, not a literal value, so it stays out of GET /config/`)
	}
	if wh.Format == "slack" && !placeholder.Only(wh.URL) {
		return errors.New(`webhook url of format slack holds its token and must be a placeholder such as {env.SLACK_WEBHOOK_URL}, not a literal URL, so it stays out of GET /config/`)
	}
	repl := caddy.NewReplacer()
	u, err := repl.ReplaceOrErr(wh.URL, true, true)
	if err != nil {
		return fmt.Errorf("webhook url: %v", err)
	}
	wh.url = u
	if wh.Secret != "" {
		s, err := repl.ReplaceOrErr(wh.Secret, true, true)
		if err != nil {
			return fmt.Errorf("webhook secret: %v", err)
		}
		wh.secret = []byte(s)
	}
	if wh.MaxAttempts <= 0 {
		wh.MaxAttempts = 5
	}
	if wh.Timeout <= 0 {
		wh.Timeout = caddy.Duration(10 * time.Second)
	}
	if wh.Format == "" {
		wh.Format = "generic"
	}
	wh.client = &http.Client{Timeout: time.Duration(wh.Timeout)}
	wh.policy = retry.Policy{Attempts: wh.MaxAttempts, Base: baseWait, Max: maxWait, Jitter: 0.25}
	wh.start()
	return nil
}

// Validate checks the configuration.
func (wh *Webhook) Validate() error {
	pu, err := url.Parse(wh.url)
	if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
		return errors.New("webhook url must be an http or https URL")
	}
	if wh.Format != "generic" && wh.Format != "slack" {
		return fmt.Errorf("webhook format %q: use generic or slack", wh.Format)
	}
	for _, e := range wh.Events {
		if !slices.Contains(AllEvents, e) {
			return fmt.Errorf("webhook events: unknown event %q (known: %s)", e, strings.Join(AllEvents, ", "))
		}
	}
	return nil
}

// AllEvents are the events CertLocker emits.
var AllEvents = []string{"certlocker.workflow_state", "certlocker.cert_issued", "certlocker.workflow_failed"}

func (wh *Webhook) start() {
	wh.queue = make(chan Event, 1024)
	wh.ctx, wh.stop = context.WithCancel(context.Background())
	wh.done = make(chan struct{})
	go func() {
		defer close(wh.done)
		for {
			select {
			case <-wh.ctx.Done():
				return
			case ev := <-wh.queue:
				wh.deliver(ev)
			}
		}
	}()
}

// Cleanup stops the worker; undelivered events are dropped with a log line.
func (wh *Webhook) Cleanup() error {
	if wh.stop == nil {
		return nil
	}
	if wh.ctx.Err() != nil {
		return nil // already cleaned up
	}
	wh.stop()
	<-wh.done
	if n := len(wh.queue); n > 0 && wh.logger != nil {
		wh.logger.Warn("webhook events dropped at shutdown", zap.Int("count", n))
	}
	return nil
}

// Wants implements Notifier.
func (wh *Webhook) Wants(name string) bool {
	return len(wh.Events) == 0 || slices.Contains(wh.Events, name)
}

// Notify implements Notifier; it never blocks: when the queue is full the
// event is dropped and logged.
func (wh *Webhook) Notify(ev Event) {
	select {
	case wh.queue <- ev:
	default:
		wh.logger.Warn("webhook queue full; event dropped", zap.String("event", ev.Name))
	}
}

// deliver posts one event, retrying with back-off; a 4xx other than 408
// and 429 is not retried.
func (wh *Webhook) deliver(ev Event) {
	body, err := wh.body(ev)
	if err != nil {
		wh.logger.Error("encoding webhook body", zap.Error(err))
		return
	}
	p := wh.policy
	p.OnRetry = func(attempt int, err error, wait time.Duration) {
		wh.logger.Warn("webhook delivery failed", zap.String("event", ev.Name), zap.Int("attempt", attempt),
			zap.Bool("will_retry", true), zap.Duration("wait", wait), zap.Error(err))
	}
	err = retry.Do(wh.ctx, p, func(int) error {
		status, retryAfter, err := wh.post(body, p.Now)
		switch {
		case err == nil:
			return nil
		case status == 0 || status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
			return retry.After(err, retryAfter)
		default:
			return retry.Permanent(err)
		}
	})
	switch {
	case err == nil:
	case wh.ctx.Err() != nil:
		wh.logger.Warn("webhook delivery abandoned at shutdown", zap.String("event", ev.Name), zap.Error(err))
	default:
		wh.logger.Warn("webhook delivery failed", zap.String("event", ev.Name), zap.Bool("will_retry", false), zap.Error(err))
	}
}

// post sends body once and returns the status, the receiver's
// Retry-After (read against now, nil for the wall clock) and an error
// unless it answered 2xx.
func (wh *Webhook) post(body []byte, now func() time.Time) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(wh.Timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, wh.url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("building request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "CertLocker-Webhook/1")
	if len(wh.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(wh.secret, body))
	}
	resp, err := wh.client.Do(req)
	if err != nil {
		// the URL may hold a token: report the host only
		return 0, 0, fmt.Errorf("posting to %s: %v", req.URL.Host, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	if now == nil {
		now = time.Now
	}
	ra := retry.ParseRetryAfter(resp.Header.Get("Retry-After"), now())
	return resp.StatusCode, ra, fmt.Errorf("%s answered %s", req.URL.Host, resp.Status)
}

// Sign returns the signature header value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (wh *Webhook) body(ev Event) ([]byte, error) {
	if wh.Format != "slack" {
		return json.Marshal(ev)
	}
	return json.Marshal(map[string]string{"text": SlackText(ev)})
}

// SlackText renders an event as one line of Slack mrkdwn.
func SlackText(ev Event) string {
	s := func(k string) string {
		if v, ok := ev.Data[k]; ok {
			return fmt.Sprint(v)
		}
		return ""
	}
	switch ev.Name {
	case "certlocker.cert_issued":
		return fmt.Sprintf(":white_check_mark: Certificate issued for %s (workflow %s, certificate %s)", s("names"), s("workflow_id"), s("certificate_id"))
	case "certlocker.workflow_failed":
		return fmt.Sprintf(":x: Workflow %s failed: %s", s("workflow_id"), s("message"))
	default:
		msg := fmt.Sprintf("Workflow %s is %s", s("workflow_id"), s("state"))
		if m := s("message"); m != "" {
			msg += ": " + m
		}
		return msg
	}
}

// UnmarshalCaddyfile reads
//
//	notifier webhook {
//		url <url>
//		events <event>...
//		format generic|slack
//		secret <placeholder>
//		max_attempts <n>
//		timeout <duration>
//	}
func (wh *Webhook) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "events":
			wh.Events = d.RemainingArgs()
			if len(wh.Events) == 0 {
				return d.ArgErr()
			}
			continue
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "url":
			wh.URL = val
		case "format":
			wh.Format = val
		case "secret":
			wh.Secret = val
		case "max_attempts":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return d.Errf("max_attempts must be a positive number, not %q", val)
			}
			wh.MaxAttempts = n
		case "timeout":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("timeout: %v", err)
			}
			wh.Timeout = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized webhook option: %s", opt)
		}
	}
	if wh.URL == "" {
		return d.Err("webhook needs a url")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Webhook)(nil)
	_ caddy.Validator       = (*Webhook)(nil)
	_ caddy.CleanerUpper    = (*Webhook)(nil)
	_ Notifier              = (*Webhook)(nil)
	_ caddyfile.Unmarshaler = (*Webhook)(nil)
)
