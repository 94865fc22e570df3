package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/certlocker/caddy-certlocker/storage"
)

// secretColumns lists every sealed column keyed by a row id. Each value is
// sealed with the associated data "table.column/id".
var secretColumns = []struct{ table, column string }{
	{"issuers", "eab_mac_key"},
	{"issuers", "account_key"},
	{"issuers", "next_account_key"},
	{"dns_providers", "credentials"},
	{"workflows", "private_key"},
	{"certificates", "private_key"},
	{"tokens", "secret"},
	{"acmedns_registrations", "password"},
	{"tokens", "url_secret"},
	{"tokens", "previous_secret"},
}

func secretAD(table, column, id string) string { return table + "." + column + "/" + id }

func (s *Store) seal(sec storage.Secret, table, column, id string) ([]byte, error) {
	b, err := s.db.sealer.Seal(sec.Reveal(), secretAD(table, column, id))
	if err != nil {
		return nil, fmt.Errorf("sealing %s.%s: %w", table, column, err)
	}
	return b, nil
}

func (s *Store) open(b []byte, table, column, id string) (storage.Secret, error) {
	pt, err := s.db.sealer.Open(b, secretAD(table, column, id))
	if err != nil {
		return storage.Secret{}, err
	}
	return storage.NewSecret(pt), nil
}

// canary is a known value sealed under the current key in the meta table.
// Opening it at start-up tells an operator at once that the configured key
// is not the one the database was sealed with, instead of failing later on
// the first secret.
const (
	canaryKey   = "seal_canary"
	canaryValue = "certlocker seal canary"
	canaryAD    = "meta.value/" + canaryKey
)

func (s *Store) checkCanary(ctx context.Context) error {
	var sealed []byte
	err := s.queryRow(ctx, "SELECT value FROM meta WHERE key = ?", canaryKey).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		b, err := s.db.sealer.Seal([]byte(canaryValue), canaryAD)
		if err != nil {
			return err
		}
		_, err = s.exec(ctx, "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", canaryKey, b)
		if err != nil {
			return fmt.Errorf("writing the encryption canary: %w", err)
		}
		return s.checkCanary(ctx)
	}
	if err != nil {
		return fmt.Errorf("reading the encryption canary: %w", err)
	}
	if _, err := s.db.sealer.Open(sealed, canaryAD); err != nil {
		id, _ := storage.SealedKeyID(sealed)
		return fmt.Errorf("this database's secrets are sealed with encryption key %s, which is not among the configured keys (current %s): configure that key, or list it in previous_encryption_keys and run certlocker rekey: %w",
			id, s.db.sealer.CurrentKeyID(), storage.ErrUnknownKey)
	}
	return nil
}

// Rekey implements storage.Store. It re-seals what it can and reports
// every value it could not (a value sealed with a key that is not
// configured, a corrupted one, a failed read): those keep their key, and
// so does the canary, which is re-sealed only once every secret is under
// the current key. An operator who sees an error keeps the previous key
// configured until a rekey succeeds.
func (s *Store) Rekey(ctx context.Context) (int, error) {
	r := &rekeyer{s: s, current: s.db.sealer.CurrentKeyID()}
	for _, c := range secretColumns {
		r.column(ctx, c.table, c.column)
	}
	r.acmeState(ctx) // the gateway's state, keyed by bucket and key
	if len(r.failed) > 0 {
		return r.total, fmt.Errorf("rekeying: %d secrets not re-sealed, the canary stays under the previous key (keep it configured and run rekey again): %w",
			r.count, errors.Join(r.failed...))
	}
	// the canary last: once it is under the new key, the old key is no
	// longer needed to start.
	var canary []byte
	if err := s.queryRow(ctx, "SELECT value FROM meta WHERE key = ?", canaryKey).Scan(&canary); err != nil {
		return r.total, fmt.Errorf("rekeying the canary: reading it: %w", err)
	}
	if stale, err := r.stale(canary); err != nil || stale {
		if err == nil {
			_, err = s.reseal(ctx, "UPDATE meta SET value = ? WHERE key = ? AND value = ?", canary, canaryAD, canaryKey)
		}
		if err != nil {
			return r.total, fmt.Errorf("rekeying the canary: %w", err)
		}
	}
	return r.total, nil
}

// rekeyer is one Rekey run: what it re-sealed and what it could not.
type rekeyer struct {
	s       *Store
	current string
	total   int
	count   int     // values not re-sealed
	failed  []error // their errors, the first maxRekeyErrors of them
}

// maxRekeyErrors bounds the errors one Rekey reports in full.
const maxRekeyErrors = 10

func (r *rekeyer) fail(err error) {
	r.count++
	if len(r.failed) < maxRekeyErrors {
		r.failed = append(r.failed, err)
	}
}

// stale reports whether b is sealed with another key than the current one;
// a value that is not a sealed value at all is an error.
func (r *rekeyer) stale(b []byte) (bool, error) {
	if len(b) == 0 {
		return false, nil
	}
	id, err := storage.SealedKeyID(b)
	if err != nil {
		return false, err
	}
	return id != r.current, nil
}

// column re-seals one sealed column keyed by id, in batches. A value that
// does not re-seal is reported and skipped; a failed read ends the column
// (reported too).
func (r *rekeyer) column(ctx context.Context, table, column string) {
	type row struct {
		id string
		b  []byte
	}
	last := ""
	for {
		var batch []row
		err := r.s.scanAll(ctx, func(rows *sql.Rows) error {
			var x row
			if err := rows.Scan(&x.id, &x.b); err != nil {
				return err
			}
			batch = append(batch, x)
			return nil
		}, "SELECT id, "+column+" FROM "+table+" WHERE id > ? AND "+column+" IS NOT NULL ORDER BY id LIMIT 500", last)
		if err != nil {
			r.fail(fmt.Errorf("reading %s.%s: %w", table, column, err))
			return
		}
		if len(batch) == 0 {
			return
		}
		last = batch[len(batch)-1].id
		for _, x := range batch {
			ad := secretAD(table, column, x.id)
			stale, err := r.stale(x.b)
			if err == nil && stale {
				var n int
				n, err = r.s.reseal(ctx, "UPDATE "+table+" SET "+column+" = ? WHERE id = ? AND "+column+" = ?", x.b, ad, x.id)
				r.total += n
			}
			if err != nil {
				r.fail(fmt.Errorf("re-sealing %s: %w", ad, err))
			}
		}
	}
}

// acmeState re-seals the gateway's state, keyed by bucket and key.
func (r *rekeyer) acmeState(ctx context.Context) {
	type kv struct {
		bucket, key string
		b           []byte
	}
	var kvs []kv
	err := r.s.scanAll(ctx, func(rows *sql.Rows) error {
		var x kv
		if err := rows.Scan(&x.bucket, &x.key, &x.b); err != nil {
			return err
		}
		kvs = append(kvs, x)
		return nil
	}, "SELECT bucket, k, value FROM acme_state ORDER BY bucket, k")
	if err != nil {
		r.fail(fmt.Errorf("reading acme_state: %w", err))
		return
	}
	for _, x := range kvs {
		ad := acmeAD(x.bucket, x.key)
		stale, err := r.stale(x.b)
		if err == nil && stale {
			var n int
			n, err = r.s.reseal(ctx, "UPDATE acme_state SET value = ? WHERE bucket = ? AND k = ? AND value = ?", x.b, ad, x.bucket, x.key)
			r.total += n
		}
		if err != nil {
			r.fail(fmt.Errorf("re-sealing %s: %w", ad, err))
		}
	}
}

// scanAll runs query and calls each for every row; it returns the first
// error of the query, of each, or of the iteration (rows.Err).
func (s *Store) scanAll(ctx context.Context, each func(*sql.Rows) error, query string, args ...any) error {
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// reseal opens old and writes it sealed under the current key with the
// given UPDATE, whose arguments are (new value, keys..., old value): the
// row changes only if nobody changed it meanwhile.
func (s *Store) reseal(ctx context.Context, update string, old []byte, ad string, keys ...any) (int, error) {
	pt, err := s.db.sealer.Open(old, ad)
	if err != nil {
		return 0, err
	}
	nb, err := s.db.sealer.Seal(pt, ad)
	if err != nil {
		return 0, err
	}
	if bytes.Equal(nb, old) {
		return 0, nil
	}
	args := append([]any{nb}, keys...)
	args = append(args, old)
	res, err := s.exec(ctx, update, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}
