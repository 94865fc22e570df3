package workflow

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// SetAfterPersist installs the crash-test hook.
func (o *Options) SetAfterPersist(fn func(w *storage.Workflow, ev *storage.WorkflowEvent) error) {
	o.afterPersist = fn
}

// SetAfterClaim installs the crash-test hook of successor claims.
func (o *Options) SetAfterClaim(fn func(certID, workflowID string) error) {
	o.afterClaim = fn
}

// ClaimStale is how long a claim without its workflow blocks other nodes.
const ClaimStale = claimStale

// ErrCrash is the hook's "die here" error.
var ErrCrash = errCrash

// DecodeOrders returns how many orders the workflow's data counts.
func DecodeOrders(w *storage.Workflow) int {
	d, _ := decodeData(w.Data)
	return d.Orders
}

type storageIdentifier = storage.Identifier

func splitFields(s string) []string { return strings.Fields(s) }

func newTestStore(t *testing.T) storage.Store {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "c.db"), storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// FinalizeRequested reports whether the workflow's data records that the
// CA accepted its CSR.
func FinalizeRequested(w *storage.Workflow) bool {
	d, _ := decodeData(w.Data)
	return d.FinalizeRequested
}
