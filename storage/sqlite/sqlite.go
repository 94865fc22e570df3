// Package sqlite is CertLocker's embedded storage backend: one SQLite file
// (pure Go driver, no cgo) in WAL mode. Every write returns only once its
// commit is on disk (it survives a power loss), by group commit: SQLite
// runs with synchronous=NORMAL and the store fsyncs the write-ahead log
// after each commit, one fsync for all the commits made meanwhile (see
// walSync). Writers of one Store take turns in the Store, in arrival
// order. It suits one node; use storage/postgres to run several nodes on
// one database.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/certlocker/caddy-certlocker/internal/retry"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlstore"
)

// Open opens (creating if needed) the SQLite database at path, migrates it
// and returns the Store. The file and its WAL are readable by the owner only.
func Open(ctx context.Context, path string, sealer *storage.Sealer) (storage.Store, error) {
	return openWith(ctx, path, sealer, busyTimeout, busyTimeout*time.Millisecond, newWALSync(path))
}

// busyTimeout is how long SQLite waits for another process's write lock
// (in milliseconds). Writers of one Store wait for each other in the
// Store, in arrival order (Dialect.SerialWrites).
const busyTimeout = 15000

// openWith is Open with SQLite's busy timeout (ms, for other processes),
// the wait of one Store's writers for their turn, and the log's syncer.
func openWith(ctx context.Context, path string, sealer *storage.Sealer, busyMS int, writeWait time.Duration, ws *walSync) (storage.Store, error) {
	if path == "" {
		return nil, errors.New("opening sqlite store: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("opening sqlite store: creating directory: %w", err)
	}
	// create the file ourselves so it is born 0600
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store: %w", err)
	}
	_ = f.Close()
	q := url.Values{}
	// secure_delete: deleted rows are overwritten, not left in free space
	for _, p := range []string{fmt.Sprintf("busy_timeout(%d)", busyMS), "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(1)", "secure_delete(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate") // a transaction takes the write lock at BEGIN: no upgrade deadlocks
	// NORMAL: commits do not wait for the disk inside SQLite; ws syncs
	// the log before each write returns (group commit)
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	// nodes opening a brand-new file together can find it locked while
	// one of them switches it to WAL: a few short retries get past that
	var st storage.Store
	err = retry.Do(ctx, openRetry, func(int) error {
		d := Dialect
		d.WriteWait = writeWait
		d.Committed = ws.committed
		st, err = sqlstore.Open(ctx, db, d, sealer)
		if err != nil && !isBusy(err) {
			return retry.Permanent(err)
		}
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening sqlite store %s: %w", path, err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		_ = os.Chmod(path+suffix, 0o600)
	}
	return st, nil
}

// openRetry retries an open that finds the file locked: 10 attempts, 20 ms
// doubling up to 200 ms, with jitter (nodes starting together spread out).
var openRetry = retry.Policy{Attempts: 10, Base: 20 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 0.5}

// Dialect is SQLite's sqlstore dialect. SQLite has one writer at a time
// (transactions begin IMMEDIATE), which serialises migrations and leases.
var Dialect = sqlstore.Dialect{
	Name:         "sqlite",
	BlobType:     "BLOB",
	SerialWrites: true,
	IsUnique: func(err error) bool {
		return hasCode(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) ||
			strings.Contains(err.Error(), "UNIQUE constraint failed")
	},
	IsForeignKey: func(err error) bool {
		return hasCode(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY) ||
			strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
	},
	// the write-ahead log keeps earlier versions of every page it was
	// given: copy it into the (secure_delete) file and empty it, so a
	// deleted secret is gone from disk, not only from the table
	Scrub: func(ctx context.Context, db *sql.DB) error {
		_, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
		return err
	},
}

// isBusy reports SQLITE_BUSY or SQLITE_LOCKED ("database is locked").
func isBusy(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		primary := se.Code() & 0xff
		return primary == sqlite3.SQLITE_BUSY || primary == sqlite3.SQLITE_LOCKED
	}
	return strings.Contains(err.Error(), "database is locked")
}

func hasCode(err error, codes ...int) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	for _, c := range codes {
		if se.Code() == c {
			return true
		}
	}
	return false
}
