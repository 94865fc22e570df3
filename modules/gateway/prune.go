package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Prune removes gateway records nobody needs any more: pull records (CSR →
// workflow, for a retried finalize) older than PullRetention, a
// replacement's, profile's or processing order's record once that order
// has expired, and a replaced certificate's record once that certificate
// has expired (it can no longer be replaced twice). It returns how many it removed.
func (g *Gateway) Prune(ctx context.Context) (int, error) {
	now := g.clock()
	removed := 0
	var errs []error
	del := func(bucket, key string) {
		if err := g.store.ACME().Delete(ctx, bucket, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
			errs = append(errs, err)
			return
		}
		removed++
	}
	kvs, err := g.store.ACME().List(ctx, pullsBucket)
	if err != nil {
		return 0, fmt.Errorf("pruning pull records: %w", err)
	}
	for _, kv := range kvs {
		var rec pullRecord
		if json.Unmarshal(kv.Value, &rec) != nil || now.Sub(rec.Created) > g.opts.PullRetention {
			del(pullsBucket, kv.Key)
		}
	}
	for _, bucket := range []string{replacesBucket, profilesBucket, processingBucket} {
		if kvs, err = g.store.ACME().List(ctx, bucket); err != nil {
			return removed, fmt.Errorf("pruning order records: %w", err)
		}
		for _, kv := range kvs {
			o, err := g.db.GetOrder(ctx, kv.Key)
			if err != nil || (!o.ExpiresAt.IsZero() && now.After(o.ExpiresAt)) {
				del(bucket, kv.Key)
			}
		}
	}
	if kvs, err = g.store.ACME().List(ctx, replacedBucket); err != nil {
		return removed, fmt.Errorf("pruning replaced records: %w", err)
	}
	for _, kv := range kvs {
		if c, ok := g.certByARIID(ctx, kv.Key); !ok || now.After(c.Leaf.NotAfter) {
			del(replacedBucket, kv.Key)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("pruning gateway records: %w", err)
	}
	return removed, nil
}

// pruneEvery bounds how often KeepWarm also prunes.
const pruneEvery = time.Hour
