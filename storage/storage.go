// Package storage defines what CertLocker keeps and how: one Store per
// deployment (embedded SQLite by default, PostgreSQL for several nodes),
// made of one sub-store per aggregate (ACME clients, DNS provider clients,
// workflows and their timeline, certificates, certificate tokens, audit, and
// the gateway's ACME state).
//
// Every backend passes the conformance suite in package storagetest. Secrets
// (account keys, EAB MAC keys, DNS credentials, token secrets, private keys)
// travel through this package as Secret values and are sealed with AES-256-GCM
// by the backend before they reach the database; see Sealer.
//
// This package imports no CertLocker module package: modules depend on
// storage, never the reverse.
package storage

import (
	"context"
	"errors"
	"time"
)

// Errors returned by every Store implementation. Callers test them with
// errors.Is; implementations wrap them with the aggregate and key at fault.
var (
	// ErrNotFound means no row has the requested identity.
	ErrNotFound = errors.New("not found")
	// ErrDuplicate means a unique attribute (a name, a fingerprint) is already taken.
	ErrDuplicate = errors.New("already exists")
	// ErrConflict means the row changed since it was read (optimistic
	// concurrency: the Version given to an update is not the stored one),
	// or a lease is held by another node.
	ErrConflict = errors.New("changed concurrently")
	// ErrInUse means the row is referenced by others and cannot be deleted.
	ErrInUse = errors.New("in use")
	// ErrInvalidCursor means a Page.Cursor was not made by this store.
	// ErrLimit means a counted limit (accounts bound to a token) is reached.
	ErrLimit         = errors.New("limit reached")
	ErrInvalidCursor = errors.New("invalid cursor: pass next_cursor from the previous page unchanged")
)

// Store is the whole persistent state of CertLocker. Implementations are safe
// for concurrent use. All methods MUST honour context cancellation.
type Store interface {
	Issuers() IssuerStore
	DNSProviders() DNSProviderStore
	Workflows() WorkflowStore
	Certificates() CertificateStore
	Tokens() TokenStore
	Audit() AuditStore
	ACME() ACMEStateStore

	// InTx runs fn in one database transaction: if fn returns an error or
	// panics, nothing fn wrote is kept. The Store passed to fn is bound to
	// the transaction; calling InTx on it runs fn in the same transaction.
	InTx(ctx context.Context, fn func(tx Store) error) error

	// Health reports whether the database answers and its schema version.
	Health(ctx context.Context) (Health, error)

	// Rekey re-seals every secret that is not sealed with the current key,
	// in batches, and returns how many values it re-sealed. It is safe to
	// run while nodes are serving: a value is re-sealed only if it did not
	// change meanwhile.
	Rekey(ctx context.Context) (int, error)

	// Close releases the database handle. The Store is unusable afterwards.
	Close() error
}

// Health describes the database behind a Store.
type Health struct {
	Backend       string `json:"backend"`
	SchemaVersion int    `json:"schema_version"`
	// KeyID is the ID of the encryption key new secrets are sealed with.
	KeyID string `json:"key_id"`
}

// Page asks for one page of a list. Cursor is the opaque NextCursor of the
// previous page ("" for the first page); Limit is clamped to [1, MaxLimit]
// and defaults to DefaultLimit.
//
// Backward pages towards the start of the list instead: the answer is the
// Limit rows up to and including the row Cursor was made from (a next
// cursor is made from the last row of its page, so Backward with the
// cursor a page was asked with gives the page before it), still in list
// order, and the cursor returned is the one to pass with Backward for the
// page before those ("" when they are the first). Forward from the cursor
// passed with Backward is the page after them.
type Page struct {
	Cursor   string
	Limit    int
	Backward bool
}

// Page size bounds for every list.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// Clamp returns the effective limit of the page.
func (p Page) Clamp() int {
	switch {
	case p.Limit <= 0:
		return DefaultLimit
	case p.Limit > MaxLimit:
		return MaxLimit
	}
	return p.Limit
}

// IssuerStore keeps ACME client records.
type IssuerStore interface {
	Create(ctx context.Context, iss *Issuer) error
	Get(ctx context.Context, id string) (*Issuer, error)
	GetByName(ctx context.Context, name string) (*Issuer, error)
	List(ctx context.Context, f IssuerFilter) ([]*Issuer, error)
	// ListPage returns a page of the issuers f selects, by name.
	ListPage(ctx context.Context, f IssuerFilter, p Page) ([]*Issuer, string, error)
	// Update writes iss if its Version is the stored one, then increments
	// iss.Version; otherwise it returns ErrConflict.
	Update(ctx context.Context, iss *Issuer) error
	// Delete removes the issuer; ErrInUse if workflows still reference it.
	Delete(ctx context.Context, id string) error
}

// IssuerFilter selects issuers; zero fields match everything.
type IssuerFilter struct {
	Group string
	// Groups, when not nil, keeps only issuers of these groups (the
	// services set it from the caller's scope, so that a page is full
	// whatever other groups' rows lie between).
	Groups    []string
	ManagedBy string
}

// DNSProviderStore keeps DNS provider client records and the challenge
// records they published (so cleanup survives restarts).
type DNSProviderStore interface {
	Create(ctx context.Context, p *DNSProvider) error
	Get(ctx context.Context, id string) (*DNSProvider, error)
	GetByName(ctx context.Context, name string) (*DNSProvider, error)
	List(ctx context.Context, group string) ([]*DNSProvider, error)
	// ListPage returns a page of the provider clients f selects, by name.
	ListPage(ctx context.Context, f DNSProviderFilter, p Page) ([]*DNSProvider, string, error)
	Update(ctx context.Context, p *DNSProvider) error
	Delete(ctx context.Context, id string) error

	// PutRecord stores the identity of a challenge record before it is
	// published (upsert by ID).
	PutRecord(ctx context.Context, r *ChallengeRecord) error
	// DeleteRecord forgets a record once it is removed from DNS.
	DeleteRecord(ctx context.Context, id string) error
	// ListRecords returns the records still to clean up: of one provider
	// ("" for all) created before the given time (zero for all).
	ListRecords(ctx context.Context, providerID string, before time.Time) ([]*ChallengeRecord, error)
	// GetRecord returns one challenge record; ErrNotFound once deleted.
	GetRecord(ctx context.Context, id string) (*ChallengeRecord, error)
	// WorkflowRecords returns the records still to clean up of one
	// workflow, oldest first.
	WorkflowRecords(ctx context.Context, workflowID string) ([]*ChallengeRecord, error)
}

// DNSProviderFilter selects DNS provider clients; zero fields match
// everything.
type DNSProviderFilter struct {
	Group string
	// Groups, when not nil, keeps only provider clients of these groups.
	Groups []string
}

// WorkflowStore keeps workflows (one ACME order each), their timelines, and
// the leases that say which node is working on which workflow.
type WorkflowStore interface {
	Create(ctx context.Context, w *Workflow) error
	Get(ctx context.Context, id string) (*Workflow, error)
	List(ctx context.Context, f WorkflowFilter, p Page) ([]*Workflow, string, error)
	// Update writes w if its Version is the stored one (else ErrConflict)
	// and, when w.LeaseOwner is set, only if that owner still holds the lease.
	Update(ctx context.Context, w *Workflow) error

	// Acquire leases up to limit workflows that are due (not terminal,
	// NextRunAt <= now, lease free or expired) to owner until now+ttl and
	// returns them, leaving alone those of the ACME clients in
	// skipIssuers (the node has no slot for them). Two nodes never receive
	// the same workflow for overlapping leases.
	Acquire(ctx context.Context, owner string, now time.Time, ttl time.Duration, limit int, skipIssuers ...string) ([]*Workflow, error)
	// Renew extends owner's lease on the workflow; ErrConflict if owner
	// no longer holds it.
	Renew(ctx context.Context, id, owner string, until time.Time) error
	// Release gives the lease up.
	Release(ctx context.Context, id, owner string) error

	// AppendEvent adds ev to the workflow's timeline and sets ev.Seq.
	AppendEvent(ctx context.Context, ev *WorkflowEvent) error
	// Events returns the timeline entries with Seq > afterSeq, oldest first.
	Events(ctx context.Context, workflowID string, afterSeq int64, limit int) ([]*WorkflowEvent, error)
	// CountByState counts workflows per state.
	CountByState(ctx context.Context) (map[string]int, error)
	// DropPrivateKey removes the workflow's copy of its certificate's
	// private key, once the inventory holds the certificate (call it in
	// the transaction that adds the certificate). It is not a state
	// change: the workflow's Version stays, so the engine's next write
	// does not conflict. A workflow that names its CertificateID never
	// stores a key again (see Workflow.PrivateKey).
	DropPrivateKey(ctx context.Context, id string) error
}

// WorkflowFilter selects workflows; zero fields match everything.
type WorkflowFilter struct {
	State    string
	IssuerID string
	Group    string
	// Groups, when not nil, keeps only workflows of these groups (the
	// services set it from the caller's scope, so that a page is full
	// whatever other groups' rows lie between).
	Groups []string
	// Domain matches workflows with an identifier equal to it.
	Domain string
	// Sort orders List: "" or "-created" is newest first, "created"
	// oldest first. A cursor is valid only for the sort it was made with.
	Sort string
}

// CertificateStore keeps the inventory.
type CertificateStore interface {
	// Put stores c, unless a certificate with the same Fingerprint exists,
	// in which case it returns that one's ID with ErrDuplicate.
	Put(ctx context.Context, c *Certificate) error
	Get(ctx context.Context, id string) (*Certificate, error)
	GetByFingerprint(ctx context.Context, fp string) (*Certificate, error)
	// List returns a page of certificates in f.Sort order.
	List(ctx context.Context, f CertificateFilter, p Page) ([]*Certificate, string, error)
	Update(ctx context.Context, c *Certificate) error
	Delete(ctx context.Context, id string) error
	// ExpiryCounts counts the certificates f selects per ACME client and
	// group, by NotAfter interval: bounds must be ascending, and each
	// ExpiryCount has len(bounds)+1 buckets (see ExpiryCount).
	ExpiryCounts(ctx context.Context, f CertificateFilter, bounds []time.Time) ([]ExpiryCount, error)
	// ExpiryTimeline counts the certificates f selects with NotAfter in
	// [from+i*step, from+(i+1)*step) for i in [0, n).
	ExpiryTimeline(ctx context.Context, f CertificateFilter, from time.Time, step time.Duration, n int) ([]int, error)
}

// CertificateFilter selects certificates; zero fields match everything.
type CertificateFilter struct {
	// Domain matches a certificate with that DNS name or IP among its
	// names; a leading "*." matches the wildcard name itself.
	Domain    string
	IssuerID  string
	CatalogID string
	Group     string
	// Groups, when not nil, keeps only certificates of these groups (the
	// services set it from the caller's scope).
	Groups []string
	Status string
	Rating string
	Source string
	// NotAfterBefore selects certificates expiring before it.
	NotAfterBefore time.Time
	// NotAfterFrom selects certificates expiring at or after it.
	NotAfterFrom time.Time
	// Sort orders List: one of CertificateSorts, optionally prefixed
	// with "-" for descending; "" is "expires". A cursor is valid only
	// for the sort it was made with.
	Sort string
}

// CertificateSorts are the sort keys of CertificateStore.List: expiry,
// start of validity, common name, and time added to the inventory.
var CertificateSorts = []string{"expires", "issued", "name", "added"}

// TokenStore keeps certificate tokens.
type TokenStore interface {
	Create(ctx context.Context, t *Token) error
	Get(ctx context.Context, id string) (*Token, error)
	List(ctx context.Context, f TokenFilter) ([]*Token, error)
	// ListPage returns a page of the tokens f selects, in f.Sort order.
	ListPage(ctx context.Context, f TokenFilter, p Page) ([]*Token, string, error)
	Update(ctx context.Context, t *Token) error
	// Delete removes the token and the account bindings it has.
	Delete(ctx context.Context, id string) error
	// GetByURLHash returns the token whose URLHash or PreviousURLHash is
	// hash (ErrNotFound if none). The caller still compares the secret.
	GetByURLHash(ctx context.Context, hash string) (*Token, error)
	// BindAccount binds an ACME account to the token, atomically with
	// the count of accounts bound: ErrLimit if max are bound already.
	// Binding an account again to the same token is a no-op; an account
	// bound to another token is ErrConflict.
	BindAccount(ctx context.Context, tokenID, accountID string, max int) error
	// AccountToken returns the ID of the token an account is bound to.
	AccountToken(ctx context.Context, accountID string) (string, error)
	// Accounts lists the accounts bound to a token, oldest first.
	Accounts(ctx context.Context, tokenID string) ([]*TokenAccount, error)
}

// TokenFilter selects tokens; zero fields match everything.
type TokenFilter struct {
	CertificateID string
	Group         string
	// Groups, when not nil, keeps only tokens of these groups.
	Groups []string
	Status string
	// LiveAt, when set, keeps tokens that have not expired at that time
	// (no expiry, or ExpiresAt after it); ExpiredAt keeps those that have
	// (ExpiresAt set and not after it).
	LiveAt    time.Time
	ExpiredAt time.Time
	// Sort orders ListPage: "" or "created" is oldest first (by ID),
	// "-created" newest first. A cursor is valid only for the sort it was
	// made with.
	Sort string
}

// AuditStore is the append-only audit log: there is no way to change or
// remove an entry, and the database refuses it too (triggers).
type AuditStore interface {
	// Append adds e, filling in its ID, time, result (AuditOK) and source
	// (from ctx, WithAuditSource) when empty.
	Append(ctx context.Context, e *AuditEntry) error
	// List returns entries newest first.
	List(ctx context.Context, f AuditFilter, p Page) ([]*AuditEntry, string, error)
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	Action string
	Target string
	// Actor matches the actor exactly, or up to its "@address" part
	// ("ui:alice" matches "ui:alice@192.0.2.1").
	Actor  string
	Group  string
	Result string
	// Since and Until bound the entries' time: Since <= time < Until.
	Since time.Time
	Until time.Time
	// Scope, if set, keeps only the entries a group-restricted user may
	// read (see AuditScope).
	Scope *AuditScope
}

// AuditScope is what a group-restricted user may read of the audit log:
// the entries of their groups and their own (whatever the group).
type AuditScope struct {
	Groups []string
	// Actor matches like AuditFilter.Actor; "" matches no one.
	Actor string
}

// ACMEStateStore is a bucketed key-value store holding the ACME gateway's
// state (accounts, orders, authorizations, challenges, certificates, EAB
// keys). Every value is sealed at rest. It maps onto smallstep's nosql.DB.
type ACMEStateStore interface {
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	Set(ctx context.Context, bucket, key string, value []byte) error
	Delete(ctx context.Context, bucket, key string) error
	// List returns every entry of the bucket, ordered by key.
	List(ctx context.Context, bucket string) ([]KV, error)
	// CompareAndSwap sets key to newValue only if its current value is
	// oldValue (nil oldValue: only if the key does not exist). It returns
	// the value found and whether it swapped.
	CompareAndSwap(ctx context.Context, bucket, key string, oldValue, newValue []byte) ([]byte, bool, error)
	// Take deletes key and reports whether it existed: of concurrent
	// Takes of one key, exactly one returns true.
	Take(ctx context.Context, bucket, key string) (bool, error)
	// Add stores key with value only if the bucket has no such key and
	// reports whether it did: of concurrent Adds of one key, on any node,
	// exactly one returns true (a nonce is used once). One statement.
	Add(ctx context.Context, bucket, key string, value []byte) (bool, error)
	// DeleteBelow removes the bucket's entries whose key sorts before
	// below (bytewise) and returns how many (time-prefixed keys expire
	// without reading their values).
	DeleteBelow(ctx context.Context, bucket, below string) (int, error)
	// DeleteBucket removes every entry of the bucket.
	DeleteBucket(ctx context.Context, bucket string) error
}

// KV is one key and value of an ACMEStateStore bucket.
type KV struct {
	Key   string
	Value []byte
}
