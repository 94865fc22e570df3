package workflow

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// retryAfterSink remembers the last Retry-After the CA sent in a session.
// acmez does not surface the header with its errors, so the engine reads it
// off the responses through its own transport.
type retryAfterSink struct {
	mu sync.Mutex
	d  time.Duration
}

func (s *retryAfterSink) get() time.Duration {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d
}

func (s *retryAfterSink) reset() {
	s.mu.Lock()
	s.d = 0
	s.mu.Unlock()
}

func (s *retryAfterSink) set(d time.Duration) {
	s.mu.Lock()
	s.d = d
	s.mu.Unlock()
}

type sinkTransport struct {
	next http.RoundTripper
	sink *retryAfterSink
}

type sinkKey struct{}

// withSink makes requests made with ctx report Retry-After into sink
// instead of the session's, so authorizations polled at once each read
// their own.
func withSink(ctx context.Context, sink *retryAfterSink) context.Context {
	return context.WithValue(ctx, sinkKey{}, sink)
}

func (t sinkTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil && resp != nil {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			sink := t.sink
			if own, ok := req.Context().Value(sinkKey{}).(*retryAfterSink); ok {
				sink = own
			}
			sink.set(d)
		}
	}
	return resp, err
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}

// withSink returns a copy of cl whose HTTP transport reports Retry-After
// into the session's sink. The copy has its own nonce pool and directory.
func (s *session) withSinkClient(cl *acme.Client) *acme.Client {
	hc := http.DefaultClient
	if cl.HTTPClient != nil {
		hc = cl.HTTPClient
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	wrapped := *hc
	wrapped.Transport = sinkTransport{next: next, sink: s.ra}
	// PollTimeout: the engine polls a processing order itself (awaitIssuance,
	// at its own pace, after persisting that the CA accepted the CSR), so
	// FinalizeOrder must return right after the CA's answer: with a timeout
	// this short its poll loop never runs. FinalizeOrder is the only call
	// of the library that polls which the engine uses (authorizations are
	// polled by pollAuthzDone).
	return &acme.Client{Directory: cl.Directory, HTTPClient: &wrapped, UserAgent: cl.UserAgent,
		PollTimeout: time.Nanosecond, Logger: cl.Logger}
}

// pollPacer paces polling of the CA: first after 20 ms, doubling up to 2 s,
// or after the CA's Retry-After when it sent one.
type pollPacer struct{ wait time.Duration }

// pause waits before the next poll; what names the wait in its error.
func (p *pollPacer) pause(ctx context.Context, ra *retryAfterSink, what string) error {
	if p.wait == 0 {
		p.wait = 20 * time.Millisecond
	}
	next := p.wait
	if d := ra.get(); d > 0 {
		next = d
	}
	t := time.NewTimer(next) // the CA's pace, not a fixed sleep
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for the CA to %s: %w", what, ctx.Err())
	case <-t.C:
	}
	if p.wait *= 2; p.wait > 2*time.Second {
		p.wait = 2 * time.Second
	}
	return nil
}
