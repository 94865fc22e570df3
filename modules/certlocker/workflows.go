package certlocker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/notify"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// WorkflowConfig tunes the workflow engine.
type WorkflowConfig struct {
	// Concurrency caps workflows running at once on this node. Default: 32.
	Concurrency int `json:"concurrency,omitempty"`
	// PerIssuerConcurrency caps workflows running at once per ACME client
	// on this node, to stay inside each CA's limits. Default: 16.
	PerIssuerConcurrency int `json:"per_issuer_concurrency,omitempty"`
	// LeaseTTL is how long a node holds a workflow without renewing its
	// lease; a dead node's work is taken over after it. Default: 2m.
	LeaseTTL caddy.Duration `json:"lease_ttl,omitempty"`
	// ScanInterval is how often the engine looks for due work. Default: 5s.
	ScanInterval caddy.Duration `json:"scan_interval,omitempty"`
	// MaxAttempts bounds tries of one workflow before it fails. Default: 6.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// RenewalInterval is how often this node looks for certificates due
	// for renewal; "-1s" turns renewals off on this node. Default: 1h.
	RenewalInterval caddy.Duration `json:"renewal_interval,omitempty"`
}

// engines keeps one workflow engine per open store and node across config
// reloads: a reload applies its settings to the running engine and swaps its
// collaborators, but never starts a second engine under the node's ID nor
// stops running work.
var engines = caddy.NewUsagePool()

type pooledEngine struct {
	eng     *workflow.Engine
	metrics *workflow.Metrics
	start   *sync.Once
}

func (p pooledEngine) Destruct() error {
	p.eng.Stop()
	return nil
}

// Workflows returns the workflow engine.
func (a *App) Workflows() *workflow.Engine { return a.engine }

// engineOptions are the engine settings this config asks for.
func (a *App) engineOptions() workflow.Options {
	wc := WorkflowConfig{}
	if a.Workflow != nil {
		wc = *a.Workflow
	}
	return workflow.Options{Store: a.store, Node: a.nodeID, Logger: a.logger.Named("workflow"),
		Concurrency: wc.Concurrency, PerIssuerConcurrency: wc.PerIssuerConcurrency, LeaseTTL: time.Duration(wc.LeaseTTL),
		ScanInterval: time.Duration(wc.ScanInterval), Retry: workflow.RetryPolicy{MaxAttempts: wc.MaxAttempts},
		RenewalInterval: time.Duration(wc.RenewalInterval)}
}

// provisionWorkflows creates (or reuses) the engine and loads notifiers.
// It changes nothing in a running engine: this config's settings reach it
// when the config starts (startWorkflows), so validating a config does not.
func (a *App) provisionWorkflows(ctx caddy.Context) error {
	if wc := a.Workflow; wc != nil && (wc.Concurrency < 0 || wc.PerIssuerConcurrency < 0 || wc.MaxAttempts < 0 || wc.LeaseTTL < 0 || wc.ScanInterval < 0) {
		return fmt.Errorf("workflow: limits must not be negative")
	}
	key := a.poolKey + "\x00" + a.nodeID
	val, _, err := engines.LoadOrNew(key, func() (caddy.Destructor, error) {
		m := workflow.NewMetrics(a.store)
		opts := a.engineOptions()
		opts.Metrics = m
		eng, err := workflow.New(opts)
		if err != nil {
			return nil, err
		}
		return pooledEngine{eng: eng, metrics: m, start: new(sync.Once)}, nil
	})
	if err != nil {
		return fmt.Errorf("starting the workflow engine: %w", err)
	}
	pe := val.(pooledEngine)
	a.engine, a.enginePool, a.engineKey = pe.eng, pe, key
	if err := pe.metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering workflow metrics: %w", err)
	}

	if a.NotifiersRaw != nil {
		v, err := ctx.LoadModule(a, "NotifiersRaw")
		if err != nil {
			return fmt.Errorf("loading notifiers: %w", err)
		}
		for _, n := range v.([]any) {
			nt, ok := n.(notify.Notifier)
			if !ok {
				return fmt.Errorf("notifier module %T does not implement notify.Notifier", n)
			}
			a.notifiers = append(a.notifiers, nt)
		}
	}
	if ev, err := ctx.App("events"); err == nil {
		a.events = ev.(*caddyevents.App)
	}
	a.eventsCtx = ctx
	return nil
}

// startWorkflows gives the engine this config's settings and collaborators
// and starts it the first time.
func (a *App) startWorkflows() {
	if err := a.engine.Configure(a.engineOptions()); err != nil {
		a.logger.Error("applying workflow settings", zap.Error(err))
	}
	a.engine.SetDeps(workflow.Deps{
		Clients:   a.issuers,
		DNS:       a.dns,
		Inventory: inventoryAdapter{a},
		Events:    a.emit,
	})
	a.enginePool.start.Do(a.engine.Start)
}

func (a *App) cleanupWorkflows() {
	if a.engineKey != "" {
		_, _ = engines.Delete(a.engineKey)
		a.engineKey = ""
	}
}

// emit publishes a CertLocker event to Caddy's events app and to the
// configured notifiers.
func (a *App) emit(name string, data map[string]any) {
	if a.events != nil {
		a.events.Emit(a.eventsCtx, name, data)
	}
	ev := notify.Event{Name: name, Time: time.Now().UTC(), Node: a.nodeID, Data: data}
	for _, n := range a.notifiers {
		if n.Wants(name) {
			n.Notify(ev)
		}
	}
}

type inventoryAdapter struct{ a *App }

func (i inventoryAdapter) AddIssued(ctx context.Context, chainPEM, keyPEM []byte, issuerID, workflowID, profile string) (*storage.Certificate, error) {
	return i.a.inv.AddIssued(ctx, chainPEM, keyPEM, issuerID, workflowID, profile)
}

// Interface guards
var _ workflow.Inventory = inventoryAdapter{}
