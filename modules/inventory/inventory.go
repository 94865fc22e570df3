// Package inventory keeps every certificate CertLocker issued or was given:
// it parses a PEM chain into metadata (names, issuer and the CA catalog
// entry it maps to, serial, validity, key, signature, fingerprints, ARI ID,
// revocation and AIA URLs, SCTs, must-staple, the chain and whether it
// verifies to a trusted root), rates it A+ to F with a per-factor
// breakdown, tracks expiry and renewal, and imports and exports
// certificates (PEM, full bundle, PKCS #12) under a key-export policy.
//
// It is a library the certlocker app holds, not a Caddy module. Every
// change and every export is written to the audit log.
package inventory

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Errors the service returns besides storage errors and *InputError.
var (
	// ErrKeyExportForbidden means the caller's role may not export
	// private keys (see Config.KeyExportRoles).
	ErrKeyExportForbidden = errors.New("exporting the private key is not allowed for this role")
	// ErrNoPrivateKey means the certificate was stored without its key.
	ErrNoPrivateKey = errors.New("the inventory holds no private key for this certificate")
)

// Role names who is acting, for the key export policy.
type Role string

// RoleAdmin is the role of the admin API on Caddy's admin endpoint.
const RoleAdmin Role = "admin"

// Config is the inventory's part of the app config
// (apps.certlocker.inventory).
type Config struct {
	// KeyExportRoles are the roles allowed to export a certificate's
	// private key (full PEM bundle or PKCS #12). Certificate chains
	// without the key may be exported by anyone who can reach the API.
	// The admin API on Caddy's admin endpoint acts as role "admin".
	// Default: ["admin"].
	KeyExportRoles []string `json:"key_export_roles,omitempty"`

	// DisableKeyExport refuses every private key export, whatever the
	// role. Default: false.
	DisableKeyExport bool `json:"disable_key_export,omitempty"`
}

var roleRe = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

// Validate checks the config.
func (c *Config) Validate() error {
	for i, r := range c.KeyExportRoles {
		if !roleRe.MatchString(r) {
			return fmt.Errorf("inventory.key_export_roles[%d]: %q is not a role name: use lowercase letters, digits, '.', '_' or '-'", i, r)
		}
	}
	return nil
}

// Options configure a Service. Only Store is required.
type Options struct {
	// Node is this node's ID, recorded in the audit log.
	Node   string
	Logger *zap.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// SystemRoots are the publicly trusted roots; default
	// x509.SystemCertPool().
	SystemRoots *x509.CertPool
	// ExtraRoots returns the custom roots of an ACME client (nil if it
	// has none). Default: the client's CustomRootsPEM from the store.
	ExtraRoots func(ctx context.Context, issuerID string) (*x509.CertPool, error)
	// MatchCA maps an issuer DN to a CA catalog entry; nil maps nothing.
	MatchCA func(pkix.Name) (catalogID string, ok bool)
	// Config is the key export policy.
	Config Config
}

// Service is the inventory. It is safe for concurrent use.
type Service struct {
	store      storage.Store
	node       string
	logger     *zap.Logger
	now        func() time.Time
	system     *x509.CertPool
	extraRoots func(ctx context.Context, issuerID string) (*x509.CertPool, error)
	// defaultRoots is set when extraRoots reads the store (issuerRoots).
	defaultRoots bool
	matchCA      func(pkix.Name) (string, bool)
	keyRoles     map[Role]bool
}

// New returns the inventory over st.
func New(st storage.Store, opts Options) (*Service, error) {
	if st == nil {
		return nil, errors.New("creating inventory: no store")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	s := &Service{store: st, node: opts.Node, logger: opts.Logger, now: opts.Now, system: opts.SystemRoots,
		extraRoots: opts.ExtraRoots, matchCA: opts.MatchCA, keyRoles: map[Role]bool{}}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.system == nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			s.logger.Warn("system roots unavailable: certificates will verify only to ACME clients' custom roots", zap.Error(err))
			pool = x509.NewCertPool()
		}
		s.system = pool
	}
	if s.extraRoots == nil {
		s.defaultRoots = true
		s.extraRoots = s.issuerRoots
	}
	roles := opts.Config.KeyExportRoles
	if len(roles) == 0 {
		roles = []string{string(RoleAdmin)}
	}
	if !opts.Config.DisableKeyExport {
		for _, r := range roles {
			s.keyRoles[Role(r)] = true
		}
	}
	return s, nil
}

// WithStore returns a copy of the service working on st, typically the
// transaction-bound store passed to Store.InTx, so that a caller's own
// writes and the inventory's commit together.
func (s *Service) WithStore(st storage.Store) *Service {
	c := &Service{}
	*c = *s
	c.store = st
	if c.defaultRoots {
		// read the ACME clients' roots through st too: a copy bound to a
		// transaction must not take a second connection from the pool
		c.extraRoots = c.issuerRoots
	}
	return c
}

// CanExportKeys reports whether role may export private keys.
func (s *Service) CanExportKeys(role Role) bool { return s.keyRoles[role] }

// issuerRoots reads the custom roots of an ACME client from the store.
func (s *Service) issuerRoots(ctx context.Context, issuerID string) (*x509.CertPool, error) {
	if issuerID == "" {
		return nil, nil
	}
	iss, err := s.store.Issuers().Get(ctx, issuerID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if iss.CustomRootsPEM == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(iss.CustomRootsPEM)) {
		return nil, fmt.Errorf("reading custom roots of ACME client %s: no certificate in them", issuerID)
	}
	return pool, nil
}

// audit appends an audit entry about certificate c through st. details
// must hold no secret; result "" is storage.AuditOK.
func (s *Service) audit(ctx context.Context, st storage.Store, actor, action string, c *storage.Certificate, result string, details []byte) error {
	return st.Audit().Append(ctx, &storage.AuditEntry{Node: s.node, Actor: actor, Action: action, Target: c.ID,
		Group: c.Group, Result: result, Details: details})
}
