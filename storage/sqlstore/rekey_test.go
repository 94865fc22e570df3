package sqlstore_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"

	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	sqlitestore "github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/sqlstore"
)

// A read that fails part-way through a table during Rekey (the server goes
// away, a page is corrupt) is an error, and the canary keeps naming the
// previous key, so an operator who drops that key on success loses nothing.
// The failure is injected in the real driver's row iteration, on both
// backends, for every table Rekey reads.
func TestRekeyReadFailureKeepsCanary(t *testing.T) {
	backends := map[string]func(t *testing.T) (faulty func(*faults) *sql.DB, dialect sqlstore.Dialect, reopen func(*storage.Sealer) (storage.Store, error)){
		"sqlite": func(t *testing.T) (func(*faults) *sql.DB, sqlstore.Dialect, func(*storage.Sealer) (storage.Store, error)) {
			path := filepath.Join(t.TempDir(), "certlocker.db")
			dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=busy_timeout(15000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"
			return func(f *faults) *sql.DB { return sql.OpenDB(&faultConnector{drv: &sqlite.Driver{}, dsn: dsn, f: f}) },
				sqlitestore.Dialect,
				func(s *storage.Sealer) (storage.Store, error) { return sqlitestore.Open(t.Context(), path, s) }
		},
		"postgres": func(t *testing.T) (func(*faults) *sql.DB, sqlstore.Dialect, func(*storage.Sealer) (storage.Store, error)) {
			dsn := pgtest.DSN(t)
			return func(f *faults) *sql.DB {
					return sql.OpenDB(&faultConnector{drv: stdlib.GetDefaultDriver(), dsn: dsn, f: f})
				},
				postgres.Dialect,
				func(s *storage.Sealer) (storage.Store, error) { return postgres.Open(t.Context(), dsn, s, 4) }
		},
	}
	// the queries Rekey reads with, one per table
	tables := map[string]string{
		"acme_state":    "FROM acme_state",
		"workflows":     "FROM workflows WHERE id >",
		"certificates":  "FROM certificates WHERE id >",
		"issuers":       "FROM issuers WHERE id >",
		"dns_providers": "FROM dns_providers WHERE id >",
	}
	for backend, prepare := range backends {
		for table, match := range tables {
			t.Run(backend+"/"+table, func(t *testing.T) {
				ctx := t.Context()
				faulty, dialect, reopen := prepare(t)
				oldKey, _ := storage.NewKey()
				newKey, _ := storage.NewKey()
				oldOnly, _ := storage.NewSealer(oldKey)
				st, err := reopen(oldOnly)
				if err != nil {
					t.Fatal(err)
				}
				writeTwoOfEach(t, st)
				_ = st.Close()

				f := &faults{match: match}
				rotating, _ := storage.NewSealer(newKey, oldKey)
				st, err = sqlstore.Open(ctx, faulty(f), dialect, rotating)
				if err != nil {
					t.Fatal(err)
				}
				f.armed.Store(true)
				_, err = st.Rekey(ctx)
				_ = st.Close()
				if err == nil {
					t.Fatalf("rekey succeeded although reading %s failed", table)
				}
				if !strings.Contains(err.Error(), table) || !errors.Is(err, errInjected) {
					t.Fatalf("the error does not name %s or hides the cause: %v", table, err)
				}
				if f.hits.Load() == 0 {
					t.Fatalf("the fault was never hit: no query matched %q", match)
				}
				// the canary still names the previous key: the store opens
				// with it alone
				st, err = reopen(oldOnly)
				if err != nil {
					t.Fatalf("after a failed rekey the previous key no longer opens the store: %v", err)
				}
				_ = st.Close()
			})
		}
	}
}

// writeTwoOfEach stores two values of every secret Rekey reads, so that a
// failure after the first row is a failure mid-table.
func writeTwoOfEach(t *testing.T, st storage.Store) {
	t.Helper()
	ctx := t.Context()
	for _, n := range []string{"a", "b"} {
		iss := &storage.Issuer{Name: "iss-" + n, DirectoryURL: "https://ca/dir", AccountKey: storage.NewSecret([]byte("account key " + n))}
		if err := st.Issuers().Create(ctx, iss); err != nil {
			t.Fatal(err)
		}
		if err := st.DNSProviders().Create(ctx, &storage.DNSProvider{Name: "dns-" + n, Type: "cloudflare",
			Credentials: storage.NewSecret([]byte(`{"api_token":"t"}`))}); err != nil {
			t.Fatal(err)
		}
		if err := st.Workflows().Create(ctx, &storage.Workflow{IssuerID: iss.ID, PrivateKey: storage.NewSecret([]byte("key " + n)),
			Identifiers: []storage.Identifier{{Type: "dns", Value: n + ".example"}}}); err != nil {
			t.Fatal(err)
		}
		if err := st.Certificates().Put(ctx, &storage.Certificate{Fingerprint: "fp-" + n, Names: []string{n + ".example"},
			PrivateKey: storage.NewSecret([]byte("cert key " + n))}); err != nil {
			t.Fatal(err)
		}
		if err := st.ACME().Set(ctx, "acme_accounts", n, []byte("state "+n)); err != nil {
			t.Fatal(err)
		}
	}
}

var errInjected = errors.New("injected read failure")

// faults makes the rows of queries containing match fail after their first
// row, once armed.
type faults struct {
	match string
	armed atomic.Bool
	hits  atomic.Int32
}

type faultConnector struct {
	drv driver.Driver
	dsn string
	f   *faults
}

func (c *faultConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &faultConn{Conn: conn, f: c.f}, nil
}

func (c *faultConnector) Driver() driver.Driver { return c.drv }

// faultConn forwards to the real connection; database/sql falls back to
// Prepare for what it does not implement.
type faultConn struct {
	driver.Conn
	f *faults
}

func (c *faultConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &faultStmt{Stmt: st, query: query, f: c.f}, nil
}

func (c *faultConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *faultConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	rows, err := q.QueryContext(ctx, query, args)
	return c.f.wrap(query, rows), err
}

func (c *faultConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	return e.ExecContext(ctx, query, args)
}

func (c *faultConn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.Conn.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

func (c *faultConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

type faultStmt struct {
	driver.Stmt
	query string
	f     *faults
}

func (s *faultStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	rows, err := s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	return s.f.wrap(s.query, rows), err
}

func (s *faultStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *faultStmt) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := s.Stmt.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

func (f *faults) wrap(query string, rows driver.Rows) driver.Rows {
	if rows == nil || !f.armed.Load() || !strings.Contains(query, f.match) {
		return rows
	}
	return &faultRows{Rows: rows, f: f}
}

type faultRows struct {
	driver.Rows
	f *faults
	n int
}

func (r *faultRows) Next(dest []driver.Value) error {
	if r.n == 1 {
		r.f.hits.Add(1)
		return errInjected
	}
	if err := r.Rows.Next(dest); err != nil {
		return err
	}
	r.n++
	return nil
}
