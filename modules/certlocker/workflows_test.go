package certlocker

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// enginesFor lists the pooled workflow engines of a node.
func enginesFor(node string) []pooledEngine {
	var out []pooledEngine
	engines.Range(func(k, v any) bool {
		if strings.Contains(k.(string), "\x00"+node+"\x00") || strings.HasSuffix(k.(string), "\x00"+node) {
			out = append(out, v.(pooledEngine))
		}
		return true
	})
	return out
}

// A reload that changes the engine's settings applies them to the running
// engine: at no point do two engines scan under one node ID, and a reload
// that fails to start gives the running config its settings back.
func TestReloadReconfiguresTheEngine(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvEncryptionKey, "")
	cfg := func(concurrency int) string {
		return `{"storage":{"path":"` + filepath.Join(dir, "c.db") + `"},"node_id":"n-reconf",` +
			`"workflow":{"concurrency":` + strconv.Itoa(concurrency) + `,"per_issuer_concurrency":1,"renewal_interval":"-1s"}}`
	}
	old := provision(t, cfg(2))
	defer old.Cleanup()
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	defer old.Stop()
	eng := old.Workflows()
	if got := eng.Settings().Concurrency; got != 2 {
		t.Fatalf("concurrency %d, want 2", got)
	}

	next := provision(t, cfg(5))
	if n := len(enginesFor("n-reconf")); n != 1 {
		t.Fatalf("%d engines under the node after provisioning the new config, want 1", n)
	}
	if next.Workflows() != eng {
		t.Fatal("the new config made a second engine")
	}
	// provisioning alone (validate, adapt) changes nothing that runs
	if got := eng.Settings().Concurrency; got != 2 {
		t.Fatalf("provisioning the new config changed the running engine's concurrency to %d", got)
	}
	if err := next.Start(); err != nil {
		t.Fatal(err)
	}
	if got := eng.Settings(); got.Concurrency != 5 || got.PerIssuerConcurrency != 1 {
		t.Fatalf("after the reload: concurrency %d per issuer %d, want 5 and 1", got.Concurrency, got.PerIssuerConcurrency)
	}
	// the new config fails to start: the running config's settings return
	next.Stop()
	next.Cleanup()
	if got := eng.Settings().Concurrency; got != 2 {
		t.Fatalf("after a failed reload the engine runs with concurrency %d, want the running config's 2", got)
	}
	if n := len(enginesFor("n-reconf")); n != 1 {
		t.Fatalf("%d engines under the node after the failed reload, want 1", n)
	}

	// a good reload, then the old config goes: the engine keeps running
	good := provision(t, cfg(7))
	defer good.Cleanup()
	if err := good.Start(); err != nil {
		t.Fatal(err)
	}
	defer good.Stop()
	old.Stop()
	old.Cleanup()
	if n := len(enginesFor("n-reconf")); n != 1 || good.Workflows() != eng || eng.Settings().Concurrency != 7 {
		t.Fatalf("after the reload: %d engines, same engine %v, concurrency %d", n, good.Workflows() == eng, eng.Settings().Concurrency)
	}
	// and still scans: a workflow for an ACME client whose CA does not
	// answer is picked up and scheduled for a retry
	iss := &storage.Issuer{Name: "unreachable", DirectoryURL: "https://127.0.0.1:1/directory"}
	if err := good.Store().Issuers().Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: iss.ID, Identifiers: []storage.Identifier{{Value: "a.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := good.Store().Workflows().Get(t.Context(), w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != storage.StatePending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the engine stopped scanning when the old config went away")
		}
		time.Sleep(10 * time.Millisecond) // polling the store with a deadline
	}
}
