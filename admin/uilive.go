package admin

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

// liveEvery is how often a live list looks at the store.
const liveEvery = time.Second

// liveHub shares the live workflows lists among the streams that show
// them: one feed per distinct list (filter and group scope) looks at the
// store once a tick, however many browsers have that list open, and hands
// each stream the same snapshot; a stream sends only the rows that
// changed since the snapshot it sent last. A feed stops when its last
// stream goes.
type liveHub struct {
	mu    sync.Mutex
	feeds map[string]*liveFeed
	every time.Duration
}

// liveFeed is one list's poller and the streams it feeds.
type liveFeed struct {
	subs map[chan *liveSnapshot]struct{}
	last *liveSnapshot
	stop context.CancelFunc
}

// liveSnapshot is one look at a list: its rows, each with the key that
// changes when the row does and the event data to send.
type liveSnapshot struct{ rows []liveRow }

type liveRow struct {
	id, key string
	data    []byte
}

// liveKey names a list: the filter and the scope it is seen in.
func liveKey(f storage.WorkflowFilter, groups []string, restricted bool) string {
	scope := "*"
	if restricted {
		g := slices.Clone(groups)
		slices.Sort(g)
		scope = "groups:" + strings.Join(g, ",")
	}
	return strings.Join([]string{scope, f.State, f.IssuerID, f.Group, strings.ToLower(f.Domain)}, "\x00")
}

// subscribe returns a channel of snapshots of the list f shows in ctx's
// group scope (the latest one first, if the list is already live), and
// the function to stop.
func (h *liveHub) subscribe(ctx context.Context, f storage.WorkflowFilter) (<-chan *liveSnapshot, func()) {
	groups, restricted := storage.ScopeGroups(ctx)
	key := liveKey(f, groups, restricted)
	ch := make(chan *liveSnapshot, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.feeds == nil {
		h.feeds = map[string]*liveFeed{}
	}
	fd := h.feeds[key]
	if fd == nil {
		// the feed outlives the request that started it: it keeps only
		// the request's scope
		fctx := context.Background()
		if restricted {
			fctx = storage.WithGroups(fctx, groups)
		}
		fctx, cancel := context.WithCancel(fctx)
		fd = &liveFeed{subs: map[chan *liveSnapshot]struct{}{}, stop: cancel}
		h.feeds[key] = fd
		every := h.every
		if every == 0 {
			every = liveEvery
		}
		go h.poll(fctx, fd, f, every)
	} else if fd.last != nil {
		ch <- fd.last
	}
	fd.subs[ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(fd.subs, ch)
		if len(fd.subs) == 0 && h.feeds[key] == fd {
			fd.stop()
			delete(h.feeds, key)
		}
	}
}

// feedCount is how many lists are live (for tests).
func (h *liveHub) feedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.feeds)
}

// poll looks at the list every tick and hands the snapshot to every
// stream, replacing one a slow stream has not taken yet.
func (h *liveHub) poll(ctx context.Context, fd *liveFeed, f storage.WorkflowFilter, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if snap := snapshotOf(ctx, f); snap != nil {
			h.mu.Lock()
			fd.last = snap
			for ch := range fd.subs {
				select {
				case <-ch: // drop the stale one
				default:
				}
				ch <- snap
			}
			h.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// snapshotOf reads the list's first page through the workflow service
// (nil if the app is not running or the store fails: the next tick tries
// again).
func snapshotOf(ctx context.Context, f storage.WorkflowFilter) *liveSnapshot {
	app := certlocker.Current()
	if app == nil {
		return nil
	}
	ws, _, err := app.Workflows().List(ctx, f, storage.Page{Limit: pageSize})
	if err != nil {
		return nil
	}
	names := map[string]string{}
	if list, err := app.IssuerRegistry().List(ctx, storage.IssuerFilter{}); err == nil {
		for _, iss := range list {
			names[iss.ID] = iss.Name
		}
	}
	snap := &liveSnapshot{rows: make([]liveRow, 0, len(ws))}
	for _, wf := range ws {
		row := rowOf(wf, names)
		b, _ := json.Marshal(map[string]any{"id": wf.ID, "state": wf.State, "status": wf.Status,
			"domains": row.Domains, "issuer": row.IssuerName, "challenges": row.Challenges, "last_message": row.LastMessage})
		snap.rows = append(snap.rows, liveRow{id: wf.ID, key: wf.State + "\x00" + wf.Status, data: b})
	}
	return snap
}
