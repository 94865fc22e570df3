package certlocker

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// stopper stops one background task and waits for it.
type stopper struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// runBackground runs fn for as long as this config runs: from Start until
// Stop (or Cleanup, or ctx ending), which waits for it to return.
func (a *App) runBackground(ctx context.Context, fn func(ctx context.Context)) {
	bctx, cancel := context.WithCancel(ctx)
	s := stopper{cancel: cancel, done: make(chan struct{})}
	a.background = append(a.background, s)
	go func() {
		defer close(s.done)
		fn(bctx)
	}()
}

func (a *App) stopBackground() {
	for _, s := range a.background {
		s.cancel()
		<-s.done
	}
	a.background = nil
}

// refreshEvery is how often the inventory re-verifies and re-rates every
// certificate (ratings change as certificates near expiry and chains age).
const refreshEvery = 24 * time.Hour

// refreshInventory re-rates the inventory daily, first an hour after start.
func (a *App) refreshInventory(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := a.inv.Refresh(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			a.logger.Error("refreshing certificate ratings", zap.Error(err))
		case n > 0:
			a.logger.Info("certificate ratings refreshed", zap.Int("count", n))
		}
		t.Reset(refreshEvery)
	}
}
