// Package gateway holds certificate tokens and the ACME gateway: edge
// systems (HAProxy, win-acme, certbot, lego, Caddy, any RFC 8555 client)
// present a token to CertLocker's own ACME server, smallstep's, and pull a
// certificate for the token's names, which CertLocker obtains from the
// token's ACME client as a workflow of trigger "gateway".
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Token states.
const (
	StateActive  = "active"
	StateRevoked = "revoked"
	StateExpired = "expired"
)

// Defaults and bounds of a token.
const (
	DefaultMaxAccounts = 2
	MaxMaxAccounts     = 100
	DefaultMinRSABits  = 2048
	DefaultGrace       = 24 * time.Hour
	// DirectoryPath is the EAB directory of the gateway.
	DirectoryPath = "/rest/acme/directory"
	// TokenPathPrefix starts every per-token directory path.
	TokenPathPrefix = "/rest/acme/t/"

	macKeyBytes    = 32
	urlSecretBytes = 24 // 192 bits
	idPrefix       = "ctk"
)

// Curves an edge key may use.
var knownCurves = []string{"P-256", "P-384", "P-521"}

// InputError is a request the token service refuses, naming the field.
type InputError struct{ Field, Message string }

func (e *InputError) Error() string { return e.Message }

func inputErr(field, format string, args ...any) error {
	return &InputError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Service keeps certificate tokens. Every change is audited in the same
// transaction as the change.
type Service struct {
	store storage.Store
	node  string
	log   *zap.Logger
	clock func() time.Time
}

// NewService returns the token service over st.
func NewService(st storage.Store, node string, log *zap.Logger, clock func() time.Time) *Service {
	if log == nil {
		log = zap.NewNop()
	}
	if clock == nil {
		clock = time.Now
	}
	return &Service{store: st, node: node, log: log, clock: clock}
}

// ChallengeSetting is how one name of a token is validated upstream.
type ChallengeSetting struct {
	Challenge     string `json:"challenge,omitempty"`
	DNSProviderID string `json:"dns_provider_id,omitempty"`
}

// CreateRequest asks for a new token: from an inventory certificate
// (CertificateID: its names, ACME client and challenge settings become the
// scope), or directly (Names, IssuerID and challenge settings).
type CreateRequest struct {
	CertificateID string   `json:"certificate_id,omitempty"`
	Names         []string `json:"names,omitempty"`
	IssuerID      string   `json:"issuer_id,omitempty"`
	// Challenge and DNSProviderID apply to every name not in Challenges.
	Challenge     string                      `json:"challenge,omitempty"`
	DNSProviderID string                      `json:"dns_provider_id,omitempty"`
	Challenges    map[string]ChallengeSetting `json:"challenges,omitempty"`
	Name          string                      `json:"name,omitempty"`
	Description   string                      `json:"description,omitempty"`
	Group         string                      `json:"group,omitempty"`
	MaxAccounts   int                         `json:"max_accounts,omitempty"`
	MinRSABits    int                         `json:"min_rsa_bits,omitempty"`
	AllowedCurves []string                    `json:"allowed_curves,omitempty"`
	ExpiresAt     *time.Time                  `json:"expires_at,omitempty"`
	AllowBundle   bool                        `json:"allow_bundle,omitempty"`
}

// Credentials are a token's secrets, shown once: at creation and rotation.
type Credentials struct {
	EABKeyID      string `json:"eab_key_id"`
	EABHMACKey    string `json:"eab_hmac_key"`
	DirectoryPath string `json:"directory_path"`
}

// Create stores a new token and returns it with its credentials, the only
// time they are shown.
func (s *Service) Create(ctx context.Context, actor string, r CreateRequest) (*storage.Token, *Credentials, error) {
	t := &storage.Token{ID: storage.NewID(idPrefix), Type: storage.TokenTypeCertificate, Status: StateActive,
		Name: strings.TrimSpace(r.Name), Description: r.Description, Group: r.Group}
	if r.Group != "" && !storage.InScope(ctx, r.Group) {
		return nil, nil, inputErr("group", "group %q is not one of yours: choose one of your groups", r.Group)
	}
	if err := s.scopeFrom(ctx, &r, t); err != nil {
		return nil, nil, err
	}
	if err := applyLimits(t, r.MaxAccounts, r.MinRSABits, r.AllowedCurves); err != nil {
		return nil, nil, err
	}
	t.Spec.AllowBundle = r.AllowBundle
	if !storage.ValidGroup(t.Group) {
		return nil, nil, inputErr("group", "group must be %s", storage.GroupRule)
	}
	if !storage.InScope(ctx, t.Group) {
		return nil, nil, inputErr("group", "group %q is not one of yours: choose one of your groups", t.Group)
	}
	if r.ExpiresAt != nil {
		if !r.ExpiresAt.After(s.clock()) {
			return nil, nil, inputErr("expires_at", "expires_at must be in the future")
		}
		t.ExpiresAt = *r.ExpiresAt
	}
	creds, err := newSecrets(t)
	if err != nil {
		return nil, nil, err
	}
	err = s.store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Tokens().Create(ctx, t); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "token.create", t.ID, map[string]any{"names": t.Names, "issuer_id": t.Spec.IssuerID,
			"certificate_id": t.CertificateID, "group": t.Group})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("creating token: %w", err)
	}
	s.log.Info("token created", zap.String("token_id", t.ID), zap.Strings("identifiers", t.Names), zap.String("actor", actor))
	return t, creds, nil
}

// scopeFrom fills the token's names, ACME client and identifiers from the
// request, validating them with the workflow engine's own rules.
func (s *Service) scopeFrom(ctx context.Context, r *CreateRequest, t *storage.Token) error {
	var ids []storage.Identifier
	issuerID := r.IssuerID
	if r.CertificateID != "" {
		if len(r.Names) > 0 {
			return inputErr("names", "give certificate_id or names, not both")
		}
		c, err := s.store.Certificates().Get(ctx, r.CertificateID)
		if err == nil {
			err = storage.CheckScope(ctx, c.Group, "certificate "+c.ID)
		}
		if errors.Is(err, storage.ErrNotFound) {
			return inputErr("certificate_id", "no certificate %s", r.CertificateID)
		}
		if err != nil {
			return err
		}
		t.CertificateID = c.ID
		if issuerID == "" {
			issuerID = c.IssuerID
		}
		if t.Group == "" {
			t.Group = c.Group
		}
		// the challenge settings of the workflow that issued it
		settings := map[string]storage.Identifier{}
		if c.WorkflowID != "" {
			if w, err := s.store.Workflows().Get(ctx, c.WorkflowID); err == nil {
				for _, id := range w.Identifiers {
					settings[id.Value] = id
				}
			}
		}
		for _, n := range c.Names {
			id := storage.Identifier{Value: n}
			if st, ok := settings[n]; ok {
				id = st
			}
			ids = append(ids, id)
		}
		if issuerID == "" {
			return inputErr("issuer_id", "certificate %s was not issued by an ACME client here: give issuer_id", c.ID)
		}
	} else {
		if len(r.Names) == 0 {
			return inputErr("names", "give certificate_id, or names with issuer_id")
		}
		for i, n := range r.Names {
			nn, err := NormalizeName(n)
			if err != nil {
				return inputErr(fmt.Sprintf("names[%d]", i), "names[%d]: %v", i, err)
			}
			id := storage.Identifier{Value: nn, Challenge: r.Challenge, DNSProviderID: r.DNSProviderID}
			if cs, ok := r.Challenges[n]; ok {
				id.Challenge, id.DNSProviderID = cs.Challenge, cs.DNSProviderID
			} else if cs, ok := r.Challenges[nn]; ok {
				id.Challenge, id.DNSProviderID = cs.Challenge, cs.DNSProviderID
			}
			ids = append(ids, id)
		}
		for k := range r.Challenges {
			if !slices.Contains(r.Names, k) {
				if nk, err := NormalizeName(k); err != nil || !slices.ContainsFunc(ids, func(id storage.Identifier) bool { return id.Value == nk }) {
					return inputErr("challenges", "challenges names %q, which is not among names", k)
				}
			}
		}
	}
	if issuerID == "" {
		return inputErr("issuer_id", "issuer_id is required")
	}
	iss, err := s.store.Issuers().Get(ctx, issuerID)
	if err == nil {
		err = storage.CheckScope(ctx, iss.Group, "ACME client "+issuerID)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return inputErr("issuer_id", "no ACME client %s", issuerID)
	} else if err != nil {
		return err
	}
	// a DNS provider of another group must not answer for this token
	for i, id := range ids {
		if id.DNSProviderID == "" {
			continue
		}
		p, err := s.store.DNSProviders().Get(ctx, id.DNSProviderID)
		if err == nil {
			err = storage.CheckScope(ctx, p.Group, "DNS provider "+id.DNSProviderID)
		}
		if errors.Is(err, storage.ErrNotFound) {
			return inputErr(fmt.Sprintf("names[%d]", i), "no DNS provider %s", id.DNSProviderID)
		} else if err != nil {
			return err
		}
	}
	// one rule for names and challenges: the workflow engine's
	wr := workflow.Request{IssuerID: issuerID, Identifiers: ids, Trigger: workflow.TriggerGateway}
	if err := wr.Validate(); err != nil {
		var ie *workflow.InvalidError
		if errors.As(err, &ie) {
			return inputErr(strings.Replace(ie.Field, "identifiers", "names", 1), "%s", strings.ReplaceAll(ie.Message, "identifiers", "names"))
		}
		return err
	}
	t.Spec.IssuerID = issuerID
	t.Spec.Identifiers = wr.Identifiers
	t.Names = make([]string, 0, len(wr.Identifiers))
	for _, id := range wr.Identifiers {
		t.Names = append(t.Names, id.Value)
	}
	return nil
}

// applyLimits sets the token's account limit and key constraints,
// defaulting zero values.
func applyLimits(t *storage.Token, maxAccounts, minRSA int, curves []string) error {
	switch {
	case maxAccounts == 0:
		maxAccounts = DefaultMaxAccounts
	case maxAccounts < 1 || maxAccounts > MaxMaxAccounts:
		return inputErr("max_accounts", "max_accounts must be between 1 and %d", MaxMaxAccounts)
	}
	switch {
	case minRSA == 0:
		minRSA = DefaultMinRSABits
	case minRSA < 2048 || minRSA > 8192:
		return inputErr("min_rsa_bits", "min_rsa_bits must be between 2048 and 8192")
	}
	for i, c := range curves {
		if !slices.Contains(knownCurves, c) {
			return inputErr(fmt.Sprintf("allowed_curves[%d]", i), "allowed_curves[%d]: %q is not one of %s", i, c, strings.Join(knownCurves, ", "))
		}
	}
	t.Spec.MaxAccounts, t.Spec.MinRSABits, t.Spec.AllowedCurves = maxAccounts, minRSA, curves
	return nil
}

// newSecrets gives t a new EAB MAC key and URL secret.
func newSecrets(t *storage.Token) (*Credentials, error) {
	mac := make([]byte, macKeyBytes)
	urlRaw := make([]byte, urlSecretBytes)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("generating token secret: %w", err)
	}
	if _, err := rand.Read(urlRaw); err != nil {
		return nil, fmt.Errorf("generating token secret: %w", err)
	}
	urlSecret := base64.RawURLEncoding.EncodeToString(urlRaw)
	t.Secret = storage.NewSecret(mac)
	t.URLSecret = storage.NewSecret([]byte(urlSecret))
	t.URLHash = URLHash(urlSecret)
	return &Credentials{EABKeyID: t.ID, EABHMACKey: base64.RawURLEncoding.EncodeToString(mac),
		DirectoryPath: TokenPathPrefix + urlSecret + "/directory"}, nil
}

// URLHash is the SHA-256 (hex) of a URL secret, by which its token is found.
func URLHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// State is the token's state now: active, revoked or expired.
func State(t *storage.Token, now time.Time) string {
	if t.Status == StateRevoked {
		return StateRevoked
	}
	if !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) {
		return StateExpired
	}
	return StateActive
}

// Get returns a token.
// A caller restricted to some groups (storage.WithGroups) sees only tokens
// of those groups; others answer not found.
func (s *Service) Get(ctx context.Context, id string) (*storage.Token, error) {
	t, err := s.store.Tokens().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := storage.CheckScope(ctx, t.Group, "token "+id); err != nil {
		return nil, err
	}
	return t, nil
}

// ListFilter selects tokens.
type ListFilter struct {
	CertificateID, Group, State string
}

// List returns the tokens matching f (State as State computes it).
func (s *Service) List(ctx context.Context, f ListFilter) ([]*storage.Token, error) {
	sf := storage.TokenFilter{CertificateID: f.CertificateID, Group: f.Group}
	switch f.State {
	case "":
	case StateRevoked:
		sf.Status = StateRevoked
	case StateActive, StateExpired:
		sf.Status = StateActive
	default:
		return nil, inputErr("state", "unknown state %q: use active, revoked or expired", f.State)
	}
	if !storage.ValidGroup(f.Group) {
		return nil, inputErr("group", "group must be %s", storage.GroupRule)
	}
	group, ok := storage.NarrowGroup(ctx, sf.Group)
	if !ok {
		return nil, nil
	}
	sf.Group = group
	list, err := s.store.Tokens().List(ctx, sf)
	if err != nil {
		return nil, err
	}
	list = storage.FilterScope(ctx, list, func(t *storage.Token) string { return t.Group })
	now := s.clock()
	out := list[:0]
	for _, t := range list {
		if f.State == "" || State(t, now) == f.State {
			out = append(out, t)
		}
	}
	return out, nil
}

// UpdateRequest changes a token's description and limits; nil fields
// stay. Names and ACME client do not change: make a new token.
type UpdateRequest struct {
	Name          *string    `json:"name,omitempty"`
	Description   *string    `json:"description,omitempty"`
	Group         *string    `json:"group,omitempty"`
	MaxAccounts   *int       `json:"max_accounts,omitempty"`
	MinRSABits    *int       `json:"min_rsa_bits,omitempty"`
	AllowedCurves *[]string  `json:"allowed_curves,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	AllowBundle   *bool      `json:"allow_bundle,omitempty"`
}

// Update applies r to the token.
func (s *Service) Update(ctx context.Context, actor, id string, r UpdateRequest) (*storage.Token, error) {
	return s.change(ctx, actor, id, "token.update", func(t *storage.Token) error {
		if r.Name != nil {
			t.Name = strings.TrimSpace(*r.Name)
		}
		if r.Description != nil {
			t.Description = *r.Description
		}
		if r.Group != nil {
			if !storage.ValidGroup(*r.Group) {
				return inputErr("group", "group must be %s", storage.GroupRule)
			}
			if !storage.InScope(ctx, *r.Group) {
				return inputErr("group", "group %q is not one of yours: choose one of your groups", *r.Group)
			}
			t.Group = *r.Group
		}
		maxA, minRSA, curves := t.Spec.MaxAccounts, t.Spec.MinRSABits, t.Spec.AllowedCurves
		if r.MaxAccounts != nil {
			if maxA = *r.MaxAccounts; maxA == 0 {
				return inputErr("max_accounts", "max_accounts must be between 1 and %d", MaxMaxAccounts)
			}
		}
		if r.MinRSABits != nil {
			if minRSA = *r.MinRSABits; minRSA == 0 {
				return inputErr("min_rsa_bits", "min_rsa_bits must be between 2048 and 8192")
			}
		}
		if r.AllowedCurves != nil {
			curves = *r.AllowedCurves
		}
		if err := applyLimits(t, maxA, minRSA, curves); err != nil {
			return err
		}
		if r.ExpiresAt != nil {
			if !r.ExpiresAt.IsZero() && !r.ExpiresAt.After(s.clock()) {
				return inputErr("expires_at", "expires_at must be in the future")
			}
			t.ExpiresAt = *r.ExpiresAt
		}
		if r.AllowBundle != nil {
			t.Spec.AllowBundle = *r.AllowBundle
		}
		return nil
	}, nil)
}

// Rotate gives the token new secrets; the old ones stay valid for grace
// (0: not at all). It returns the new credentials, shown once.
func (s *Service) Rotate(ctx context.Context, actor, id string, grace time.Duration) (*storage.Token, *Credentials, error) {
	if grace < 0 {
		return nil, nil, inputErr("grace", "grace must not be negative")
	}
	var creds *Credentials
	t, err := s.change(ctx, actor, id, "token.rotate", func(t *storage.Token) error {
		if State(t, s.clock()) == StateRevoked {
			return inputErr("state", "token %s is revoked", t.ID)
		}
		t.PreviousSecret, t.PreviousURLHash, t.GraceUntil = storage.Secret{}, "", time.Time{}
		if grace > 0 {
			t.PreviousSecret, t.PreviousURLHash, t.GraceUntil = t.Secret, t.URLHash, s.clock().Add(grace)
		}
		var err error
		creds, err = newSecrets(t)
		return err
	}, map[string]any{"grace": grace.String()})
	if err != nil {
		return nil, nil, err
	}
	return t, creds, nil
}

// Revoke stops the token at once: no new account, order or finalize.
func (s *Service) Revoke(ctx context.Context, actor, id string) (*storage.Token, error) {
	return s.change(ctx, actor, id, "token.revoke", func(t *storage.Token) error {
		if t.Status == StateRevoked {
			return inputErr("state", "token %s is already revoked", t.ID)
		}
		t.Status, t.RevokedAt = StateRevoked, s.clock()
		t.PreviousSecret, t.PreviousURLHash, t.GraceUntil = storage.Secret{}, "", time.Time{}
		return nil
	}, nil)
}

// Delete removes the token and its account bindings.
func (s *Service) Delete(ctx context.Context, actor, id string) error {
	if _, err := s.Get(ctx, id); err != nil {
		return err
	}
	return s.store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Tokens().Delete(ctx, id); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "token.delete", id, nil)
	})
}

// Accounts lists the ACME accounts bound to the token.
func (s *Service) Accounts(ctx context.Context, id string) ([]*storage.TokenAccount, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return nil, err
	}
	return s.store.Tokens().Accounts(ctx, id)
}

// change applies fn to the latest version of the token, retrying on
// concurrent changes, with the audit entry in the same transaction.
func (s *Service) change(ctx context.Context, actor, id, action string, fn func(*storage.Token) error, details map[string]any) (*storage.Token, error) {
	for attempt := 0; attempt < 10; attempt++ {
		t, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(t); err != nil {
			return nil, err
		}
		err = s.store.InTx(ctx, func(tx storage.Store) error {
			if err := tx.Tokens().Update(ctx, t); err != nil {
				return err
			}
			return s.audit(ctx, tx, actor, action, t.ID, details)
		})
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("token changed", zap.String("token_id", t.ID), zap.String("action", action), zap.String("actor", actor))
		return t, nil
	}
	return nil, fmt.Errorf("changing token %s: %w", id, storage.ErrConflict)
}

func (s *Service) audit(ctx context.Context, st storage.Store, actor, action, target string, details map[string]any) error {
	var raw json.RawMessage
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return err
		}
		raw = b
	}
	return st.Audit().Append(ctx, &storage.AuditEntry{Node: s.node, Actor: actor, Action: action, Target: target, Details: raw})
}

// MACKeys returns the EAB MAC keys that authenticate the token now: its
// current key, and the previous one during a rotation's grace. Nothing for
// a token that is not active.
func MACKeys(t *storage.Token, now time.Time) [][]byte {
	if State(t, now) != StateActive {
		return nil
	}
	keys := [][]byte{t.Secret.Reveal()}
	if !t.PreviousSecret.IsZero() && now.Before(t.GraceUntil) {
		keys = append(keys, t.PreviousSecret.Reveal())
	}
	return keys
}

// ByURLSecret returns the active token whose directory URL carries secret
// (current, or previous during a rotation's grace), comparing in constant
// time; storage.ErrNotFound for anything else.
func (s *Service) ByURLSecret(ctx context.Context, secret string) (*storage.Token, error) {
	if len(secret) < 16 || len(secret) > 128 {
		return nil, fmt.Errorf("finding token by URL: %w", storage.ErrNotFound)
	}
	h := URLHash(secret)
	t, err := s.store.Tokens().GetByURLHash(ctx, h)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	if State(t, now) != StateActive {
		return nil, fmt.Errorf("finding token by URL: %w", storage.ErrNotFound)
	}
	if subtle.ConstantTimeCompare(t.URLSecret.Reveal(), []byte(secret)) == 1 {
		return t, nil
	}
	if t.PreviousURLHash != "" && now.Before(t.GraceUntil) && subtle.ConstantTimeCompare([]byte(t.PreviousURLHash), []byte(h)) == 1 {
		return t, nil
	}
	return nil, fmt.Errorf("finding token by URL: %w", storage.ErrNotFound)
}
