package sqlite

import (
	"errors"
	"io/fs"
	"os"
	"sync"
)

// walSync is group commit for one SQLite file. The connections run with
// synchronous=NORMAL, so a commit writes its frames to the write-ahead log
// without waiting for the disk; walSync then fsyncs the log before the
// write returns, one fsync for every commit made while the previous one
// ran. A write therefore returns only once its commit is on disk, as with
// synchronous=FULL, but writers no longer hold the database while the
// disk syncs, and concurrent commits share a sync. (SQLite syncs the log
// itself before each checkpoint and the database after it, in NORMAL mode
// too, so a commit already checkpointed is on disk either way.)
type walSync struct {
	path string
	// sync makes the log durable (tests replace it)
	sync func() error

	mu      sync.Mutex
	cond    *sync.Cond
	issued  uint64 // commits made
	synced  uint64 // commits known durable
	running bool   // a sync is in progress
	// syncs counts the syncs run (tests)
	syncs int
}

func newWALSync(dbPath string) *walSync {
	w := &walSync{path: dbPath + "-wal"}
	w.cond = sync.NewCond(&w.mu)
	w.sync = w.fsync
	return w
}

// committed is called right after a commit, holding the write turn (so
// commits are numbered in the log's order); the function it returns waits
// until that commit is durable.
func (w *walSync) committed() func() error {
	w.mu.Lock()
	w.issued++
	ticket := w.issued
	w.mu.Unlock()
	return func() error { return w.wait(ticket) }
}

// wait returns once commit ticket is durable, running a sync itself when
// none is running that covers it.
func (w *walSync) wait(ticket uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.synced < ticket {
		if w.running {
			w.cond.Wait()
			continue
		}
		w.running = true
		target := w.issued // every commit made so far is in the log
		w.mu.Unlock()
		err := w.sync()
		w.mu.Lock()
		w.running = false
		w.syncs++
		w.cond.Broadcast()
		if err != nil {
			return err
		}
		w.synced = max(w.synced, target)
	}
	return nil
}

// fsync syncs the write-ahead log. No log means it was checkpointed into
// the database and removed, which SQLite syncs first.
func (w *walSync) fsync() error {
	f, err := os.OpenFile(w.path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	serr := f.Sync()
	if cerr := f.Close(); serr == nil {
		serr = cerr
	}
	return serr
}
