package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/smallstep/nosql/database"

	"github.com/certlocker/caddy-certlocker/storage"
)

// stateDB is smallstep's nosql.DB on CertLocker's ACMEStateStore: the
// gateway's accounts, orders, authorizations, challenges, certificates and
// nonces live in the one database every node shares, sealed at rest.
// Buckets need no creation; an Update runs in one store transaction.
type stateDB struct {
	st storage.Store
}

func (d stateDB) ctx() context.Context { return context.Background() }

func notFound(err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %v", database.ErrNotFound, err)
	}
	return err
}

func (stateDB) Open(string, ...database.Option) error { return nil }
func (stateDB) Close() error                          { return nil }
func (stateDB) CreateTable([]byte) error              { return nil }

func (d stateDB) DeleteTable(bucket []byte) error {
	return d.st.ACME().DeleteBucket(d.ctx(), string(bucket))
}

func (d stateDB) Get(bucket, key []byte) ([]byte, error) {
	v, err := d.st.ACME().Get(d.ctx(), string(bucket), string(key))
	return v, notFound(err)
}

func (d stateDB) Set(bucket, key, value []byte) error {
	return d.st.ACME().Set(d.ctx(), string(bucket), string(key), value)
}

func (d stateDB) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	return d.st.ACME().CompareAndSwap(d.ctx(), string(bucket), string(key), oldValue, newValue)
}

func (d stateDB) Del(bucket, key []byte) error {
	return d.st.ACME().Delete(d.ctx(), string(bucket), string(key))
}

func (d stateDB) List(bucket []byte) ([]*database.Entry, error) {
	kvs, err := d.st.ACME().List(d.ctx(), string(bucket))
	if err != nil {
		return nil, err
	}
	out := make([]*database.Entry, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, &database.Entry{Bucket: bucket, Key: []byte(kv.Key), Value: kv.Value})
	}
	return out, nil
}

// Update runs the operations in one transaction; a failed one (a Get of a
// missing key, a failed comparison) rolls back all.
func (d stateDB) Update(tx *database.Tx) error {
	ctx := d.ctx()
	return d.st.InTx(ctx, func(s storage.Store) error {
		a := s.ACME()
		for _, op := range tx.Operations {
			b, k := string(op.Bucket), string(op.Key)
			switch op.Cmd {
			case database.CreateTable:
			case database.DeleteTable:
				if err := a.DeleteBucket(ctx, b); err != nil {
					return err
				}
			case database.Get:
				v, err := a.Get(ctx, b, k)
				if err != nil {
					return notFound(err)
				}
				op.Result = v
			case database.Set:
				if err := a.Set(ctx, b, k, op.Value); err != nil {
					return err
				}
				op.Result = op.Value
			case database.Delete:
				if err := a.Delete(ctx, b, k); err != nil {
					return err
				}
			case database.CmpAndSwap:
				v, swapped, err := a.CompareAndSwap(ctx, b, k, op.CmpValue, op.Value)
				if err != nil {
					return err
				}
				op.Result, op.Swapped = v, swapped
			case database.CmpOrRollback:
				v, err := a.Get(ctx, b, k)
				if err != nil && !errors.Is(err, storage.ErrNotFound) {
					return err
				}
				if !bytes.Equal(v, op.CmpValue) {
					return fmt.Errorf("comparing %s/%s: value changed", b, k)
				}
			default:
				return fmt.Errorf("operation %s is not supported", op.Cmd)
			}
		}
		return nil
	})
}

var _ database.DB = stateDB{}
