// Package workflow runs every ACME order as a persisted, resumable state
// machine: pending → ordering → authorizing (presenting → propagating →
// validating) → finalizing → downloading → issued, or failed, cancelled,
// retry_scheduled. Every transition is written to the store, with a
// timeline event carrying the node, the step's duration and the CA's own
// problem document, before the engine acts on it; a node that crashes at any
// point is taken over by one that resumes the same order.
package workflow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Options configure an Engine.
type Options struct {
	Store  storage.Store
	Node   string
	Logger *zap.Logger
	// Clock is the engine's time source. Default: time.Now.
	Clock func() time.Time
	// LeaseTTL is how long a node holds a workflow without renewing the
	// lease; another node takes it over after that. Default: 2m.
	LeaseTTL time.Duration
	// ScanInterval is how often the engine looks for due workflows when
	// nothing wakes it. Default: 5s.
	ScanInterval time.Duration
	// Concurrency caps workflows running at once on this node. Default: 32.
	Concurrency int
	// PerIssuerConcurrency caps workflows running at once per ACME client
	// on this node. Default: 16.
	PerIssuerConcurrency int
	// Retry bounds retries. Defaults: see RetryPolicy.
	Retry RetryPolicy
	// ValidationTimeout bounds waiting for the CA to validate one
	// authorization. Default: 5m.
	ValidationTimeout time.Duration
	// Metrics, if set, records order and propagation times and CA errors.
	Metrics *Metrics
	// RenewalInterval is how often the engine looks for certificates due
	// for renewal; negative disables renewals on this node. Default: 1h.
	RenewalInterval time.Duration

	// afterPersist is a test hook run after every persisted transition;
	// an error from it stops the workflow there, as a crash would.
	afterPersist func(w *storage.Workflow, ev *storage.WorkflowEvent) error
}

// Engine runs workflows on one node.
type Engine struct {
	opts Options
	deps atomic.Pointer[Deps]
	log  *zap.Logger

	kick chan struct{}
	done chan struct{}

	mu      sync.Mutex
	running map[string]context.CancelFunc
	sems    map[string]chan struct{}

	watch watchers

	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// New returns an engine; call SetDeps and Start.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil || opts.Node == "" {
		return nil, errors.New("creating workflow engine: store and node are required")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 2 * time.Minute
	}
	if opts.ScanInterval <= 0 {
		opts.ScanInterval = 5 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 32
	}
	if opts.PerIssuerConcurrency <= 0 {
		opts.PerIssuerConcurrency = 16
	}
	if opts.ValidationTimeout <= 0 {
		opts.ValidationTimeout = 5 * time.Minute
	}
	if opts.RenewalInterval == 0 {
		opts.RenewalInterval = time.Hour
	}
	return &Engine{
		opts:    opts,
		log:     opts.Logger,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}, 1),
		running: map[string]context.CancelFunc{},
		sems:    map[string]chan struct{}{},
	}, nil
}

// SetDeps sets (or swaps, on a config reload) the engine's collaborators.
func (e *Engine) SetDeps(d Deps) { e.deps.Store(&d) }

// Start runs the scheduler until Stop.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.loop(ctx)
	}()
	if e.opts.RenewalInterval > 0 {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.RunRenewals(ctx, e.opts.RenewalInterval)
		}()
	}
}

// Stop stops the scheduler and waits for running workflows to reach a
// persisted step; their leases are released so another node (or the next
// start) resumes them at once.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		if e.cancel != nil {
			e.cancel()
		}
		e.wg.Wait()
	})
}

// Kick wakes the scheduler to look for due workflows now.
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *Engine) loop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		e.schedule(ctx)
		timer.Reset(e.opts.ScanInterval)
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
		case <-e.done:
		case <-timer.C:
		}
	}
}

// schedule leases due workflows up to the free capacity and runs them.
func (e *Engine) schedule(ctx context.Context) {
	e.mu.Lock()
	free := e.opts.Concurrency - len(e.running)
	e.mu.Unlock()
	if free <= 0 || ctx.Err() != nil {
		return
	}
	ws, err := e.opts.Store.Workflows().Acquire(ctx, e.opts.Node, e.opts.Clock(), e.opts.LeaseTTL, free)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("acquiring due workflows", zap.Error(err))
		}
		return
	}
	for _, w := range ws {
		e.launch(ctx, w)
	}
}

func (e *Engine) launch(parent context.Context, w *storage.Workflow) {
	e.start(parent, w, func() {
		select {
		case e.done <- struct{}{}:
		default:
		}
	})
}

// start runs w in its own goroutine unless this node already runs it, and
// calls finished when the run ends. It reports whether it started.
func (e *Engine) start(parent context.Context, w *storage.Workflow, finished func()) bool {
	ctx, cancel := context.WithCancel(parent)
	e.mu.Lock()
	if _, dup := e.running[w.ID]; dup {
		e.mu.Unlock()
		cancel()
		return false
	}
	e.running[w.ID] = cancel
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			cancel()
			e.mu.Lock()
			delete(e.running, w.ID)
			e.mu.Unlock()
			finished()
		}()
		e.run(ctx, w)
	}()
	return true
}

// RunDue leases and runs due workflows until none is left due and none
// is running, keeping up to Concurrency in flight (a finished workflow's
// slot is refilled at once); for tools, tests and benchmarks that drive
// the engine themselves.
func (e *Engine) RunDue(ctx context.Context) error {
	done := make(chan struct{}, e.opts.Concurrency)
	inFlight := 0
	for {
		if free := e.opts.Concurrency - inFlight; free > 0 {
			ws, err := e.opts.Store.Workflows().Acquire(ctx, e.opts.Node, e.opts.Clock(), e.opts.LeaseTTL, free)
			if err != nil {
				return err
			}
			for _, w := range ws {
				if e.start(ctx, w, func() { done <- struct{}{} }) {
					inFlight++
				}
			}
		}
		if inFlight == 0 {
			return ctx.Err()
		}
		// runs end through done even when ctx is cancelled
		<-done
		inFlight--
	}
}

// errCrash is returned by the afterPersist test hook to stop a workflow
// where a crash would: nothing after the persist runs, the lease is kept.
var errCrash = errors.New("simulated crash")

// run holds the lease on w while advancing it.
func (e *Engine) run(ctx context.Context, w *storage.Workflow) {
	log := e.log.With(zap.String("workflow_id", w.ID))
	// keep the lease from the start, also while waiting for a slot of the
	// ACME client; losing it stops the work
	lctx, lost := context.WithCancel(ctx)
	defer lost()
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		t := time.NewTicker(e.opts.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				if err := e.opts.Store.Workflows().Renew(lctx, w.ID, e.opts.Node, e.opts.Clock().Add(e.opts.LeaseTTL)); err != nil && lctx.Err() == nil {
					log.Warn("lost the workflow lease", zap.Error(err))
					lost()
					return
				}
			}
		}
	}()

	sem := e.issuerSem(w.IssuerID)
	select {
	case sem <- struct{}{}:
		defer func() { <-sem }()
	case <-lctx.Done():
		lost()
		<-renewDone
		e.release(w)
		return
	}

	err := e.advance(lctx, w)
	lost()
	<-renewDone
	switch {
	case errors.Is(err, errCrash):
		return // as if the process died: keep the lease, persist nothing more
	case errors.Is(err, storage.ErrConflict), ctx.Err() != nil:
		// changed behind our back (cancelled through the API, or the
		// lease was lost), or stopped: look at it again, cleaning up if
		// it ended
		e.reconsider(w.ID, log)
	case err != nil:
		log.Error("advancing workflow", zap.Error(err))
		e.postpone(w.ID)
	}
	e.release(w)
}

func (e *Engine) release(w *storage.Workflow) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.opts.Store.Workflows().Release(ctx, w.ID, e.opts.Node); err != nil && !errors.Is(err, storage.ErrConflict) {
		e.log.Warn("releasing workflow lease", zap.String("workflow_id", w.ID), zap.Error(err))
	}
}

// reconsider cleans up after a workflow that was cancelled elsewhere.
func (e *Engine) reconsider(id string, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := e.opts.Store.Workflows().Get(ctx, id)
	if err != nil {
		log.Warn("reloading workflow", zap.Error(err))
		return
	}
	if storage.IsTerminal(w.State) {
		d, _ := decodeData(w.Data)
		e.cleanup(ctx, w, d)
	}
}

// postpone moves an errored workflow's next run a minute out, so an error
// outside the retry policy (a store failure) does not spin.
func (e *Engine) postpone(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := e.opts.Store.Workflows().Get(ctx, id)
	if err != nil || storage.IsTerminal(w.State) {
		return
	}
	w.NextRunAt = e.opts.Clock().Add(time.Minute)
	if err := e.opts.Store.Workflows().Update(ctx, w); err != nil {
		e.log.Warn("postponing workflow", zap.String("workflow_id", id), zap.Error(err))
	}
}

func (e *Engine) issuerSem(issuerID string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sems[issuerID]
	if !ok {
		s = make(chan struct{}, e.opts.PerIssuerConcurrency)
		e.sems[issuerID] = s
	}
	return s
}

// cancelLocal stops a workflow running on this node.
func (e *Engine) cancelLocal(id string) {
	e.mu.Lock()
	c := e.running[id]
	e.mu.Unlock()
	if c != nil {
		c()
	}
}

// persist writes w and its timeline event in one transaction, then tells
// the event subscribers.
func (e *Engine) persist(ctx context.Context, w *storage.Workflow, d *orderData, ev storage.WorkflowEvent) error {
	raw, err := d.encode()
	if err != nil {
		return err
	}
	w.Data = raw
	ev.WorkflowID, ev.Node, ev.State = w.ID, e.opts.Node, w.State
	if ev.Time.IsZero() {
		ev.Time = e.opts.Clock()
	}
	err = e.opts.Store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Workflows().Update(ctx, w); err != nil {
			return err
		}
		return tx.Workflows().AppendEvent(ctx, &ev)
	})
	if err != nil {
		return fmt.Errorf("persisting workflow %s (%s): %w", w.ID, w.State, err)
	}
	e.notifyWatchers(w.ID)
	e.emit("certlocker.workflow_state", map[string]any{"workflow_id": w.ID, "state": w.State, "step": ev.Step,
		"identifier": ev.Identifier, "message": ev.Message})
	if e.opts.afterPersist != nil {
		return e.opts.afterPersist(w, &ev)
	}
	return nil
}

func (e *Engine) emit(name string, data map[string]any) {
	if d := e.deps.Load(); d != nil && d.Events != nil {
		d.Events(name, data)
	}
}
