// Package certlocker is the CertLocker app (apps.certlocker): it chooses and
// opens the store, holds the encryption key and the node's identity, and is
// what every other CertLocker module and the admin API reach state through.
package certlocker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/placeholder"
	"github.com/certlocker/caddy-certlocker/modules/challengezone"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/modules/notify"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
)

func init() {
	caddy.RegisterModule(new(App))
}

// Storage backends.
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
)

// Environment variables read when the config leaves a value unset.
const (
	EnvEncryptionKey = "CERTLOCKER_ENCRYPTION_KEY"
	EnvNodeID        = "CERTLOCKER_NODE_ID"
)

// App is the CertLocker app. Its zero value is a working single-node setup:
// SQLite under Caddy's data directory and a generated encryption key file
// beside the database.
type App struct {
	// Storage says where CertLocker keeps its state.
	// Default: SQLite at {caddy data dir}/certlocker/certlocker.db.
	Storage *StorageConfig `json:"storage,omitempty"`

	// EncryptionKey seals every secret at rest (AES-256-GCM): 32 bytes as
	// 64 hex characters or base64. It must be a placeholder such as
	// "{env.CERTLOCKER_ENCRYPTION_KEY}" or "{file./etc/certlocker/key}", so
	// the key never appears in the admin API's GET /config/.
	// Default: the CERTLOCKER_ENCRYPTION_KEY environment variable, else a
	// key file "certlocker.key" (mode 0600) generated beside the database.
	EncryptionKey string `json:"encryption_key,omitempty"`

	// PreviousEncryptionKeys open secrets sealed before a key rotation;
	// placeholders, like EncryptionKey. Run `certlocker rekey` to re-seal
	// everything with the current key, then remove them. Default: none.
	PreviousEncryptionKeys []string `json:"previous_encryption_keys,omitempty"`

	// NodeID names this node in workflow leases, timelines and the audit
	// log; every node sharing a database needs its own. Default: the
	// CERTLOCKER_NODE_ID environment variable, else an ID generated once
	// and kept in {caddy data dir}/certlocker/node-id.
	NodeID string `json:"node_id,omitempty"`

	// Workflow tunes the workflow engine. Default: see WorkflowConfig.
	Workflow *WorkflowConfig `json:"workflow,omitempty"`

	// NotifiersRaw are the notifiers events are sent to, e.g.
	// {"notifier": "webhook", "url": "{env.HOOK_URL}"}. Default: none.
	NotifiersRaw []json.RawMessage `json:"notifiers,omitempty" caddy:"namespace=certlocker.notifiers inline_key=notifier"`

	// Config-declared resources (config as code) go here, one field per
	// kind; Provision validates them, and Start syncs them into the store.

	// Inventory configures the certificate inventory: which roles may
	// export private keys. Default: only the admin API (role "admin").
	Inventory *inventory.Config `json:"inventory,omitempty"`

	inv *inventory.Service

	// DNSProviders are DNS provider clients declared in the config; when
	// the config starts they are created, updated or removed in the store
	// to match it, and cannot be changed through the API. Credentials must be placeholders.
	// Default: none.
	DNSProviders []dnsproviders.Config `json:"dns_providers,omitempty"`

	// Issuers are ACME clients declared in the config; when the config
	// starts they are created or updated in the store to match it
	// (accounts register on first use) and cannot be changed through the
	// API. EAB MAC keys must be
	// placeholders. Default: none.
	Issuers []issuers.Config `json:"issuers,omitempty"`

	// ChallengeZones are zones CertLocker's own DNS server is
	// authoritative for, answering the TXT records of "delegated" DNS
	// provider clients from the database (see ChallengeZoneConfig).
	// Default: none (no DNS server).
	ChallengeZones []ChallengeZoneConfig `json:"challenge_zones,omitempty"`

	zoneServers []*challengezone.Server

	// Users are the operator UI's users (http.handlers.certlocker_ui): the
	// role and groups of each authenticated user ID. See User. Default:
	// none (only loopback clients without authentication reach the UI).
	Users []User `json:"users,omitempty"`

	dns        *dnsproviders.Service
	issuers    *issuers.Service
	engine     *workflow.Engine
	enginePool pooledEngine
	engineKey  string
	notifiers  []notify.Notifier
	events     *caddyevents.App
	eventsCtx  caddy.Context

	declaredDNS     *dnsproviders.Declaration
	declaredIssuers *issuers.Declaration
	syncedDNS       *dnsproviders.Applied // what Start changed, for an aborted start
	syncedIssuers   *issuers.Applied

	// The lifecycle, driven by Caddy one config at a time (see Start).
	ctx       caddy.Context
	previous  *App // the app current when this one started
	started   bool // Start succeeded
	committed bool // the whole config started: Caddy runs it
	watched   bool // the "started" event will say so
	stopped   bool // Stop ran

	background []stopper

	store   storage.Store
	poolKey string
	opened  bool
	nodeID  string
	backend string
	logger  *zap.Logger
}

// StorageConfig selects the storage backend.
type StorageConfig struct {
	// Backend is "sqlite" or "postgres". Default: sqlite.
	Backend string `json:"backend,omitempty"`

	// Path is the SQLite database file (sqlite only); placeholders are
	// expanded. Default: {caddy data dir}/certlocker/certlocker.db.
	Path string `json:"path,omitempty"`

	// DSN is the PostgreSQL connection string (postgres only), as a
	// postgres:// URL or key=value pairs; placeholders are expanded, and a
	// DSN holding a password must come from a placeholder such as
	// "{env.CERTLOCKER_DSN}" so it stays out of GET /config/.
	DSN string `json:"dsn,omitempty"`

	// MaxConnections caps the PostgreSQL connection pool. Default: 10.
	MaxConnections int `json:"max_connections,omitempty"`
}

// CaddyModule returns the Caddy module information. It has a pointer
// receiver: Caddy's events app calls it on every Emit, and a value receiver
// would copy the whole App while Stop writes its fields (a data race).
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "certlocker",
		New: func() caddy.Module { return new(App) },
	}
}

// stores keeps open stores across config reloads: a reload with the same
// storage and keys reuses the open store instead of reopening it.
var stores = caddy.NewUsagePool()

type pooledStore struct{ storage.Store }

func (p pooledStore) Destruct() error { return p.Close() }

// Provision opens (or reuses) the store.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()

	sc := StorageConfig{}
	if a.Storage != nil {
		sc = *a.Storage
	}
	if sc.Backend == "" {
		sc.Backend = BackendSQLite
	}
	a.backend = sc.Backend
	if err := sc.check(); err != nil {
		return err
	}

	var location string // the database, for the pool key and key file
	switch sc.Backend {
	case BackendSQLite:
		p, err := expand(repl, sc.Path, "storage.path")
		if err != nil {
			return err
		}
		if p == "" {
			p = filepath.Join(caddy.AppDataDir(), "certlocker", "certlocker.db")
		}
		if location, err = filepath.Abs(p); err != nil {
			return fmt.Errorf("storage.path: %w", err)
		}
	case BackendPostgres:
		dsn, err := expand(repl, sc.DSN, "storage.dsn")
		if err != nil {
			return err
		}
		location = dsn
	}

	sealer, err := a.loadKeys(repl, sc.Backend, location)
	if err != nil {
		return err
	}
	if a.nodeID, err = a.resolveNodeID(repl); err != nil {
		return err
	}

	a.poolKey = sc.Backend + "\x00" + location + "\x00" + sealer.CurrentKeyID() + "\x00" + strings.Join(a.PreviousEncryptionKeys, ",")
	val, loaded, err := stores.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		var st storage.Store
		var err error
		switch sc.Backend {
		case BackendSQLite:
			st, err = sqlite.Open(octx, location, sealer)
		case BackendPostgres:
			st, err = postgres.Open(octx, location, sealer, sc.MaxConnections)
		}
		if err != nil {
			return nil, err
		}
		return pooledStore{st}, nil
	})
	if err != nil {
		a.poolKey = ""
		return fmt.Errorf("opening %s storage: %w", sc.Backend, err)
	}
	a.store, a.opened = val.(pooledStore).Store, !loaded

	// Validate config-declared resources here, one call per kind; Start
	// syncs them.
	if err := checkUsers(a.Users); err != nil {
		return err
	}
	if err := a.provisionIssuers(ctx); err != nil {
		return err
	}
	if err := a.provisionDNSProviders(ctx); err != nil {
		return err
	}
	if err := a.provisionInventory(ctx); err != nil {
		return err
	}
	if err := a.provisionChallengeZones(); err != nil {
		return err
	}

	if err := a.provisionWorkflows(ctx); err != nil {
		return err
	}
	// Caddy emits "started" once every app of the config started: from
	// then on this config runs, and a Stop is no longer an aborted start
	ev, err := ctx.App("events")
	if err == nil {
		err = ev.(*caddyevents.App).On("started", configStarted{a})
	}
	if err != nil {
		a.logger.Warn("cannot tell when the config has started: a reload that fails after this app started leaves what it synced", zap.Error(err))
	}
	a.watched = err == nil

	if a.opened {
		h, _ := a.store.Health(ctx)
		fields := []zap.Field{zap.String("backend", sc.Backend), zap.Int("schema_version", h.SchemaVersion),
			zap.String("key_id", sealer.CurrentKeyID()), zap.String("node_id", a.nodeID)}
		if sc.Backend == BackendSQLite {
			fields = append(fields, zap.String("path", location))
		}
		a.logger.Info("storage opened", fields...)
	}
	return nil
}

// check validates the storage config before anything is expanded.
func (sc StorageConfig) check() error {
	switch sc.Backend {
	case BackendSQLite:
		if sc.DSN != "" {
			return errors.New("storage.dsn is for the postgres backend; the sqlite backend takes storage.path")
		}
	case BackendPostgres:
		if sc.DSN == "" {
			return errors.New(`storage.dsn is required for the postgres backend, e.g. "{env.CERTLOCKER_DSN}"`)
		}
		if sc.Path != "" {
			return errors.New("storage.path is for the sqlite backend; the postgres backend takes storage.dsn")
		}
		if dsnHasLiteralPassword(sc.DSN) {
			return errors.New(`storage.dsn contains a password in clear: put the DSN in an environment variable or file and refer to it, e.g. "{env.CERTLOCKER_DSN}", so it stays out of GET /config/`)
		}
	default:
		return fmt.Errorf("storage.backend %q is not supported: use %q or %q", sc.Backend, BackendSQLite, BackendPostgres)
	}
	if sc.MaxConnections < 0 {
		return errors.New("storage.max_connections must not be negative")
	}
	return nil
}

var kvPasswordRe = regexp.MustCompile(`(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)

// placeholderMark stands in for each placeholder while a DSN is parsed.
const placeholderMark = "CERTLOCKERPLACEHOLDER"

// dsnHasLiteralPassword reports whether the DSN carries a password that is
// not wholly placeholders ("postgres://u:{env.PW}@host/db" is fine;
// "postgres://u:secret@host/db" and "{env.HOST} password=secret" are not).
func dsnHasLiteralPassword(dsn string) bool {
	marked := placeholder.Mask(dsn, placeholderMark)
	literal := func(pw string) bool {
		return strings.Trim(strings.ReplaceAll(pw, placeholderMark, ""), "'") != ""
	}
	if u, err := url.Parse(marked); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if pw, ok := u.User.Password(); ok && literal(pw) {
			return true
		}
		return u.Query().Has("password") && literal(u.Query().Get("password"))
	}
	for _, m := range kvPasswordRe.FindAllStringSubmatch(marked, -1) {
		if literal(m[1]) {
			return true
		}
	}
	return false
}

// expand replaces placeholders; an unknown or empty placeholder is an error
// that names the field, never the value.
func expand(repl *caddy.Replacer, s, field string) (string, error) {
	if s == "" {
		return "", nil
	}
	out, err := repl.ReplaceOrErr(s, true, true)
	if err != nil {
		return "", fmt.Errorf("%s: %v", field, err)
	}
	return out, nil
}

// loadKeys builds the sealer from config, environment or the key file.
func (a *App) loadKeys(repl *caddy.Replacer, backend, location string) (*storage.Sealer, error) {
	keyFromConfig := func(s, field string) ([]byte, error) {
		if !placeholder.Only(s) {
			return nil, fmt.Errorf(`%s must be a placeholder such as "{env.%s}" or "{file./path/to/key}": a key written in the config would be visible in GET /config/`, field, EnvEncryptionKey)
		}
		v, err := expand(repl, s, field)
		if err != nil {
			return nil, err
		}
		k, err := storage.ParseKey(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", field, err)
		}
		return k, nil
	}
	var previous [][]byte
	for i, p := range a.PreviousEncryptionKeys {
		k, err := keyFromConfig(p, fmt.Sprintf("previous_encryption_keys[%d]", i))
		if err != nil {
			return nil, err
		}
		previous = append(previous, k)
	}
	var current []byte
	var err error
	switch {
	case a.EncryptionKey != "":
		if current, err = keyFromConfig(a.EncryptionKey, "encryption_key"); err != nil {
			return nil, err
		}
	case os.Getenv(EnvEncryptionKey) != "":
		if current, err = storage.ParseKey(os.Getenv(EnvEncryptionKey)); err != nil {
			return nil, fmt.Errorf("%s: %v", EnvEncryptionKey, err)
		}
	default:
		dir := filepath.Join(caddy.AppDataDir(), "certlocker")
		if backend == BackendSQLite {
			dir = filepath.Dir(location)
		}
		if current, err = a.keyFile(filepath.Join(dir, "certlocker.key"), backend); err != nil {
			return nil, err
		}
	}
	return storage.NewSealer(current, previous...)
}

// keyFile reads the key file, generating it (0600) on first use.
func (a *App) keyFile(path, backend string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := storage.ParseKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("key file %s: %v", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	k, err := storage.NewKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating key file directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // another process won the race
		return a.keyFile(path, backend)
	}
	if err != nil {
		return nil, fmt.Errorf("creating key file: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(k) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	msg := "generated an encryption key file: back it up with the database, or set encryption_key from a secret store"
	if backend == BackendPostgres {
		msg = "generated an encryption key file: every node sharing the database needs this same key; set encryption_key from a secret store instead"
	}
	a.logger.Warn(msg, zap.String("key_file", path), zap.String("key_id", storage.KeyID(k)))
	return k, nil
}

func (a *App) resolveNodeID(repl *caddy.Replacer) (string, error) {
	id, err := expand(repl, a.NodeID, "node_id")
	if err != nil {
		return "", err
	}
	if id == "" {
		id = os.Getenv(EnvNodeID)
	}
	if id == "" {
		path := filepath.Join(caddy.AppDataDir(), "certlocker", "node-id")
		if b, err := os.ReadFile(path); err == nil {
			id = strings.TrimSpace(string(b))
		} else {
			host, _ := os.Hostname()
			host = regexp.MustCompile(`[^A-Za-z0-9.-]`).ReplaceAllString(host, "")
			if host == "" {
				host = "node"
			}
			var r [3]byte
			_, _ = rand.Read(r[:])
			id = fmt.Sprintf("%.40s-%s", host, hex.EncodeToString(r[:]))
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
				_ = os.WriteFile(path, []byte(id+"\n"), 0o600)
			}
		}
	}
	if !storage.ValidName(id) {
		return "", fmt.Errorf("node_id %q: use %s", id, storage.NameRule)
	}
	return id, nil
}

// Validate checks the configuration. Provision already refused what it
// could not use, so there is nothing left to check.
func (a *App) Validate() error { return nil }

// Start refuses a config that serves certlocker_ui on a non-loopback
// listener without authentication (checkUIListeners), syncs the
// config-declared resources into the store, records the
// node's start when this config opened the store, starts (or hands this
// config to) the workflow engine and the background tasks, and makes this
// the app the admin API serves.
//
// Only Start writes: Provision also runs for caddy validate, adapt and
// one-off commands such as rekey. A config can still fail after this app
// started, when another of its apps fails to start: Caddy then stops this
// app (without the "started" event) and keeps running the previous config,
// so Stop puts back what Start synced and hands over to the previous app.
func (a *App) Start() error {
	if err := a.checkUIListeners(); err != nil {
		return err
	}
	ctx := context.Background()
	if err := a.syncDeclared(ctx); err != nil {
		// what the sync changed was put back (and audited as such); the
		// failure itself is audited too. Errors never carry secrets.
		d, _ := json.Marshal(map[string]any{"error": err.Error()})
		if aerr := a.AuditEntry(ctx, &storage.AuditEntry{Actor: storage.ActorConfig, Action: "config.sync", Target: a.nodeID,
			Result: storage.AuditFailed, Details: d}); aerr != nil {
			a.logger.Warn("auditing a failed config sync", zap.Error(aerr))
		}
		return err
	}
	if a.opened {
		h, _ := a.store.Health(ctx)
		details, _ := json.Marshal(map[string]any{"backend": a.backend, "schema_version": h.SchemaVersion,
			"version": Version(), "key_id": h.KeyID})
		if err := a.Audit(ctx, "system", "node.start", a.nodeID, details); err != nil {
			a.revertDeclared(ctx)
			return fmt.Errorf("recording node start: %w", err)
		}
	}
	if err := a.startChallengeZones(); err != nil {
		a.revertDeclared(ctx)
		return err
	}
	a.startWorkflows()
	a.runBackground(a.ctx, a.runJanitor)
	a.runBackground(a.ctx, a.refreshInventory)
	// without the "started" event, an aborted start cannot be told from
	// a stop: keep what was synced rather than revert it at shutdown
	a.started, a.stopped, a.committed = true, false, !a.watched
	// last: from here on the admin API serves this app
	a.previous = current.Swap(a)
	return nil
}

// syncDeclared writes the config-declared resources, kind by kind; if one
// kind fails, the kinds already written are put back.
func (a *App) syncDeclared(ctx context.Context) error {
	var err error
	if a.syncedIssuers, err = a.issuers.Apply(ctx, a.declaredIssuers); err != nil {
		return err
	}
	if a.syncedDNS, err = a.dns.Apply(ctx, a.declaredDNS); err != nil {
		a.revertDeclared(ctx)
		return err
	}
	return nil
}

// revertDeclared puts back what syncDeclared wrote, in reverse order.
func (a *App) revertDeclared(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.dns.Revert(ctx, a.syncedDNS); err != nil {
		a.logger.Error("reverting the DNS providers this config synced", zap.Error(err))
	}
	if err := a.issuers.Revert(ctx, a.syncedIssuers); err != nil {
		a.logger.Error("reverting the issuers this config synced", zap.Error(err))
	}
	a.syncedDNS, a.syncedIssuers = nil, nil
}

// configStarted marks the app's config as running when Caddy emits its
// "started" event, after every app of the config started.
type configStarted struct{ a *App }

func (h configStarted) Handle(context.Context, caddy.Event) error {
	h.a.committed = true
	return nil
}

// Stop stops serving this config's app; the store and the workflow
// engine stay up for the next config (see Cleanup).
//
// Caddy calls Stop in three cases. The config is replaced (this app is no
// longer current: its successor took over when it started) or stopped, or
// the reload drops apps.certlocker: no app serves after this one. Or the
// config failed to start after this app started: the previous config keeps
// running, so what Start synced is put back and the previous app serves
// again.
func (a *App) Stop() error {
	if a.stopped || !a.started {
		return nil
	}
	a.stopped = true
	a.stopBackground()
	a.stopChallengeZones()
	if current.Load() != a {
		// a successor started, which Caddy does only once this config ran
		a.committed = true
	}
	if !a.committed {
		a.revertDeclared(context.Background())
		prev := a.previous
		if prev != nil && prev.stopped {
			prev = nil
		}
		if current.CompareAndSwap(a, prev) && prev != nil {
			prev.startWorkflows()
		}
		a.previous = nil
		return nil
	}
	current.CompareAndSwap(a, nil)
	// Caddy stops the old config only after the new one started: if a
	// successor replaced this app, its config runs, and this app is gone
	// for good
	if next := current.Load(); next != nil && next.previous == a {
		next.committed, next.previous = true, nil
		next.syncedDNS, next.syncedIssuers = nil, nil
	}
	a.previous, a.syncedDNS, a.syncedIssuers = nil, nil, nil
	return nil
}

// Cleanup releases this config's hold on the store; the store closes when
// no config uses it.
func (a *App) Cleanup() error {
	if a.started && !a.stopped {
		// Caddy cleans up without stopping when a config fails after its
		// apps started (while finishing its setup): it keeps running the
		// previous config, as after a failed start
		a.committed = false
		_ = a.Stop()
	}
	a.stopBackground()
	a.cleanupWorkflows()
	if a.poolKey == "" {
		return nil
	}
	_, err := stores.Delete(a.poolKey)
	a.poolKey = ""
	return err
}

// Store returns the app's store.
func (a *App) Store() storage.Store { return a.store }

// Node returns this node's ID.
func (a *App) Node() string { return a.nodeID }

// Logger returns the app's logger.
func (a *App) Logger() *zap.Logger { return a.logger }

// NodeHealth is what GET /certlocker/health reports.
type NodeHealth struct {
	Status string `json:"status"`
	storage.Health
	NodeID  string `json:"node_id"`
	Version string `json:"version"`
}

// Health checks the store.
func (a *App) Health(ctx context.Context) (NodeHealth, error) {
	h, err := a.store.Health(ctx)
	nh := NodeHealth{Status: "ok", Health: h, NodeID: a.nodeID, Version: Version()}
	nh.Backend = a.backend
	if err != nil {
		nh.Status = "unavailable"
	}
	return nh, err
}

// Audit appends an audit entry from this node. details must not hold secrets.
func (a *App) Audit(ctx context.Context, actor, action, target string, details json.RawMessage) error {
	return a.AuditEntry(ctx, &storage.AuditEntry{Actor: actor, Action: action, Target: target, Details: details})
}

// AuditEntry appends e as written by this node (its group, source and
// result as given; the source from ctx when empty). e.Details must not
// hold secrets.
func (a *App) AuditEntry(ctx context.Context, e *storage.AuditEntry) error {
	e.Node = a.nodeID
	return a.store.Audit().Append(ctx, e)
}

// Rekey re-seals every secret with the current key.
func (a *App) Rekey(ctx context.Context, actor string) (int, error) {
	n, err := a.store.Rekey(ctx)
	if err != nil {
		d, _ := json.Marshal(map[string]any{"resealed": n})
		if aerr := a.AuditEntry(context.WithoutCancel(ctx), &storage.AuditEntry{Actor: actor, Action: "storage.rekey", Target: a.nodeID,
			Result: storage.AuditFailed, Details: d}); aerr != nil {
			a.logger.Warn("auditing a failed rekey", zap.Error(aerr))
		}
		return n, err
	}
	h, _ := a.store.Health(ctx)
	d, _ := json.Marshal(map[string]any{"resealed": n, "key_id": h.KeyID})
	if err := a.Audit(ctx, actor, "storage.rekey", a.nodeID, d); err != nil {
		return n, err
	}
	a.logger.Info("secrets re-sealed", zap.Int("count", n), zap.String("key_id", h.KeyID))
	return n, nil
}

// Interface guards
var (
	_ caddy.App           = (*App)(nil)
	_ caddy.Provisioner   = (*App)(nil)
	_ caddy.Validator     = (*App)(nil)
	_ caddy.CleanerUpper  = (*App)(nil)
	_ caddyevents.Handler = configStarted{}
)
