package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

type received struct {
	body []byte
	sig  string
}

// receiver answers with the given statuses in turn (200 after the list).
func receiver(t *testing.T, statuses ...int) (*httptest.Server, chan received) {
	ch := make(chan received, 16)
	var mu sync.Mutex
	i := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		st := http.StatusOK
		if i < len(statuses) {
			st = statuses[i]
		}
		i++
		mu.Unlock()
		ch <- received{b, r.Header.Get(SignatureHeader)}
		w.WriteHeader(st)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func provision(t *testing.T, wh *Webhook) *Webhook {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := wh.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	wh.policy.Sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	if err := wh.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wh.Cleanup() })
	return wh
}

func next(t *testing.T, ch chan received) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	return received{}
}

var issued = Event{Name: "certlocker.cert_issued", Time: time.Unix(1779274140, 0).UTC(), Node: "n1",
	Data: map[string]any{"workflow_id": "wf_1", "certificate_id": "crt_1", "names": []string{"*.certlocker.uk"}}}

func TestWebhookGenericSignedWithRetries(t *testing.T) {
	srv, ch := receiver(t, 500, 503)
	t.Setenv("HOOK_SECRET", "s3cret")
	wh := provision(t, &Webhook{URL: srv.URL, Secret: "{env.HOOK_SECRET}"})
	wh.Notify(issued)
	var last received
	for i := 0; i < 3; i++ { // two failures, then the delivery
		last = next(t, ch)
	}
	var got Event
	if err := json.Unmarshal(last.body, &got); err != nil || got.Name != issued.Name || got.Data["certificate_id"] != "crt_1" {
		t.Fatalf("body %s: %v", last.body, err)
	}
	if last.sig != Sign([]byte("s3cret"), last.body) || !strings.HasPrefix(last.sig, "sha256=") {
		t.Fatalf("signature %q does not match the body", last.sig)
	}
}

func TestWebhookSlackAndFilters(t *testing.T) {
	srv, ch := receiver(t)
	t.Setenv("CERTLOCKER_TEST_SLACK_URL", srv.URL)
	wh := provision(t, &Webhook{URL: "{env.CERTLOCKER_TEST_SLACK_URL}", Format: "slack", Events: []string{"certlocker.cert_issued", "certlocker.workflow_failed"}})
	if wh.Wants("certlocker.workflow_state") || !wh.Wants("certlocker.cert_issued") {
		t.Fatal("event filter ignored")
	}
	wh.Notify(issued)
	r := next(t, ch)
	var msg map[string]string
	if err := json.Unmarshal(r.body, &msg); err != nil || !strings.Contains(msg["text"], "*.certlocker.uk") || r.sig != "" {
		t.Fatalf("slack body %s sig %q", r.body, r.sig)
	}
}

func TestWebhookGivesUpOnClientErrors(t *testing.T) {
	srv, ch := receiver(t, 400, 200)
	wh := provision(t, &Webhook{URL: srv.URL, MaxAttempts: 3})
	wh.Notify(issued)
	next(t, ch)
	wh.Notify(Event{Name: "certlocker.workflow_failed"})
	r := next(t, ch) // the next delivery is the second event, not a retry
	if !strings.Contains(string(r.body), "workflow_failed") {
		t.Fatalf("a 400 was retried: %s", r.body)
	}
}

func TestWebhookConfigErrors(t *testing.T) {
	t.Setenv("CERTLOCKER_TEST_HOOK_SECRET", "literal-secret-value")
	cases := map[string]struct {
		wh Webhook
		// the error names this field
		field string
	}{
		"no url":        {Webhook{}, "url"},
		"ftp url":       {Webhook{URL: "ftp://example.com/x"}, "url"},
		"bad format":    {Webhook{URL: "https://example.com/", Format: "xml"}, "format"},
		"unknown event": {Webhook{URL: "https://example.com/", Events: []string{"certlocker.nope"}}, "events"},
		"unset secret":  {Webhook{URL: "https://example.com/", Secret: "{env.CERTLOCKER_TEST_UNSET}"}, "secret"},
		// the secret and a Slack URL (the URL is the credential) would
		// show in GET /config/
		"literal secret":           {Webhook{URL: "https://example.com/", Secret: "literal-secret-value"}, "secret"},
		"secret partly literal":    {Webhook{URL: "https://example.com/", Secret: "x{env.CERTLOCKER_TEST_HOOK_SECRET}"}, "secret"},
		"literal slack url":        {Webhook{URL: "https://hooks.slack.com/services/T0/B0/tokentoken", Format: "slack"}, "url"},
		"slack url partly literal": {Webhook{URL: "https://hooks.slack.com/services/{env.CERTLOCKER_TEST_HOOK_SECRET}", Format: "slack"}, "url"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			wh := c.wh
			err := wh.Provision(ctx)
			if err == nil {
				err = wh.Validate()
			}
			wh.Cleanup()
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "webhook "+c.field) {
				t.Fatalf("the error does not name the field %q: %v", c.field, err)
			}
			for _, secret := range []string{"literal-secret-value", "tokentoken"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error echoes the secret: %v", err)
				}
			}
		})
	}
}

// A 429 is retried after the receiver's Retry-After (seconds, or an HTTP
// date read with the webhook's clock), capped at the longest wait, and only
// MaxAttempts times in all: the next request is the next event. The waits
// are observed through an injected Sleep, never slept.
func TestWebhookRateLimited(t *testing.T) {
	now := time.Date(2026, 5, 20, 11, 0, 0, 0, time.UTC)
	retryAfter := []string{"7", now.Add(30 * time.Second).Format(http.TimeFormat), "100000", "1"}
	requests := make(chan string, 16)
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		i := n
		n++
		mu.Unlock()
		requests <- string(b)
		if i < len(retryAfter) {
			w.Header().Set("Retry-After", retryAfter[i])
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	t.Cleanup(srv.Close)
	wh := provision(t, &Webhook{URL: srv.URL, MaxAttempts: len(retryAfter)})
	waits := make(chan time.Duration, 16)
	wh.policy.Now = func() time.Time { return now }
	wh.policy.Sleep = func(ctx context.Context, d time.Duration) error {
		waits <- d
		return ctx.Err()
	}
	wh.Notify(issued)
	for range retryAfter {
		if r := nextRequest(t, requests); !strings.Contains(r, "cert_issued") {
			t.Fatalf("request %s is not the first event", r)
		}
	}
	wh.Notify(Event{Name: "certlocker.workflow_failed"})
	if r := nextRequest(t, requests); !strings.Contains(r, "workflow_failed") {
		t.Fatalf("the first event was tried more than %d times: %s", len(retryAfter), r)
	}
	close(waits)
	var got []time.Duration
	for d := range waits {
		got = append(got, d)
	}
	want := []time.Duration{7 * time.Second, 30 * time.Second, maxWait}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("waits %v, want %v", got, want)
	}
}

func nextRequest(t *testing.T, ch chan string) string {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
	}
	return ""
}

// A Slack URL is a credential: no log line carries its path, whether the
// receiver answers an error or cannot be reached (logs captured at debug).
func TestWebhookLogsNoURLToken(t *testing.T) {
	const token = "T0SECRET/B0SECRET/xoxTOKEN123"
	for name, reachable := range map[string]bool{"error status": true, "unreachable": false} {
		t.Run(name, func(t *testing.T) {
			srv, ch := receiver(t, 500, 200)
			if !reachable {
				srv.Close()
			}
			t.Setenv("CERTLOCKER_TEST_SLACK_URL", srv.URL+"/services/"+token)
			wh := provision(t, &Webhook{URL: "{env.CERTLOCKER_TEST_SLACK_URL}", Format: "slack", MaxAttempts: 2})
			core, logs := observer.New(zapcore.DebugLevel)
			wh.logger = zap.New(core)
			wh.Notify(issued)
			if reachable {
				next(t, ch)
				next(t, ch)
			} else {
				// the delivery gives up after its attempts: poll for it
				deadline := time.Now().Add(10 * time.Second)
				for logs.FilterMessage("webhook delivery failed").FilterField(zap.Bool("will_retry", false)).Len() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the delivery never gave up")
					}
					time.Sleep(time.Millisecond)
				}
			}
			wh.Cleanup() // waits for the worker: every line is logged
			if logs.Len() == 0 {
				t.Fatal("nothing was logged: the check would prove nothing")
			}
			for _, e := range logs.All() {
				line := e.Message
				for k, v := range e.ContextMap() {
					line += " " + k + "=" + fmt.Sprint(v)
				}
				if strings.Contains(line, "SECRET") || strings.Contains(line, "xoxTOKEN") {
					t.Fatalf("a log line carries the URL's token: %s", line)
				}
			}
		})
	}
}
