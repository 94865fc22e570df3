package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
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
	wh.backoff = func(int) time.Duration { return 0 }
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
	wh := provision(t, &Webhook{URL: srv.URL, Format: "slack", Events: []string{"certlocker.cert_issued", "certlocker.workflow_failed"}})
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
	cases := map[string]Webhook{
		"no url":        {},
		"ftp url":       {URL: "ftp://example.com/x"},
		"bad format":    {URL: "https://example.com/", Format: "xml"},
		"unknown event": {URL: "https://example.com/", Events: []string{"certlocker.nope"}},
		"unset secret":  {URL: "https://example.com/", Secret: "{env.CERTLOCKER_TEST_UNSET}"},
	}
	for name, wh := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := wh.Provision(ctx)
			if err == nil {
				err = wh.Validate()
			}
			wh.Cleanup()
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
