package postgres_test

import (
	"context"
	"database/sql"
	"net/url"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// Backend is the PostgreSQL backend for the conformance suite: a fresh
// schema per database; its raw form is every row of every table as text.
func Backend() storagetest.Backend {
	return storagetest.Backend{Name: "postgres", NewDB: func(t *testing.T) storagetest.DB {
		dsn := pgtest.DSN(t)
		return storagetest.DB{
			Open: func(ctx context.Context, s *storage.Sealer) (storage.Store, error) {
				return postgres.Open(ctx, dsn, s, 8)
			},
			Raw: func(t *testing.T) []byte { return dump(t, dsn) },
		}
	}}
}

func dump(t *testing.T, dsn string) []byte {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) < 5 {
		t.Fatalf("only %d tables in the schema", len(tables))
	}
	var out strings.Builder
	for _, table := range tables {
		r, err := db.QueryContext(t.Context(), "SELECT t::text FROM "+table+" t")
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var s string
			if err := r.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out.WriteString(s)
			out.WriteByte('\n')
		}
		r.Close()
	}
	return []byte(out.String())
}

func TestConformance(t *testing.T) { storagetest.Run(t, Backend()) }

// Open's errors give the reason, never the DSN (which may hold a
// password); each case fails for its own reason: the wrong database is
// asked of the real test server, which must answer that it does not exist.
func TestOpenErrorsHideTheDSN(t *testing.T) {
	pgtest.DSN(t) // skips (or fails in CI) when the server is not there
	server, err := url.Parse(pgtest.ServerDSN())
	if err != nil || server.Host == "" {
		t.Skipf("CERTLOCKER_TEST_POSTGRES is not a postgres:// URL: cannot derive a DSN naming another database")
	}
	wrongDB := *server
	wrongDB.User = url.UserPassword(server.User.Username(), "hunter2-secret") // trust auth ignores it
	wrongDB.Path = "/certlocker_no_such_db"
	cases := map[string]struct {
		dsn, reason string
	}{
		"unreachable":    {"postgres://certlocker:hunter2-secret@127.0.0.1:1/x?connect_timeout=2", "cannot reach the server"},
		"unparseable":    {"postgres://certlocker:hunter2-secret@[::1/x", "cannot parse the DSN"},
		"wrong database": {wrongDB.String(), `database "certlocker_no_such_db" does not exist (SQLSTATE 3D000)`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			st, err := postgres.Open(t.Context(), c.dsn, storagetest.NewSealer(t), 1)
			if err == nil {
				st.Close()
				t.Fatal("opened")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error leaks the DSN: %v", err)
			}
			if !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("error %q does not give the reason %q", err, c.reason)
			}
		})
	}
}
