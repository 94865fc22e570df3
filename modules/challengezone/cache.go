package challengezone

import (
	"slices"
	"sync"
	"time"
)

// cache keeps storage lookups for a short time, bounded in entries: when
// full, expired entries are dropped, and if none has expired, all are.
// Negative lookups (no value) are kept for a fifth of the time only: a CA
// or a resolver that asks before the record is published would otherwise
// hold up the first answer for the whole TTL.
type cache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	values  []string
	expires time.Time
}

func newCache(ttl time.Duration, maxEntries int) *cache {
	return &cache{ttl: ttl, max: maxEntries, entries: make(map[string]cacheEntry)}
}

func (c *cache) get(key string, now time.Time) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.values, true
}

func (c *cache) put(key string, values []string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.max {
			clear(c.entries)
		}
	}
	ttl := c.ttl
	if len(values) == 0 {
		ttl /= 5
	}
	c.entries[key] = cacheEntry{values: slices.Clone(values), expires: now.Add(ttl)}
}

func (c *cache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
