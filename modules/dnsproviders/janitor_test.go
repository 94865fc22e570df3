package dnsproviders

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// blockingTransport holds every request until its context is done, and
// says when the first one arrives.
type blockingTransport struct{ entered chan struct{} }

func (b blockingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-r.Context().Done()
	return nil, r.Context().Err()
}

// runJanitor starts RunJanitor and returns its cancel and a channel closed
// when it returns.
func runJanitor(svc *Service, delay time.Duration) (context.CancelFunc, <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.RunJanitor(ctx, delay, time.Hour, time.Hour)
	}()
	return cancel, done
}

// wait fails the test if ch is not closed soon; the bound only turns a
// hang into a failure, nothing waits on it when RunJanitor behaves.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still waiting after 30s", what)
	}
}

// RunJanitor returns promptly once its context is cancelled: while waiting
// for its first run, between runs, and in the middle of a run, without
// logging the cancellation as a failure.
func TestRunJanitorStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	noErrors := func(t *testing.T, e *env) {
		t.Helper()
		if errs := e.logs.FilterLevelExact(zapcore.ErrorLevel).All(); len(errs) > 0 {
			t.Fatalf("cancelling the janitor logged errors:\n%s", logText(e.logs))
		}
	}

	t.Run("before its first run", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		cancel, done := runJanitor(e.svc, time.Hour)
		cancel()
		wait(t, done, "RunJanitor after cancel")
		noErrors(t, e)
	})

	t.Run("between runs", func(t *testing.T) {
		t.Parallel()
		ran := make(chan struct{}, 1)
		e := newEnv(t, func(o *Options) {
			o.Now = func() time.Time { // the Janitor reads the clock for its cut-off
				select {
				case ran <- struct{}{}:
				default:
				}
				return time.Now()
			}
		})
		cancel, done := runJanitor(e.svc, 0)
		wait(t, ran, "first janitor run")
		cancel()
		wait(t, done, "RunJanitor after cancel")
		noErrors(t, e)
	})

	t.Run("during a run", func(t *testing.T) {
		t.Parallel()
		clock := &fakeClock{}
		e := newEnv(t, withClock(clock))
		p := e.cloudflare("cf", nil)
		start := time.Now().Add(-2 * time.Hour)
		clock.Set(start)
		rec, err := e.svc.Present(t.Context(), p.ID, "wf_stale", "_acme-challenge.www."+testZone, "stale")
		if err != nil {
			t.Fatal(err)
		}
		clock.Set(time.Time{}) // real time: the record is 2h old
		entered := make(chan struct{}, 1)
		working := e.svc.options().HTTPClient
		e.svc.Configure(func(o *Options) { o.HTTPClient = &http.Client{Transport: blockingTransport{entered}} })

		cancel, done := runJanitor(e.svc, 0)
		wait(t, entered, "the janitor removing the stale record")
		cancel()
		wait(t, done, "RunJanitor after cancel")
		noErrors(t, e)

		// the abandoned removal is left for the next run, and not counted
		// as a failed one: nothing failed, the run was stopped
		left, err := e.st.DNSProviders().GetRecord(t.Context(), rec.ID)
		if err != nil {
			t.Fatalf("record abandoned by a cancelled run: %v", err)
		}
		if left.CleanupAttempts != 0 || left.LastError != "" {
			t.Fatalf("a cancelled run counted a failed removal: %d attempts, last error %q", left.CleanupAttempts, left.LastError)
		}
		e.svc.Configure(func(o *Options) { o.HTTPClient = working })
		if res, err := e.svc.Janitor(t.Context(), time.Hour); err != nil || res.Removed != 1 {
			t.Fatalf("next janitor run: %+v %v", res, err)
		}
	})
}
