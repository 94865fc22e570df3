package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Writers of one store wait their turn in the store, not in SQLite's busy
// handler: with SQLite's own wait turned off (busy timeout 0), concurrent
// writers, in transactions and single statements, all succeed.
func TestWritersTakeTurns(t *testing.T) {
	st, err := openWith(t.Context(), filepath.Join(t.TempDir(), "c.db"), newSealer(t), 0, time.Minute, newWALSync(filepath.Join(t.TempDir(), "unused")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 16*40)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				key := fmt.Sprintf("%02d-%02d", g, i)
				var err error
				switch i % 3 {
				case 0:
					err = st.ACME().Set(ctx, "w", key, []byte("x"))
				case 1:
					_, _, err = st.ACME().CompareAndSwap(ctx, "w", key, nil, []byte("y"))
				default:
					err = st.InTx(ctx, func(tx storage.Store) error {
						if err := tx.ACME().Set(ctx, "w", key, []byte("a")); err != nil {
							return err
						}
						_, err := tx.ACME().Take(ctx, "w", key)
						return err
					})
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a concurrent writer failed: %v", err)
	}
}

// A writer waiting for its turn gives up when its context ends, and the
// writer holding the turn is not disturbed.
func TestWriterWaitCancelled(t *testing.T) {
	st, err := openWith(t.Context(), filepath.Join(t.TempDir(), "c.db"), newSealer(t), 0, time.Minute, newWALSync(filepath.Join(t.TempDir(), "unused")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.InTx(t.Context(), func(tx storage.Store) error {
			if err := tx.ACME().Set(t.Context(), "w", "held", []byte("x")); err != nil {
				return err
			}
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := st.ACME().Set(ctx, "w", "waiting", []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a writer waiting past its deadline: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the holder: %v", err)
	}
	if _, err := st.ACME().Get(t.Context(), "w", "held"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ACME().Get(t.Context(), "w", "waiting"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the cancelled write: %v", err)
	}
}

func newSealer(t *testing.T) *storage.Sealer {
	t.Helper()
	k, err := storage.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A write that cannot get its turn (here: one made outside a transaction
// while that transaction holds the turn) fails after the store's wait, as
// it did in SQLite's busy handler, instead of hanging.
func TestWriterWaitBounded(t *testing.T) {
	st, err := openWith(t.Context(), filepath.Join(t.TempDir(), "c.db"), newSealer(t), 0, 50*time.Millisecond, newWALSync(filepath.Join(t.TempDir(), "unused")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	err = st.InTx(t.Context(), func(tx storage.Store) error {
		return st.ACME().Set(t.Context(), "w", "outside", []byte("x"))
	})
	if err == nil || !strings.Contains(err.Error(), "another writer held the database") {
		t.Fatalf("a write that cannot get its turn: %v", err)
	}
}

// Every write returns only after a sync of the write-ahead log that began
// after its commit (durable on return, as with synchronous=FULL), and
// concurrent writers share syncs.
func TestWritesDurableOnReturn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	ws := newWALSync(path)
	real := ws.sync
	var syncing sync.Mutex
	ws.sync = func() error {
		syncing.Lock() // one at a time, as walSync promises
		defer syncing.Unlock()
		return real()
	}
	st, err := openWith(t.Context(), path, newSealer(t), busyTimeout, time.Minute, ws)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	issued := func() uint64 {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return ws.issued
	}
	durableSince := func(before uint64) bool {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return ws.synced > before
	}
	writes := []func(key string) error{
		func(key string) error { return st.ACME().Set(ctx, "d", key, []byte("x")) },
		func(key string) error {
			_, _, err := st.ACME().CompareAndSwap(ctx, "d", key, nil, []byte("y"))
			return err
		},
		func(key string) error {
			_, err := st.ACME().Add(ctx, "d", key, nil)
			return err
		},
	}
	for i, write := range writes {
		before := issued()
		if err := write(fmt.Sprintf("seq-%d", i)); err != nil {
			t.Fatal(err)
		}
		if !durableSince(before) {
			t.Fatalf("write %d returned before a sync covered its commit", i)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				before := issued()
				if err := writes[i%len(writes)](fmt.Sprintf("par-%d-%d", g, i)); err != nil {
					t.Error(err)
					return
				}
				if !durableSince(before) {
					t.Errorf("a concurrent write returned before a sync covered its commit")
					return
				}
			}
		}()
	}
	wg.Wait()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.synced != ws.issued || ws.syncs > int(ws.issued) {
		t.Fatalf("%d commits, %d durable, %d syncs", ws.issued, ws.synced, ws.syncs)
	}
	t.Logf("%d commits, %d syncs", ws.issued, ws.syncs)
}

// A failed sync fails the write that waited for it: it is not reported
// durable.
func TestWriteFailsWhenSyncFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	ws := newWALSync(path)
	st, err := openWith(t.Context(), path, newSealer(t), busyTimeout, time.Minute, ws)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ws.mu.Lock()
	ws.sync = func() error { return errors.New("disk gone") }
	ws.mu.Unlock()
	if err := st.ACME().Set(t.Context(), "d", "k", []byte("x")); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("a write whose sync failed: %v", err)
	}
	if err := st.InTx(t.Context(), func(tx storage.Store) error { return tx.ACME().Set(t.Context(), "d", "k2", []byte("x")) }); err == nil ||
		!strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("a transaction whose sync failed: %v", err)
	}
}
