package storagetest

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
)

func testACMEState(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	a := st.ACME()
	_, err := a.Get(ctx, "acme_accounts", "missing")
	wantErr(t, err, storage.ErrNotFound)
	must(t, a.Set(ctx, "acme_accounts", "acc1", []byte(`{"id":"acc1"}`)))
	must(t, a.Set(ctx, "acme_accounts", "acc0", []byte{}))
	must(t, a.Set(ctx, "acme_orders", "o1", []byte(`{"id":"o1"}`)))
	v, err := a.Get(ctx, "acme_accounts", "acc1")
	must(t, err)
	if string(v) != `{"id":"acc1"}` {
		t.Fatalf("get = %q", v)
	}
	if v, err := a.Get(ctx, "acme_accounts", "acc0"); err != nil || len(v) != 0 {
		t.Fatalf("empty value: %q, %v", v, err)
	}
	list, err := a.List(ctx, "acme_accounts")
	must(t, err)
	if len(list) != 2 || list[0].Key != "acc0" || list[1].Key != "acc1" {
		t.Fatalf("list = %+v", list)
	}

	// compare and swap
	cases := map[string]struct {
		key      string
		old, new []byte
		swapped  bool
		found    string
	}{
		"create when absent":         {"new", nil, []byte("v1"), true, "v1"},
		"create refused when exists": {"acc1", nil, []byte("x"), false, `{"id":"acc1"}`},
		"swap on match":              {"o1", []byte(`{"id":"o1"}`), []byte(`{"id":"o1","s":"valid"}`), true, `{"id":"o1","s":"valid"}`},
		"refused on mismatch":        {"acc1", []byte("other"), []byte("x"), false, `{"id":"acc1"}`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			bucket := "acme_accounts"
			if c.key == "o1" {
				bucket = "acme_orders"
			}
			found, swapped, err := a.CompareAndSwap(ctx, bucket, c.key, c.old, c.new)
			must(t, err)
			if swapped != c.swapped || string(found) != c.found {
				t.Fatalf("CAS = %q, %v; want %q, %v", found, swapped, c.found, c.swapped)
			}
		})
	}

	// CAS is atomic: concurrent increments are never lost
	must(t, a.Set(ctx, "counters", "c", binary.BigEndian.AppendUint64(nil, 0)))
	var wg sync.WaitGroup
	const workers, each = 4, 10
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				cur, err := a.Get(ctx, "counters", "c")
				if err != nil {
					t.Error(err)
					return
				}
				next := binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(cur)+1)
				_, ok, err := a.CompareAndSwap(ctx, "counters", "c", cur, next)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					i++
				}
			}
		}()
	}
	wg.Wait()
	final, err := a.Get(ctx, "counters", "c")
	must(t, err)
	if n := binary.BigEndian.Uint64(final); n != workers*each {
		t.Fatalf("counter = %d, want %d", n, workers*each)
	}

	must(t, a.Delete(ctx, "acme_accounts", "acc1"))
	_, err = a.Get(ctx, "acme_accounts", "acc1")
	wantErr(t, err, storage.ErrNotFound)
	must(t, a.DeleteBucket(ctx, "acme_accounts"))
	if list, _ := a.List(ctx, "acme_accounts"); len(list) != 0 {
		t.Fatalf("bucket still has %d entries", len(list))
	}
	if list, _ := a.List(ctx, "acme_orders"); len(list) != 1 {
		t.Fatal("deleting one bucket touched another")
	}

	// time-prefixed keys expire by range, other buckets untouched
	for _, k := range []string{"0001-a", "0002-b", "0003-c"} {
		must(t, a.Set(ctx, "expiring", k, []byte("x")))
	}
	must(t, a.Set(ctx, "other", "0001-a", []byte("x")))
	if n, err := a.DeleteBelow(ctx, "expiring", "0003"); err != nil || n != 2 {
		t.Fatalf("DeleteBelow = %d, %v; want 2", n, err)
	}
	if list, _ := a.List(ctx, "expiring"); len(list) != 1 || list[0].Key != "0003-c" {
		t.Fatalf("left %+v", list)
	}
	if list, _ := a.List(ctx, "other"); len(list) != 1 {
		t.Fatal("DeleteBelow touched another bucket")
	}

	// a nonce is used once: of concurrent Takes, exactly one wins
	must(t, a.Set(ctx, "nonces", "n1", []byte("x")))
	var wins atomic.Int32
	var twg sync.WaitGroup
	for range 8 {
		twg.Add(1)
		go func() {
			defer twg.Done()
			ok, err := a.Take(ctx, "nonces", "n1")
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	twg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d Takes of one nonce won, want 1", wins.Load())
	}

	// a key is added once: of concurrent Adds, exactly one stores it,
	// and a later Add leaves the first value
	for round := range 3 {
		key := fmt.Sprintf("used-%d", round)
		var adds, creates atomic.Int32
		var awg sync.WaitGroup
		for i := range 8 {
			awg.Add(1)
			go func() {
				defer awg.Done()
				ok, err := a.Add(ctx, "nonces", key, []byte{byte(i)})
				if err != nil {
					t.Error(err)
				}
				if ok {
					adds.Add(1)
				}
				// creating an absent key by compare-and-swap is as exclusive
				_, swapped, err := a.CompareAndSwap(ctx, "created", key, nil, []byte{byte(i)})
				if err != nil {
					t.Error(err)
				}
				if swapped {
					creates.Add(1)
				}
			}()
		}
		awg.Wait()
		if adds.Load() != 1 || creates.Load() != 1 {
			t.Fatalf("%d concurrent Adds and %d creating swaps of one key won, want 1 each", adds.Load(), creates.Load())
		}
	}
	must(t, a.Set(ctx, "nonces", "set", []byte("first")))
	if ok, err := a.Add(ctx, "nonces", "set", []byte("second")); err != nil || ok {
		t.Fatalf("Add of an existing key = %v, %v", ok, err)
	}
	if v, _ := a.Get(ctx, "nonces", "set"); string(v) != "first" {
		t.Fatalf("Add changed an existing value to %q", v)
	}
}
