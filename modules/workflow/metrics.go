package workflow

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Metrics are the engine's Prometheus metrics. One set lives as long as the
// engine (across config reloads); Register adds it to each config's
// registry.
type Metrics struct {
	orderToIssued *prometheus.HistogramVec
	propagation   prometheus.Histogram
	caErrors      *prometheus.CounterVec
	byState       *stateCollector
}

// NewMetrics creates the metrics; byState counts workflows per state from
// the store when scraped.
func NewMetrics(store storage.Store) *Metrics {
	return &Metrics{
		orderToIssued: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "certlocker", Subsystem: "workflow", Name: "order_to_issued_seconds",
			Help:    "Time from a workflow's creation to its certificate being stored, by issuer.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600},
		}, []string{"issuer"}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "certlocker", Subsystem: "workflow", Name: "dns_propagation_seconds",
			Help:    "Time for a DNS-01 record to be served by every authoritative nameserver.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120},
		}),
		caErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "certlocker", Subsystem: "workflow", Name: "ca_errors_total",
			Help: "Problems the CAs returned, by problem type (urn:ietf:params:acme:error: prefix dropped).",
		}, []string{"type"}),
		byState: &stateCollector{store: store, desc: prometheus.NewDesc("certlocker_workflows",
			"Workflows by state.", []string{"state"}, nil)},
	}
}

// Register adds the metrics to reg; registering twice is not an error.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	if m == nil || reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.orderToIssued, m.propagation, m.caErrors, m.byState} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

func (m *Metrics) issued(issuerID string, d time.Duration) {
	if m != nil {
		m.orderToIssued.WithLabelValues(issuerID).Observe(d.Seconds())
	}
}

func (m *Metrics) propagated(d time.Duration) {
	if m != nil {
		m.propagation.Observe(d.Seconds())
	}
}

func (m *Metrics) caError(problemType string) {
	if m != nil && problemType != "" {
		m.caErrors.WithLabelValues(strings.TrimPrefix(problemType, "urn:ietf:params:acme:error:")).Inc()
	}
}

type stateCollector struct {
	store storage.Store
	desc  *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.store.Workflows().CountByState(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, s := range []string{storage.StatePending, storage.StateOrdering, storage.StateAuthorizing, storage.StateFinalizing,
		storage.StateDownloading, storage.StateIssued, storage.StateAuthorized, storage.StateFailed, storage.StateCancelled, storage.StateRetryScheduled} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[s]), s)
	}
}
