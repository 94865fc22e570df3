// Package sqlstore implements storage.Store once over database/sql for every
// SQL backend. A Dialect carries what differs between engines (placeholders,
// column types, row locking, migration locking, error classification);
// packages storage/sqlite and storage/postgres supply one each.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Dialect describes one SQL engine.
type Dialect struct {
	// Name is the backend name reported by Health ("sqlite", "postgres").
	Name string
	// DollarPlaceholders rewrites "?" placeholders to "$1", "$2", ...
	DollarPlaceholders bool
	// BlobType replaces the word BLOB in migrations.
	BlobType string
	// SkipLocked is appended to the SELECT that picks due workflows, so
	// that concurrent nodes skip rows another node is leasing.
	SkipLocked string
	// RowLock is appended to a SELECT that must lock the rows it reads
	// until the transaction ends ("" where transactions are serialised).
	RowLock string
	// LockMigrations is run first in the migration transaction and must
	// block until no other node is migrating the same database.
	LockMigrations func(ctx context.Context, tx *sql.Tx) error
	// IsUnique reports a unique or primary key violation.
	IsUnique func(error) bool
	// IsForeignKey reports a foreign key violation.
	IsForeignKey func(error) bool
	// SerialWrites: the engine has one writer at a time (SQLite). Writers
	// of one Store then wait for each other here, in arrival order and
	// giving up when their context ends, instead of in the engine's own
	// busy wait (SQLite's sleeps 1, 2, 5, … up to 100 ms between tries
	// and lets later writers overtake: long tails under concurrency).
	SerialWrites bool
	// WriteWait bounds a SerialWrites writer's wait for its turn (as the
	// engine's busy timeout would), so that a write that can never get
	// its turn fails instead of hanging. Default: 15s.
	WriteWait time.Duration
	// Committed, if set, is called after each commit of a SerialWrites
	// writer while it still holds its turn; the function it returns is
	// called once the turn is given up and returns when that commit is
	// durable (SQLite: one fsync of the write-ahead log shared by the
	// writers that committed meanwhile). The write returns only then.
	Committed func() func() error
	// Scrub, if set, is run after a transaction that deleted secrets
	// commits, to remove what the engine keeps of deleted rows outside the
	// live table (SQLite: its write-ahead log). Best effort: an error
	// cannot undo the commit and is ignored.
	Scrub func(ctx context.Context, db *sql.DB) error
}

// DB is the shared state of every Store bound to one database.
type DB struct {
	sql     *sql.DB
	dialect Dialect
	sealer  *storage.Sealer
	rebinds sync.Map // query -> rebound query
	stmts   sync.Map // rebound query -> *sql.Stmt
	// writing is held by the one writer of a SerialWrites engine
	writing chan struct{}
}

// lockWrites waits for the turn to write (SerialWrites engines; others
// return at once) and returns the function that ends it.
func (d *DB) lockWrites(ctx context.Context) (func(), error) {
	if d.writing == nil {
		return func() {}, nil
	}
	select {
	case d.writing <- struct{}{}:
		return func() { <-d.writing }, nil
	default:
	}
	wait := d.dialect.WriteWait
	if wait <= 0 {
		wait = 15 * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case d.writing <- struct{}{}:
		return func() { <-d.writing }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to write: %w", ctx.Err())
	case <-t.C:
		return nil, fmt.Errorf("waiting to write: another writer held the database for %s", wait)
	}
}

// Open migrates the database to the latest schema and checks that the
// sealer holds the key the database's secrets are sealed with. The caller
// keeps ownership of nothing: Close on the returned store closes db.
func Open(ctx context.Context, db *sql.DB, d Dialect, sealer *storage.Sealer) (storage.Store, error) {
	if sealer == nil {
		return nil, errors.New("opening store: no sealer")
	}
	s := &Store{db: &DB{sql: db, dialect: d, sealer: sealer}}
	if d.SerialWrites {
		s.db.writing = make(chan struct{}, 1)
	}
	s.q = db
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if err := s.checkCanary(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Store implements storage.Store. A Store made by InTx is bound to its
// transaction.
type Store struct {
	db *DB
	q  querier
	tx *sql.Tx
	// scrub is set in a transaction that deleted secrets: the dialect's
	// Scrub runs once it commits.
	scrub *bool
}

func (s *Store) Issuers() storage.IssuerStore           { return issuers{s} }
func (s *Store) DNSProviders() storage.DNSProviderStore { return dnsProviders{s} }
func (s *Store) Workflows() storage.WorkflowStore       { return workflows{s} }
func (s *Store) Certificates() storage.CertificateStore { return certificates{s} }
func (s *Store) Tokens() storage.TokenStore             { return tokens{s} }
func (s *Store) Audit() storage.AuditStore              { return audit{s} }
func (s *Store) ACME() storage.ACMEStateStore           { return acmeState{s} }

// SQL returns the underlying database handle, for backend-specific tests
// and tools.
func (s *Store) SQL() *sql.DB { return s.db.sql }

// Close closes the database.
func (s *Store) Close() error {
	if s.tx != nil {
		return errors.New("closing store: called inside a transaction")
	}
	s.db.stmts.Range(func(_, v any) bool {
		_ = v.(*sql.Stmt).Close()
		return true
	})
	return s.db.sql.Close()
}

// InTx implements storage.Store.
func (s *Store) InTx(ctx context.Context, fn func(tx storage.Store) error) (err error) {
	if s.tx != nil {
		return fn(s)
	}
	unlock, err := s.db.lockWrites(ctx)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	// runs last: give the turn up, then wait until the commit is durable
	var durable func() error
	defer func() {
		unlock()
		if durable != nil && err == nil {
			if derr := durable(); derr != nil {
				err = fmt.Errorf("committing transaction: making it durable: %w", derr)
			}
		}
	}()
	tx, err := s.db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	scrub := false
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback()
			return
		}
		if cerr := tx.Commit(); cerr != nil {
			err = fmt.Errorf("committing transaction: %w", cerr)
			return
		}
		if s.db.writing != nil && s.db.dialect.Committed != nil {
			durable = s.db.dialect.Committed()
		}
		if scrub && s.db.dialect.Scrub != nil {
			_ = s.db.dialect.Scrub(context.WithoutCancel(ctx), s.db.sql)
		}
	}()
	return fn(&Store{db: s.db, q: tx, tx: tx, scrub: &scrub})
}

// deletedSecrets is called after a statement deleted secrets: in a
// transaction the dialect's Scrub runs once it commits, outside one at
// once (see Dialect.Scrub).
func (s *Store) deletedSecrets(ctx context.Context) {
	switch {
	case s.scrub != nil:
		*s.scrub = true
	case s.tx == nil && s.db.dialect.Scrub != nil:
		_ = s.db.dialect.Scrub(context.WithoutCancel(ctx), s.db.sql)
	}
}

// inTx is InTx for the package's own multi-statement writes.
func (s *Store) inTx(ctx context.Context, fn func(tx *Store) error) error {
	return s.InTx(ctx, func(tx storage.Store) error { return fn(tx.(*Store)) })
}

// Health implements storage.Store.
func (s *Store) Health(ctx context.Context) (storage.Health, error) {
	h := storage.Health{Backend: s.db.dialect.Name, KeyID: s.db.sealer.CurrentKeyID()}
	v, err := s.schemaVersion(ctx)
	if err != nil {
		return h, fmt.Errorf("reading schema version: %w", err)
	}
	h.SchemaVersion = v
	return h, nil
}

func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s.tx == nil {
		// a statement outside a transaction is one of its own
		unlock, err := s.db.lockWrites(ctx)
		if err != nil {
			return nil, err
		}
		res, err := s.execNow(ctx, query, args...)
		var durable func() error
		if err == nil && s.db.writing != nil && s.db.dialect.Committed != nil {
			durable = s.db.dialect.Committed()
		}
		unlock()
		if durable != nil {
			if derr := durable(); derr != nil {
				return nil, fmt.Errorf("making the write durable: %w", derr)
			}
		}
		return res, err
	}
	return s.execNow(ctx, query, args...)
}

func (s *Store) execNow(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := s.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return s.q.ExecContext(ctx, s.rebind(query), args...)
}

func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := s.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return s.q.QueryContext(ctx, s.rebind(query), args...)
}

func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := s.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.q.QueryRowContext(ctx, s.rebind(query), args...)
}

// stmt returns the query prepared once per database (bound to the
// transaction if s is), or nil to run it unprepared (preparing failed: the
// unprepared run reports the error). Preparing once saves SQLite from
// parsing every statement on every call.
func (s *Store) stmt(ctx context.Context, query string) *sql.Stmt {
	q := s.rebind(query)
	v, ok := s.db.stmts.Load(q)
	if !ok && s.tx != nil && s.db.writing == nil {
		// never take a second connection from the pool while holding one
		// for the transaction: with every connection in a transaction
		// that waits for another, the pool would deadlock. With
		// SerialWrites one transaction at a time holds a connection, so
		// preparing on another is safe (and statements only ever run in
		// transactions are not parsed again every time)
		return nil
	}
	if !ok {
		st, err := s.db.sql.PrepareContext(ctx, q)
		if err != nil {
			return nil
		}
		if v, ok = s.db.stmts.LoadOrStore(q, st); ok {
			_ = st.Close()
		} else {
			v = st
		}
	}
	st := v.(*sql.Stmt)
	if s.tx != nil {
		// closed by database/sql when the transaction ends
		return s.tx.StmtContext(ctx, st)
	}
	return st
}

// rebind rewrites "?" placeholders for engines that number them. Queries
// in this package never contain a literal question mark.
func (s *Store) rebind(query string) string {
	if !s.db.dialect.DollarPlaceholders {
		return query
	}
	if q, ok := s.db.rebinds.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	q := b.String()
	s.db.rebinds.Store(query, q)
	return q
}

// classify maps driver errors to the storage errors.
func (s *Store) classify(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s: %w", what, storage.ErrNotFound)
	case s.db.dialect.IsUnique != nil && s.db.dialect.IsUnique(err):
		return fmt.Errorf("%s: %w", what, storage.ErrDuplicate)
	case s.db.dialect.IsForeignKey != nil && s.db.dialect.IsForeignKey(err):
		return fmt.Errorf("%s: %w", what, storage.ErrInUse)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// expectOne turns "no row changed" into ErrConflict or ErrNotFound.
func (s *Store) expectOne(ctx context.Context, res sql.Result, table, id, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 1 {
		return nil
	}
	var one int
	err = s.queryRow(ctx, "SELECT 1 FROM "+table+" WHERE id = ?", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s %s: %w", what, id, storage.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", what, id, storage.ErrConflict)
}

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s: name must start with a number and an underscore", e.Name())
		}
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// LatestSchemaVersion is the schema version this build migrates to.
func LatestSchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate applies pending migrations in one transaction, under the
// dialect's lock, so nodes starting together apply each migration once.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	tx, err := s.db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrating: beginning transaction: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if s.db.dialect.LockMigrations != nil {
		if err := s.db.dialect.LockMigrations(ctx, tx); err != nil {
			return fmt.Errorf("migrating: taking the migration lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrating: creating schema_migrations: %w", err)
	}
	txs := &Store{db: s.db, q: tx, tx: tx}
	current, err := txs.schemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].version
	}
	if current > latest {
		return fmt.Errorf("migrating: the database has schema version %d, newer than this build's %d: upgrade CertLocker", current, latest)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		body := m.sql
		if s.db.dialect.BlobType != "" {
			body = strings.ReplaceAll(body, "BLOB", s.db.dialect.BlobType)
		}
		for _, stmt := range splitStatements(body, s.db.dialect.Name) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrating to version %d (%s): %w", m.version, m.name, err)
			}
		}
		if _, err := txs.exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.version, m.name, nowNanos()); err != nil {
			return fmt.Errorf("migrating to version %d: recording it: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrating: committing: %w", err)
	}
	return nil
}

func (s *Store) schemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := s.queryRow(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, err
	}
	return int(v.Int64), nil
}

// splitStatements splits a migration on semicolons that end a line,
// dropping comment-only lines. A statement right after the comment line
// "-- only <dialect>" is kept only for that dialect (triggers, whose
// syntax differs between engines); a statement must then fit on one line
// or end each inner line without a semicolon.
func splitStatements(body, dialect string) []string {
	var out []string
	var cur strings.Builder
	only := ""
	for _, line := range strings.Split(body, "\n") {
		t := strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(t, "-- only "); ok && cur.Len() == 0 {
			only = strings.TrimSpace(name)
			continue
		}
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			if only == "" || only == dialect {
				out = append(out, strings.TrimSpace(cur.String()))
			}
			cur.Reset()
			only = ""
		}
	}
	if strings.TrimSpace(cur.String()) != "" && (only == "" || only == dialect) {
		out = append(out, strings.TrimSpace(cur.String()))
	}
	return out
}
