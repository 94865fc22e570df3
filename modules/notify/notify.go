// Package notify delivers CertLocker events (workflow state changes,
// issued certificates, failures) to subscribers outside the process.
// Notifiers are Caddy modules in the certlocker.notifiers namespace; the
// first is certlocker.notifiers.webhook.
package notify

import (
	"context"
	"time"
)

// Event is one CertLocker event.
type Event struct {
	// Name is e.g. "certlocker.workflow_state", "certlocker.cert_issued",
	// "certlocker.workflow_failed".
	Name string         `json:"event"`
	Time time.Time      `json:"time"`
	Node string         `json:"node"`
	Data map[string]any `json:"data"`
}

// Notifier delivers events. Notify must not block the caller for long:
// implementations queue and deliver in the background, and MUST honour
// context cancellation in Close.
type Notifier interface {
	// Wants reports whether the notifier subscribes to the event name.
	Wants(name string) bool
	// Notify queues the event for delivery.
	Notify(ev Event)
}

// Closer is implemented by notifiers that flush on shutdown.
type Closer interface {
	Close(ctx context.Context) error
}
