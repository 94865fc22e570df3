package storagetest

import (
	"path/filepath"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
)

// Backends names the backends OpenStore knows, in the order benchmarks
// report them.
var Backends = []string{"sqlite", "postgres"}

// OpenStore opens a fresh store of the named backend (a SQLite file in a
// temporary directory, or a PostgreSQL schema of its own) with a fresh
// key, closed at cleanup.
func OpenStore(tb testing.TB, backend string, maxConns int) storage.Store {
	tb.Helper()
	var (
		st  storage.Store
		err error
	)
	switch backend {
	case "sqlite":
		st, err = sqlite.Open(tb.Context(), filepath.Join(tb.TempDir(), "certlocker.db"), NewSealer(tb))
	case "postgres":
		st, err = postgres.Open(tb.Context(), pgtest.DSN(tb), NewSealer(tb), maxConns)
	default:
		tb.Fatalf("unknown backend %q", backend)
	}
	if err != nil {
		tb.Fatalf("opening %s store: %v", backend, err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}
