package retry

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// recorder is an injected Sleep: it records the waits and returns at once.
type recorder struct{ waits []time.Duration }

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.waits = append(r.waits, d)
	return ctx.Err()
}

var errBusy = errors.New("busy")

func TestDo(t *testing.T) {
	cases := map[string]struct {
		policy   Policy
		results  []error // what fn returns per attempt; nil after the list
		calls    int
		waits    []time.Duration
		wantErr  error
		deadline time.Duration
	}{
		"first try": {policy: Policy{Attempts: 3, Base: time.Second}, calls: 1},
		"back-off doubles up to max": {policy: Policy{Attempts: 5, Base: time.Second, Max: 3 * time.Second},
			results: []error{errBusy, errBusy, errBusy, errBusy}, calls: 5,
			waits: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}},
		"attempts run out": {policy: Policy{Attempts: 3, Base: time.Second},
			results: []error{errBusy, errBusy, errBusy, errBusy}, calls: 3, wantErr: errBusy,
			waits: []time.Duration{time.Second, 2 * time.Second}},
		"permanent stops at once": {policy: Policy{Attempts: 5, Base: time.Second},
			results: []error{errBusy, Permanent(errBusy)}, calls: 2, wantErr: errBusy, waits: []time.Duration{time.Second}},
		"retry-after honoured and capped": {policy: Policy{Attempts: 4, Base: time.Second, Max: 10 * time.Second, Jitter: 0.5},
			results: []error{After(errBusy, 7*time.Second), After(errBusy, time.Hour)}, calls: 3,
			waits: []time.Duration{7 * time.Second, 10 * time.Second}},
		"no wait past the deadline": {policy: Policy{Attempts: 5, Base: time.Minute},
			results: []error{errBusy}, calls: 1, wantErr: errBusy, deadline: time.Second},
		"zero attempts is one": {policy: Policy{}, results: []error{errBusy}, calls: 1, wantErr: errBusy},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			if c.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.deadline)
				defer cancel()
			}
			rec := &recorder{}
			c.policy.Sleep = rec.sleep
			calls := 0
			err := Do(ctx, c.policy, func(attempt int) error {
				calls++
				if attempt != calls {
					t.Fatalf("attempt %d on call %d", attempt, calls)
				}
				if attempt <= len(c.results) {
					return c.results[attempt-1]
				}
				return nil
			})
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			var p *permanent
			var a *after
			if errors.As(err, &p) || errors.As(err, &a) {
				t.Fatalf("the returned error is still wrapped: %#v", err)
			}
			if calls != c.calls {
				t.Fatalf("%d calls, want %d", calls, c.calls)
			}
			if len(rec.waits) != len(c.waits) {
				t.Fatalf("waits %v, want %v", rec.waits, c.waits)
			}
			for i := range c.waits {
				if rec.waits[i] != c.waits[i] {
					t.Fatalf("waits %v, want %v", rec.waits, c.waits)
				}
			}
		})
	}
}

func TestDoStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	err := Do(ctx, Policy{Attempts: 10, Base: time.Hour, Sleep: func(ctx context.Context, d time.Duration) error {
		cancel()
		return Sleep(ctx, d)
	}}, func(int) error { calls++; return errBusy })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errBusy) || calls != 1 {
		t.Fatalf("err %v after %d calls, want the last error and context.Canceled after 1", err, calls)
	}
}

func TestJitterStaysWithinBounds(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second, Jitter: 0.25}
	seen := map[time.Duration]bool{}
	for i := 0; i < 200; i++ {
		w := p.Wait(2, 0)
		if w < 200*time.Millisecond || w > 250*time.Millisecond {
			t.Fatalf("wait %v outside [200ms, 250ms]", w)
		}
		seen[w] = true
	}
	if len(seen) < 2 {
		t.Fatal("jitter never varied the wait")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 20, 11, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":     0,
		"120":  2 * time.Minute,
		" 3 ":  3 * time.Second,
		"-1":   0,
		"soon": 0,
		now.Add(30 * time.Second).Format(http.TimeFormat): 30 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	}
	for h, want := range cases {
		if got := ParseRetryAfter(h, now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", h, got, want)
		}
	}
}
