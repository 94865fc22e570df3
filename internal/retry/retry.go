// Package retry is CertLocker's one retry loop: a bounded number of
// attempts, exponential back-off with jitter, a server's Retry-After
// honoured up to the longest wait, and the caller's context respected (no
// wait that would outlive its deadline). Sleep and the clock are
// injectable, so tests observe the waits instead of sleeping through them.
//
// The Cloudflare API client, DNS provider calls, the webhook notifier and
// the SQLite open all retry through it.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Policy says how often to try and how long to wait in between.
type Policy struct {
	// Attempts is the number of tries in all; below 1 means 1.
	Attempts int
	// Base is the wait after the first failed attempt; it doubles after
	// each further one, up to Max. Max also caps a Retry-After. Max 0
	// means no cap.
	Base, Max time.Duration
	// Jitter adds a random part of up to Jitter times the back-off (not to
	// a Retry-After the server asked for), so that many clients failing
	// together do not retry together. 0 means none.
	Jitter float64
	// Sleep waits d, or until ctx is done (returning its error). Default:
	// a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock a Retry-After date and a context deadline are
	// measured against. Default: time.Now.
	Now func() time.Time
	// OnRetry, if set, is called before each wait with the attempt that
	// failed, its error and the wait.
	OnRetry func(attempt int, err error, wait time.Duration)
}

// Permanent marks err as not worth retrying: Do returns it (unwrapped) at
// once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err}
}

type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// After marks err as retryable no sooner than d (a server's Retry-After).
func After(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &after{err, d}
}

type after struct {
	err error
	d   time.Duration
}

func (a *after) Error() string { return a.err.Error() }
func (a *after) Unwrap() error { return a.err }

// Do calls fn (with the attempt number, from 1) until it returns nil, a
// Permanent error, or the attempts run out; it returns fn's last error,
// unwrapped from Permanent and After. When ctx is done before a wait or
// during one, Do returns fn's last error wrapped with ctx's error (both
// match errors.Is); when ctx's deadline would come before the wait ends, it
// returns fn's last error without waiting.
func Do(ctx context.Context, p Policy, fn func(attempt int) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(attempt)
		if err == nil {
			return nil
		}
		var perm *permanent
		if errors.As(err, &perm) {
			return perm.err
		}
		var hint time.Duration
		var a *after
		if errors.As(err, &a) {
			hint, err = a.d, a.err
		}
		if attempt >= p.Attempts {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return stopped(err, cerr)
		}
		wait := p.Wait(attempt, hint)
		if dl, ok := ctx.Deadline(); ok && dl.Sub(p.now()) < wait {
			return err // waiting would outlive the caller
		}
		if p.OnRetry != nil {
			p.OnRetry(attempt, err, wait)
		}
		if serr := p.sleep(ctx, wait); serr != nil {
			return stopped(err, serr)
		}
	}
}

// stopped is the last error of a retry stopped by its context; it wraps
// both.
func stopped(last, ctxErr error) error {
	return fmt.Errorf("%w (stopped before retrying: %w)", last, ctxErr)
}

// Wait is the wait after attempt failed: retryAfter if the server gave one
// (capped at Max), else Base doubled attempt-1 times (capped at Max) plus
// jitter.
func (p Policy) Wait(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		if p.Max > 0 && retryAfter > p.Max {
			return p.Max
		}
		return retryAfter
	}
	d := p.Base
	for i := 1; i < attempt && (p.Max <= 0 || d < p.Max); i++ {
		d *= 2
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	if p.Jitter > 0 && d > 0 {
		d += time.Duration(rand.Float64() * p.Jitter * float64(d))
	}
	return d
}

func (p Policy) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p Policy) sleep(ctx context.Context, d time.Duration) error {
	if p.Sleep != nil {
		return p.Sleep(ctx, d)
	}
	return Sleep(ctx, d)
}

// Sleep waits d or until ctx is done, and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date (measured from now). Anything else, or a date in the past, is 0.
func ParseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(h); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
