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

// Rekey implements storage.Store.
func (s *Store) Rekey(ctx context.Context) (int, error) {
	total := 0
	current := s.db.sealer.CurrentKeyID()
	stale := func(b []byte) bool {
		id, err := storage.SealedKeyID(b)
		return err == nil && id != current
	}
	for _, c := range secretColumns {
		last := ""
		for {
			rows, err := s.query(ctx, "SELECT id, "+c.column+" FROM "+c.table+" WHERE id > ? AND "+c.column+" IS NOT NULL ORDER BY id LIMIT 500", last)
			if err != nil {
				return total, fmt.Errorf("rekeying %s.%s: %w", c.table, c.column, err)
			}
			type row struct {
				id string
				b  []byte
			}
			var batch []row
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.id, &r.b); err != nil {
					rows.Close()
					return total, fmt.Errorf("rekeying %s.%s: %w", c.table, c.column, err)
				}
				batch = append(batch, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return total, fmt.Errorf("rekeying %s.%s: %w", c.table, c.column, err)
			}
			if len(batch) == 0 {
				break
			}
			last = batch[len(batch)-1].id
			for _, r := range batch {
				if !stale(r.b) {
					continue
				}
				ad := secretAD(c.table, c.column, r.id)
				n, err := s.reseal(ctx, "UPDATE "+c.table+" SET "+c.column+" = ? WHERE id = ? AND "+c.column+" = ?", r.b, ad, r.id)
				if err != nil {
					return total, fmt.Errorf("rekeying %s: %w", ad, err)
				}
				total += n
			}
		}
	}
	// the gateway's state, keyed by bucket and key
	rows, err := s.query(ctx, "SELECT bucket, k, value FROM acme_state")
	if err != nil {
		return total, fmt.Errorf("rekeying acme_state: %w", err)
	}
	type kv struct {
		bucket, key string
		b           []byte
	}
	var kvs []kv
	for rows.Next() {
		var r kv
		if err := rows.Scan(&r.bucket, &r.key, &r.b); err != nil {
			rows.Close()
			return total, fmt.Errorf("rekeying acme_state: %w", err)
		}
		if stale(r.b) {
			kvs = append(kvs, r)
		}
	}
	rows.Close()
	for _, r := range kvs {
		n, err := s.reseal(ctx, "UPDATE acme_state SET value = ? WHERE bucket = ? AND k = ? AND value = ?", r.b, acmeAD(r.bucket, r.key), r.bucket, r.key)
		if err != nil {
			return total, fmt.Errorf("rekeying acme_state: %w", err)
		}
		total += n
	}
	// the canary last: once it is under the new key, the old key is no
	// longer needed to start.
	var canary []byte
	if err := s.queryRow(ctx, "SELECT value FROM meta WHERE key = ?", canaryKey).Scan(&canary); err == nil && stale(canary) {
		if _, err := s.reseal(ctx, "UPDATE meta SET value = ? WHERE key = ? AND value = ?", canary, canaryAD, canaryKey); err != nil {
			return total, fmt.Errorf("rekeying the canary: %w", err)
		}
	}
	return total, nil
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
