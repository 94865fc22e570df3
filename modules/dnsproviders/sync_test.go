package dnsproviders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// syncConfigs are expanded config-as-code declarations: a Cloudflare and an
// RFC 2136 provider client, in the given group.
func syncConfigs(group string) []Config {
	return []Config{
		{Name: "cf", Type: TypeCloudflare, Credentials: creds(map[string]string{"api_token": cfToken}),
			Zones: []string{testZone}, Group: group},
		{Name: "bind", Type: TypeRFC2136, Zones: []string{"corp.test"}, Group: group,
			Credentials: creds(map[string]string{"server": "127.0.0.1:53", "key_name": "certlocker", "key": "c2VjcmV0c2VjcmV0"})},
	}
}

func postgresStore(t *testing.T) storage.Store {
	t.Helper()
	st, err := postgres.Open(t.Context(), pgtest.DSN(t), storagetest.NewSealer(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func syncBackends(t *testing.T, fn func(t *testing.T, st storage.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		st, err := sqliteOpen(t)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, postgresStore(t))
	})
}

// checkSynced fails the test unless the store holds exactly one
// config-managed provider client per wanted name, in group, and the config
// audit log holds each action the number of times given.
func checkSynced(t *testing.T, st storage.Store, group string, names []string, audits map[string]int) {
	t.Helper()
	all, err := st.DNSProviders().List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range all {
		got = append(got, p.Name)
		if p.ManagedBy != storage.ManagedByConfig || p.Group != group {
			t.Errorf("provider %s: managed by %q, group %q; want config, %q", p.Name, p.ManagedBy, p.Group, group)
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(got, want) {
		t.Fatalf("stored providers %v, want one each of %v", got, want)
	}
	entries, _, err := st.Audit().List(t.Context(), storage.AuditFilter{Actor: storage.ActorConfig}, storage.Page{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range entries {
		var d struct{ Name string }
		_ = json.Unmarshal(e.Details, &d)
		count[e.Action+" "+d.Name]++
	}
	if fmt.Sprint(count) != fmt.Sprint(audits) {
		t.Fatalf("config audit entries %v, want %v", count, audits)
	}
}

// Two nodes starting with the same dns_providers config on one database
// both load it, and the store ends with one provider client per name:
// whichever node loses a create, update or delete race syncs again.
func TestSyncConcurrentNodes(t *testing.T) {
	t.Parallel()
	syncBackends(t, func(t *testing.T, st storage.Store) {
		nodes := []*Service{New(st, Options{Node: "node-1"}), New(st, Options{Node: "node-2"})}
		together := func(configs []Config) {
			t.Helper()
			start := make(chan struct{})
			errs := make(chan error, len(nodes))
			for _, n := range nodes {
				go func() {
					<-start
					errs <- n.Sync(t.Context(), configs)
				}()
			}
			close(start)
			for range nodes {
				if err := <-errs; err != nil {
					t.Fatalf("concurrent sync: %v", err)
				}
			}
		}
		together(syncConfigs(""))
		checkSynced(t, st, "", []string{"bind", "cf"},
			map[string]int{"dns_provider.create bind": 1, "dns_provider.create cf": 1})

		together(syncConfigs("web"))
		checkSynced(t, st, "web", []string{"bind", "cf"},
			map[string]int{"dns_provider.create bind": 1, "dns_provider.create cf": 1,
				"dns_provider.update bind": 1, "dns_provider.update cf": 1})

		together(syncConfigs("web")[:1])
		checkSynced(t, st, "web", []string{"cf"},
			map[string]int{"dns_provider.create bind": 1, "dns_provider.create cf": 1,
				"dns_provider.update bind": 1, "dns_provider.update cf": 1, "dns_provider.delete bind": 1})
	})
}

// hookStore wraps a store to count Sync's transactions and run a hook just
// before each provider client write.
type hookStore struct {
	storage.Store
	h *hooks
}

type hooks struct {
	txs    atomic.Int32
	before func(op, what string) error // op: create, update or delete
}

func (s *hookStore) InTx(ctx context.Context, fn func(tx storage.Store) error) error {
	s.h.txs.Add(1)
	return s.Store.InTx(ctx, func(tx storage.Store) error { return fn(&hookStore{Store: tx, h: s.h}) })
}

func (s *hookStore) DNSProviders() storage.DNSProviderStore {
	return hookProviders{DNSProviderStore: s.Store.DNSProviders(), h: s.h}
}

type hookProviders struct {
	storage.DNSProviderStore
	h *hooks
}

func (p hookProviders) Create(ctx context.Context, d *storage.DNSProvider) error {
	if err := p.h.before("create", d.Name); err != nil {
		return err
	}
	return p.DNSProviderStore.Create(ctx, d)
}

func (p hookProviders) Update(ctx context.Context, d *storage.DNSProvider) error {
	if err := p.h.before("update", d.Name); err != nil {
		return err
	}
	return p.DNSProviderStore.Update(ctx, d)
}

func (p hookProviders) Delete(ctx context.Context, id string) error {
	if err := p.h.before("delete", id); err != nil {
		return err
	}
	return p.DNSProviderStore.Delete(ctx, id)
}

// The race made deterministic on PostgreSQL: another node commits the same
// sync just before this node's first write, so that write really fails
// (ErrDuplicate, ErrConflict, ErrNotFound) and Sync succeeds on its second
// transaction, writing nothing more.
func TestSyncRetriesAfterLosingARace(t *testing.T) {
	t.Parallel()
	st := postgresStore(t)
	h := &hooks{}
	loser := New(&hookStore{Store: st, h: h}, Options{Node: "loser"})
	winner := New(st, Options{Node: "winner"})
	for _, tc := range []struct {
		op      string
		configs []Config
		group   string
		names   []string
		audits  map[string]int
	}{
		{"create", syncConfigs(""), "", []string{"bind", "cf"},
			map[string]int{"dns_provider.create bind": 1, "dns_provider.create cf": 1}},
		{"update", syncConfigs("web"), "web", []string{"bind", "cf"},
			map[string]int{"dns_provider.create bind": 1, "dns_provider.create cf": 1,
				"dns_provider.update bind": 1, "dns_provider.update cf": 1}},
		{"delete", syncConfigs("web")[:1], "web", []string{"cf"},
			map[string]int{"dns_provider.create bind": 1, "dns_provider.create cf": 1,
				"dns_provider.update bind": 1, "dns_provider.update cf": 1, "dns_provider.delete bind": 1}},
	} {
		raced := false
		h.before = func(op, _ string) error {
			if op != tc.op || raced {
				return nil
			}
			raced = true
			return winner.Sync(t.Context(), tc.configs) // commits on its own connection
		}
		h.txs.Store(0)
		if err := loser.Sync(t.Context(), tc.configs); err != nil {
			t.Fatalf("%s: sync after losing the race: %v", tc.op, err)
		}
		if !raced || h.txs.Load() != 2 {
			t.Fatalf("%s: raced %v, %d transactions; want a race and 2 transactions", tc.op, raced, h.txs.Load())
		}
		checkSynced(t, st, tc.group, tc.names, tc.audits)
	}
}

// Retries are bounded, and a sync that never gets through changes nothing.
func TestSyncGivesUpAfterBoundedAttempts(t *testing.T) {
	t.Parallel()
	st, err := sqliteOpen(t)
	if err != nil {
		t.Fatal(err)
	}
	h := &hooks{before: func(op, what string) error {
		return fmt.Errorf("creating DNS provider %q: %w", what, storage.ErrDuplicate)
	}}
	svc := New(&hookStore{Store: st, h: h}, Options{})
	err = svc.Sync(t.Context(), syncConfigs(""))
	if !errors.Is(err, storage.ErrDuplicate) || h.txs.Load() != syncAttempts {
		t.Fatalf("sync that always loses: %v after %d transactions, want ErrDuplicate after %d", err, h.txs.Load(), syncAttempts)
	}
	noSecret(t, "error", err.Error(), cfToken, "c2VjcmV0c2VjcmV0")
	checkSynced(t, st, "", nil, map[string]int{})

	// errors that are not a lost race are not retried
	h.txs.Store(0)
	h.before = func(string, string) error { return errors.New("disk full") }
	if err := svc.Sync(t.Context(), syncConfigs("")); err == nil || h.txs.Load() != 1 {
		t.Fatalf("sync failing for good: %v after %d transactions, want 1", err, h.txs.Load())
	}
}

// Declare validates without touching the store: a bad declaration is
// refused, a good one writes nothing until Apply.
func TestDeclareWritesNothing(t *testing.T) {
	t.Parallel()
	st, err := sqliteOpen(t)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(st, Options{Node: "node-1"})
	if _, err := svc.Declare(append(syncConfigs(""), syncConfigs("")[0])); err == nil || !strings.Contains(err.Error(), "declared twice") {
		t.Fatalf("a name declared twice: %v", err)
	}
	bad := syncConfigs("")
	bad[1].Zones = nil
	if _, err := svc.Declare(bad); err == nil || !strings.Contains(err.Error(), "dns_providers[1] (bind)") {
		t.Fatalf("a declaration without zones: %v", err)
	}
	if _, err := svc.Declare(syncConfigs("")); err != nil {
		t.Fatal(err)
	}
	all, _ := st.DNSProviders().List(t.Context(), "")
	entries, _, _ := st.Audit().List(t.Context(), storage.AuditFilter{}, storage.Page{})
	if len(all) != 0 || len(entries) != 0 {
		t.Fatalf("Declare wrote %d providers and %d audit entries", len(all), len(entries))
	}
}

// Revert puts the store back as it was before Apply: a created provider
// client is gone, an updated one has its settings back, a removed one is
// back under its old ID. What changed since Apply is left alone.
func TestRevertPutsBackWhatApplyChanged(t *testing.T) {
	t.Parallel()
	syncBackends(t, func(t *testing.T, st storage.Store) {
		ctx := t.Context()
		svc := New(st, Options{Node: "node-1"})
		if err := svc.Sync(ctx, syncConfigs("")); err != nil {
			t.Fatal(err)
		}
		snapshot := func() map[string]string {
			all, err := st.DNSProviders().List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for _, p := range all {
				out[p.Name] = fmt.Sprintf("%s %s %s %v ttl=%s creds=%s", p.ID, p.ManagedBy, p.Group, p.Zones, p.TTL, p.Credentials.Reveal())
			}
			return out
		}
		before := snapshot()

		// the next config drops bind, changes cf and adds extra
		next := syncConfigs("")[:1]
		next[0].TTL, next[0].Zones = caddy.Duration(5*time.Minute), []string{testZone, "other.test"}
		next = append(next, Config{Name: "extra", Type: TypeRFC2136, Zones: []string{"extra.test"},
			Credentials: creds(map[string]string{"server": "127.0.0.1:53", "key_name": "k", "key": "c2VjcmV0"})})
		d, err := svc.Declare(next)
		if err != nil {
			t.Fatal(err)
		}
		applied, err := svc.Apply(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if got := snapshot(); maps.Equal(got, before) || len(got) != 2 {
			t.Fatalf("Apply changed nothing: %v", got)
		}
		if err := svc.Revert(ctx, applied); err != nil {
			t.Fatal(err)
		}
		if got := snapshot(); !maps.Equal(got, before) {
			t.Fatalf("after Revert the store holds\n%v\nwant\n%v", got, before)
		}
		entries, _, _ := st.Audit().List(ctx, storage.AuditFilter{Actor: storage.ActorConfig}, storage.Page{Limit: 100})
		reverts := 0
		for _, e := range entries {
			if strings.Contains(string(e.Details), "reverted") {
				reverts++
			}
		}
		if reverts != 3 {
			t.Fatalf("audit entries of the revert = %d, want 3 (delete extra, update cf, create bind)", reverts)
		}

		// a row changed since Apply is left as it is
		applied, err = svc.Apply(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		extra, err := st.DNSProviders().GetByName(ctx, "extra")
		if err != nil {
			t.Fatal(err)
		}
		extra.Status = StatusVerified // another node verified it meanwhile
		if err := st.DNSProviders().Update(ctx, extra); err != nil {
			t.Fatal(err)
		}
		if err := svc.Revert(ctx, applied); err != nil {
			t.Fatal(err)
		}
		got := snapshot()
		if _, ok := got["extra"]; !ok || got["bind"] != before["bind"] || got["cf"] != before["cf"] {
			t.Fatalf("after a revert with a row changed since Apply the store holds %v", got)
		}
	})
}
