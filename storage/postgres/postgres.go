// Package postgres is CertLocker's multi-node storage backend. Several nodes
// share one database: migrations run under an advisory lock, and workflow
// leases are taken with FOR UPDATE SKIP LOCKED, so a node that dies
// mid-order is taken over once its lease expires.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlstore"
)

// Open connects to the database named by dsn (a postgres:// URL or
// key=value string; search_path selects a schema), migrates it and returns
// the Store. Errors never contain the DSN, which may hold a password.
func Open(ctx context.Context, dsn string, sealer *storage.Sealer, maxConns int) (storage.Store, error) {
	if dsn == "" {
		return nil, errors.New("opening postgres store: empty DSN")
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening postgres store: invalid DSN (redacted): %v", redact(err))
	}
	if maxConns <= 0 {
		maxConns = 10
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening postgres store: connecting: %v", redact(err))
	}
	st, err := sqlstore.Open(ctx, db, Dialect, sealer)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	return st, nil
}

// redact keeps the server's reason and drops anything echoing the DSN.
func redact(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Severity + ": " + pe.Message + " (SQLSTATE " + pe.Code + ")"
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return "cannot reach the server: " + errors.Unwrap(ce).Error()
	}
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		return "cannot parse the DSN"
	}
	return err.Error()
}

// Dialect is PostgreSQL's sqlstore dialect.
var Dialect = sqlstore.Dialect{
	Name:               "postgres",
	DollarPlaceholders: true,
	BlobType:           "BYTEA",
	SkipLocked:         "FOR UPDATE SKIP LOCKED",
	RowLock:            "FOR UPDATE",
	LockMigrations: func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtext('certlocker migrations ' || current_schema()))")
		return err
	},
	IsUnique:     func(err error) bool { return sqlState(err) == "23505" },
	IsForeignKey: func(err error) bool { return sqlState(err) == "23503" },
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
