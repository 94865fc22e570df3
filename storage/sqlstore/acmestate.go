package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/certlocker/caddy-certlocker/storage"
)

type acmeState struct{ s *Store }

func acmeAD(bucket, key string) string { return "acme_state/" + bucket + "/" + key }

func (x acmeState) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	var b []byte
	err := x.s.queryRow(ctx, "SELECT value FROM acme_state WHERE bucket = ? AND k = ?", bucket, key).Scan(&b)
	if err != nil {
		return nil, x.s.classify(err, "getting "+bucket+"/"+key)
	}
	return x.openValue(bucket, key, b)
}

func (x acmeState) Set(ctx context.Context, bucket, key string, value []byte) error {
	b, err := x.sealValue(bucket, key, value)
	if err != nil {
		return err
	}
	_, err = x.s.exec(ctx, `INSERT INTO acme_state (bucket, k, value) VALUES (?, ?, ?)
		ON CONFLICT (bucket, k) DO UPDATE SET value = excluded.value`, bucket, key, b)
	return x.s.classify(err, "setting "+bucket+"/"+key)
}

// sealValue seals value; an empty value is stored sealed as well, so that
// "exists but empty" survives.
func (x acmeState) sealValue(bucket, key string, value []byte) ([]byte, error) {
	if value == nil {
		value = []byte{}
	}
	// Seal returns nil for empty input; keep a marker so the row exists.
	b, err := x.s.db.sealer.Seal(append([]byte{0}, value...), acmeAD(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("sealing %s/%s: %w", bucket, key, err)
	}
	return b, nil
}

func (x acmeState) openValue(bucket, key string, b []byte) ([]byte, error) {
	pt, err := x.s.db.sealer.Open(b, acmeAD(bucket, key))
	if err != nil {
		return nil, err
	}
	if len(pt) == 0 {
		return nil, fmt.Errorf("opening %s/%s: empty value", bucket, key)
	}
	return pt[1:], nil
}

func (x acmeState) Delete(ctx context.Context, bucket, key string) error {
	_, err := x.s.exec(ctx, "DELETE FROM acme_state WHERE bucket = ? AND k = ?", bucket, key)
	return x.s.classify(err, "deleting "+bucket+"/"+key)
}

func (x acmeState) Take(ctx context.Context, bucket, key string) (bool, error) {
	res, err := x.s.exec(ctx, "DELETE FROM acme_state WHERE bucket = ? AND k = ?", bucket, key)
	if err != nil {
		return false, x.s.classify(err, "taking "+bucket+"/"+key)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("taking %s/%s: %w", bucket, key, err)
	}
	return n == 1, nil
}

func (x acmeState) Add(ctx context.Context, bucket, key string, value []byte) (bool, error) {
	b, err := x.sealValue(bucket, key, value)
	if err != nil {
		return false, err
	}
	res, err := x.s.exec(ctx, "INSERT INTO acme_state (bucket, k, value) VALUES (?, ?, ?) ON CONFLICT (bucket, k) DO NOTHING",
		bucket, key, b)
	if err != nil {
		return false, x.s.classify(err, "adding "+bucket+"/"+key)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("adding %s/%s: %w", bucket, key, err)
	}
	return n == 1, nil
}

func (x acmeState) DeleteBelow(ctx context.Context, bucket, below string) (int, error) {
	res, err := x.s.exec(ctx, "DELETE FROM acme_state WHERE bucket = ? AND k < ?", bucket, below)
	if err != nil {
		return 0, x.s.classify(err, "expiring "+bucket)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

func (x acmeState) DeleteBucket(ctx context.Context, bucket string) error {
	_, err := x.s.exec(ctx, "DELETE FROM acme_state WHERE bucket = ?", bucket)
	return x.s.classify(err, "deleting bucket "+bucket)
}

func (x acmeState) List(ctx context.Context, bucket string) ([]storage.KV, error) {
	rows, err := x.s.query(ctx, "SELECT k, value FROM acme_state WHERE bucket = ? ORDER BY k", bucket)
	if err != nil {
		return nil, x.s.classify(err, "listing bucket "+bucket)
	}
	defer rows.Close()
	var out []storage.KV
	for rows.Next() {
		var kv storage.KV
		var b []byte
		if err := rows.Scan(&kv.Key, &b); err != nil {
			return nil, x.s.classify(err, "listing bucket "+bucket)
		}
		if kv.Value, err = x.openValue(bucket, kv.Key, b); err != nil {
			return nil, err
		}
		out = append(out, kv)
	}
	return out, x.s.classify(rows.Err(), "listing bucket "+bucket)
}

func (x acmeState) CompareAndSwap(ctx context.Context, bucket, key string, oldValue, newValue []byte) ([]byte, bool, error) {
	var found []byte
	var swapped bool
	err := x.s.inTx(ctx, func(tx *Store) error {
		if oldValue == nil {
			// creating: an insert that does nothing on a conflict is
			// exclusive where locking a row that is not there yet is not
			// (PostgreSQL's FOR UPDATE locks no absent row)
			added, err := (acmeState{tx}).Add(ctx, bucket, key, newValue)
			if err != nil || added {
				found, swapped = newValue, added
				return err
			}
		}
		var b []byte
		err := tx.queryRow(ctx, "SELECT value FROM acme_state WHERE bucket = ? AND k = ? "+tx.db.dialect.RowLock, bucket, key).Scan(&b)
		exists := true
		if errors.Is(err, sql.ErrNoRows) {
			exists = false
		} else if err != nil {
			return tx.classify(err, "comparing "+bucket+"/"+key)
		}
		if exists {
			if found, err = (acmeState{tx}).openValue(bucket, key, b); err != nil {
				return err
			}
		}
		if exists != (oldValue != nil) || (exists && !bytes.Equal(found, oldValue)) {
			return nil
		}
		if err := (acmeState{tx}).Set(ctx, bucket, key, newValue); err != nil {
			return err
		}
		found, swapped = newValue, true
		return nil
	})
	return found, swapped, err
}
