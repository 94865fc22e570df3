// Package pgtest gives each test its own schema in the local PostgreSQL
// server, dropped when the test ends.
//
// The server is CERTLOCKER_TEST_POSTGRES (default
// postgres://postgres@127.0.0.1:5432/test). When it cannot be reached the
// test is skipped on a developer machine and fails when CI=true.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
)

// DefaultDSN is used when CERTLOCKER_TEST_POSTGRES is unset.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/test"

// ServerDSN returns the DSN of the test server.
func ServerDSN() string {
	if v := os.Getenv("CERTLOCKER_TEST_POSTGRES"); v != "" {
		return v
	}
	return DefaultDSN
}

// DSN creates a fresh schema and returns a DSN whose search_path is that
// schema. The schema is dropped with everything in it at cleanup.
func DSN(t testing.TB) string {
	t.Helper()
	base := ServerDSN()
	db, err := sql.Open("pgx", base)
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		unavailable(t, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "certlocker_test_" + hex.EncodeToString(b[:])
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return WithSearchPath(base, schema)
}

// WithSearchPath returns dsn with its search_path set to schema.
func WithSearchPath(dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return dsn + " search_path=" + schema
}

func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL at %s is required in CI (set CERTLOCKER_TEST_POSTGRES): %v", ServerDSN(), err)
	}
	t.Skipf("PostgreSQL not reachable at %s (set CERTLOCKER_TEST_POSTGRES; CI=true makes this a failure): %v", ServerDSN(), err)
}
