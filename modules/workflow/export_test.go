package workflow

import (
	"strings"

	"github.com/certlocker/caddy-certlocker/storage"
)

// SetAfterPersist installs the crash-test hook.
func (o *Options) SetAfterPersist(fn func(w *storage.Workflow, ev *storage.WorkflowEvent) error) {
	o.afterPersist = fn
}

// ErrCrash is the hook's "die here" error.
var ErrCrash = errCrash

// DecodeOrders returns how many orders the workflow's data counts.
func DecodeOrders(w *storage.Workflow) int {
	d, _ := decodeData(w.Data)
	return d.Orders
}

type storageIdentifier = storage.Identifier

func splitFields(s string) []string { return strings.Fields(s) }
