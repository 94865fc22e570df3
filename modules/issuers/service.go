// Package issuers is CertLocker's issuer registry: the built-in catalog of
// ACME CAs and the ACME clients (one account at one CA directory each) that
// workflows order certificates through.
//
// A Service owns the issuer records in the store. Creating an issuer
// registers its account with the CA (with external account binding when
// the CA requires it) before anything is saved, so a refused or unreachable
// CA leaves nothing behind. An issuer declared in the config registers on
// first use: its new account key is stored (status registering) before the
// CA sees it, and registrations of one issuer are serialized across
// goroutines and nodes, so neither a crash nor a race loses the key of the
// account the CA created. Account keys and EAB MAC keys are storage.Secret
// values: sealed at rest, never logged, never returned.
//
// The workflow engine gets a ready ACME client and account with
// Service.Client. Certificates are mapped back to the catalog with
// MatchIssuer.
package issuers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Issuer statuses.
const (
	// StatusUnregistered: declared (in config) but no account at the CA yet;
	// the account is registered on first use or by the test action.
	StatusUnregistered = "unregistered"
	// StatusRegistering: a new account key is stored and the account is
	// being registered with it; an interrupted registration resumes with
	// that key on next use.
	StatusRegistering = "registering"
	// StatusValid: the account exists at the CA and answers.
	StatusValid = "valid"
	// StatusDeactivated: the account was deactivated; it cannot be used
	// again.
	StatusDeactivated = "deactivated"
	// StatusError: the last attempt to use the account failed; see the
	// issuer's last message.
	StatusError = "error"
)

// Service manages issuers. It is safe for concurrent use; several nodes
// may run one each against a shared store.
type Service struct {
	store     storage.Store
	logger    *zap.Logger
	node      string
	base      *http.Client
	userAgent string
	now       func() time.Time

	mu      sync.Mutex
	clients map[[32]byte]*http.Client // by custom roots digest
	// declaredTerms records, per config-declared issuer name, whether the
	// config agrees to the CA's terms (used when it registers later).
	declaredTerms map[string]bool
	// regLocks serializes registrations of one issuer (by ID) in this
	// process; across nodes the record's version does.
	regLocks map[string]*regLock
}

// regLock is one issuer's registration lock: a one-slot channel, so that
// waiting for it honours context cancellation.
type regLock struct {
	ch   chan struct{}
	refs int
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger. Default: no logs.
func WithLogger(l *zap.Logger) Option { return func(s *Service) { s.logger = l } }

// WithNode sets the node ID written to the audit log.
func WithNode(id string) Option { return func(s *Service) { s.node = id } }

// WithHTTPClient sets the HTTP client used to reach CAs. An issuer with
// custom roots gets a copy of its transport trusting the system roots plus
// its own. Default: a client on a clone of http.DefaultTransport with a
// 60-second timeout.
func WithHTTPClient(c *http.Client) Option { return func(s *Service) { s.base = c } }

// WithUserAgent sets the User-Agent sent to CAs.
func WithUserAgent(ua string) Option { return func(s *Service) { s.userAgent = ua } }

// WithClock sets the clock that stamps registration, rollover and check
// times. Default: time.Now.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// New returns a Service over store.
func New(store storage.Store, opts ...Option) *Service {
	s := &Service{store: store, clients: map[[32]byte]*http.Client{}, declaredTerms: map[string]bool{},
		regLocks: map[string]*regLock{}}
	for _, o := range opts {
		o(s)
	}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	if s.base == nil {
		s.base = &http.Client{Transport: defaultCATransport(), Timeout: 60 * time.Second}
	}
	if s.userAgent == "" {
		s.userAgent = "CertLocker"
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// save updates iss and appends its audit entry in one transaction.
func (s *Service) save(ctx context.Context, actor, action string, iss *storage.Issuer, details map[string]any) error {
	return s.store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Issuers().Update(ctx, iss); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, action, iss, details)
	})
}

func (s *Service) audit(ctx context.Context, tx storage.Store, actor, action string, iss *storage.Issuer, details map[string]any) error {
	if details == nil {
		details = map[string]any{}
	}
	details["name"] = iss.Name
	b, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("encoding audit details: %w", err)
	}
	return tx.Audit().Append(ctx, &storage.AuditEntry{Node: s.node, Actor: actor, Action: action, Target: iss.ID,
		Group: iss.Group, Details: b})
}

// idleConnsPerCA is how many idle connections to one CA are kept for
// reuse: as many as the workflow engine runs orders on one ACME client at
// once (its default per-issuer concurrency), instead of net/http's 2, so
// concurrent orders do not each open a new TLS connection.
const idleConnsPerCA = 16

// defaultCATransport is net/http's default transport keeping idleConnsPerCA idle
// connections per CA.
func defaultCATransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = idleConnsPerCA
	return tr
}
