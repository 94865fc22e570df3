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
	// afterClaim is a test hook run once a certificate's successor is
	// claimed, before the successor is created; an error from it stops
	// there, as a crash would.
	afterClaim func(certID, workflowID string) error
}

// Engine runs workflows on one node. One engine runs per node and store: a
// config reload hands it the new settings (Configure) and collaborators
// (SetDeps) instead of starting a second one.
type Engine struct {
	// opts holds what is fixed for the engine's life (store, node, logger,
	// clock, metrics); the tunables in force are read through settings.
	opts Options
	tun  atomic.Pointer[Options]
	deps atomic.Pointer[Deps]
	log  *zap.Logger

	kick chan struct{}
	done chan struct{}

	mu sync.Mutex
	// running are the workflows this node runs, each holding a slot of
	// its ACME client; slots counts them per ACME client
	running map[string]*runSlot
	slots   map[string]int
	// changed is closed (and replaced) when Configure changes settings
	changed chan struct{}

	watch watchers

	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type runSlot struct {
	issuerID string
	cancel   context.CancelFunc
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
	opts = opts.withDefaults()
	e := &Engine{
		opts:    opts,
		log:     opts.Logger,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}, 1),
		running: map[string]*runSlot{},
		slots:   map[string]int{},
		changed: make(chan struct{}),
	}
	e.tun.Store(&opts)
	return e, nil
}

// withDefaults fills in the tunables left zero.
func (o Options) withDefaults() Options {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Minute
	}
	if o.ScanInterval <= 0 {
		o.ScanInterval = 5 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.PerIssuerConcurrency <= 0 {
		o.PerIssuerConcurrency = 16
	}
	if o.ValidationTimeout <= 0 {
		o.ValidationTimeout = 5 * time.Minute
	}
	if o.RenewalInterval == 0 {
		o.RenewalInterval = time.Hour
	}
	return o
}

// Configure applies opts' tunables (LeaseTTL, ScanInterval, Concurrency,
// PerIssuerConcurrency, Retry, ValidationTimeout, RenewalInterval; zero
// means the default) to the engine while it runs: a config reload changes
// the running engine rather than starting a second one under the same node.
// Workflows already running keep their slots; new work is leased under the
// new limits. The store, node, logger, clock and metrics given to New stay.
func (e *Engine) Configure(opts Options) error {
	if opts.Store != nil && opts.Store != e.opts.Store {
		return errors.New("configuring workflow engine: the store cannot change while it runs")
	}
	if opts.Node != "" && opts.Node != e.opts.Node {
		return fmt.Errorf("configuring workflow engine: node %q cannot become %q while it runs", e.opts.Node, opts.Node)
	}
	cur := e.opts
	cur.LeaseTTL, cur.ScanInterval, cur.Concurrency, cur.PerIssuerConcurrency = opts.LeaseTTL, opts.ScanInterval, opts.Concurrency, opts.PerIssuerConcurrency
	cur.Retry, cur.ValidationTimeout, cur.RenewalInterval = opts.Retry, opts.ValidationTimeout, opts.RenewalInterval
	cur = cur.withDefaults()
	if tunables(*e.tun.Load()) == tunables(cur) {
		return nil
	}
	e.tun.Store(&cur)
	e.mu.Lock()
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
	e.log.Info("workflow engine settings changed", zap.Int("concurrency", cur.Concurrency),
		zap.Int("per_issuer_concurrency", cur.PerIssuerConcurrency), zap.Duration("lease_ttl", cur.LeaseTTL),
		zap.Duration("scan_interval", cur.ScanInterval), zap.Int("max_attempts", cur.Retry.withDefaults().MaxAttempts),
		zap.Duration("renewal_interval", cur.RenewalInterval))
	return nil
}

type tunableOptions struct {
	leaseTTL, scan, validation, renewal time.Duration
	concurrency, perIssuer              int
	retry                               RetryPolicy
}

func tunables(o Options) tunableOptions {
	return tunableOptions{o.LeaseTTL, o.ScanInterval, o.ValidationTimeout, o.RenewalInterval, o.Concurrency,
		o.PerIssuerConcurrency, o.Retry}
}

// Settings returns the options in force (the tunables as last configured).
func (e *Engine) Settings() Options { return *e.tun.Load() }

// settings is Settings for the engine's own reads.
func (e *Engine) settings() *Options { return e.tun.Load() }

// changes returns a channel closed at the next settings change.
func (e *Engine) changes() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// SetDeps sets (or swaps, on a config reload) the engine's collaborators.
func (e *Engine) SetDeps(d Deps) { e.deps.Store(&d) }

// Start runs the scheduler and the renewal scan until Stop.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		e.loop(ctx)
	}()
	go func() {
		defer e.wg.Done()
		e.renewals(ctx)
	}()
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
		timer.Reset(e.settings().ScanInterval)
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
		case <-e.done:
		case <-e.changes():
		case <-timer.C:
		}
	}
}

// schedule leases the due workflows this node can run now and runs them.
func (e *Engine) schedule(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	ws, err := e.acquire(ctx)
	if err != nil && ctx.Err() == nil {
		e.log.Error("acquiring due workflows", zap.Error(err))
	}
	for _, w := range ws {
		e.start(ctx, w, func() {
			select {
			case e.done <- struct{}{}:
			default:
			}
		})
	}
}

// acquire leases due workflows this node can run now and reserves each a
// slot (of the node, and of its ACME client). Workflows of an ACME client
// with no free slot here are not leased, so another node can run them: the
// store skips the ACME clients already full, and one that fills up during
// the pass has the workflows beyond its slots released at once. Each pass
// either fills the node, finds nothing more due, or fills one more ACME
// client, so the passes are bounded by the ACME clients due. On a store
// error it returns what it reserved so far with the error.
func (e *Engine) acquire(ctx context.Context) ([]*storage.Workflow, error) {
	var out []*storage.Workflow
	for {
		set := e.settings()
		e.mu.Lock()
		free := set.Concurrency - len(e.running)
		var skip []string
		for id, n := range e.slots {
			if n >= set.PerIssuerConcurrency {
				skip = append(skip, id)
			}
		}
		e.mu.Unlock()
		if free <= 0 {
			return out, nil
		}
		ws, err := e.opts.Store.Workflows().Acquire(ctx, e.opts.Node, e.opts.Clock(), set.LeaseTTL, free, skip...)
		if err != nil {
			return out, err
		}
		overflow := false
		for _, w := range ws {
			switch e.reserve(w, set) {
			case reserved:
				out = append(out, w)
			case issuerFull:
				overflow = true
				e.release(w)
			case alreadyRunning:
				// its lease ran out under a run that is stopping now; that
				// run releases it when it ends
			}
		}
		if !overflow {
			return out, nil
		}
	}
}

type reservation int

const (
	reserved reservation = iota
	issuerFull
	alreadyRunning
)

// reserve takes a slot for w: the node's and its ACME client's.
func (e *Engine) reserve(w *storage.Workflow, set *Options) reservation {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.running[w.ID]; dup {
		return alreadyRunning
	}
	if e.slots[w.IssuerID] >= set.PerIssuerConcurrency || len(e.running) >= set.Concurrency {
		return issuerFull
	}
	e.running[w.ID] = &runSlot{issuerID: w.IssuerID}
	e.slots[w.IssuerID]++
	return reserved
}

// start runs w, which holds a reservation, in its own goroutine and calls
// finished when the run ends and the slot is free again.
func (e *Engine) start(parent context.Context, w *storage.Workflow, finished func()) {
	ctx, cancel := context.WithCancel(parent)
	e.mu.Lock()
	slot := e.running[w.ID]
	slot.cancel = cancel
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			cancel()
			e.mu.Lock()
			delete(e.running, w.ID)
			if e.slots[slot.issuerID]--; e.slots[slot.issuerID] <= 0 {
				delete(e.slots, slot.issuerID)
			}
			e.mu.Unlock()
			finished()
		}()
		e.run(ctx, w)
	}()
}

// RunDue leases and runs due workflows until none this node can run is
// left due and none it started is running, keeping up to Concurrency in
// flight (a finished workflow's slot is refilled at once); for tools, tests
// and benchmarks that drive the engine themselves.
func (e *Engine) RunDue(ctx context.Context) error {
	done := make(chan struct{}, 1024)
	inFlight := 0
	for {
		ws, err := e.acquire(ctx)
		for _, w := range ws {
			e.start(ctx, w, func() { done <- struct{}{} })
			inFlight++
		}
		if err != nil && len(ws) == 0 && inFlight == 0 {
			return err
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

// run holds the lease on w while advancing it; w holds a slot already.
func (e *Engine) run(ctx context.Context, w *storage.Workflow) {
	log := e.log.With(zap.String("workflow_id", w.ID), zap.String("issuer_id", w.IssuerID))
	ttl := e.settings().LeaseTTL
	// keep the lease while working; losing it stops the work
	lctx, lost := context.WithCancel(ctx)
	defer lost()
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				if err := e.opts.Store.Workflows().Renew(lctx, w.ID, e.opts.Node, e.opts.Clock().Add(ttl)); err != nil && lctx.Err() == nil {
					log.Warn("lost the workflow lease", zap.Error(err))
					lost()
					return
				}
			}
		}
	}()

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

// cancelLocal stops a workflow running on this node.
func (e *Engine) cancelLocal(id string) {
	e.mu.Lock()
	var c context.CancelFunc
	if r := e.running[id]; r != nil {
		c = r.cancel
	}
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
