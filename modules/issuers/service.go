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
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3/acme"
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
		s.base = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 60 * time.Second}
	}
	if s.userAgent == "" {
		s.userAgent = "CertLocker"
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Spec is what an operator gives to create an issuer.
type Spec struct {
	Name string
	// CatalogID picks the CA from the catalog; "custom" (or empty with a
	// DirectoryURL) for any RFC 8555 directory.
	CatalogID string
	// DirectoryURL is the directory of a custom issuer, or overrides a
	// catalog entry's (a regional endpoint).
	DirectoryURL string
	// DirectoryParams fill a templated catalog URL (HARICA's {account}).
	DirectoryParams map[string]string
	// Contacts are email addresses, with or without "mailto:".
	Contacts       []string
	EABKeyID       string
	EABMACKey      storage.Secret
	AccountKeyType string
	Profile        string
	PreferredChain string
	CustomRootsPEM string
	Group          string
	// AgreeTerms agrees to the CA's terms of service; required when the
	// directory publishes terms.
	AgreeTerms bool
}

// draft is a checked Spec, ready to register or store.
type draft struct {
	iss   *storage.Issuer
	entry CatalogEntry
	agree bool
}

var (
	nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// check validates spec without contacting the CA.
func (s *Service) check(spec Spec) (*draft, error) {
	if !nameRe.MatchString(spec.Name) {
		return nil, invalid("name", "name must be 1 to 63 letters, digits, dots, dashes or underscores, starting with a letter or digit")
	}
	if !storage.ValidGroup(spec.Group) {
		return nil, invalid("group", "group must be "+storage.GroupRule)
	}
	catalogID := spec.CatalogID
	if catalogID == "" {
		if spec.DirectoryURL == "" {
			return nil, invalid("catalog_id", "give catalog_id (GET /certlocker/catalog lists them) or directory_url for a custom directory")
		}
		catalogID = CustomCatalogID
	}
	entry, ok := LookupCatalog(catalogID)
	if !ok {
		return nil, invalid("catalog_id", "unknown catalog_id %q: GET /certlocker/catalog lists the CAs", catalogID)
	}
	if entry.Retired {
		return nil, invalid("catalog_id", "%s is retired and takes no new issuers: %s", entry.Name, entry.Warning)
	}
	dirURL := spec.DirectoryURL
	if dirURL == "" {
		if entry.ID == CustomCatalogID {
			return nil, invalid("directory_url", "a custom issuer needs directory_url, the https URL of an RFC 8555 ACME directory")
		}
		u, err := entry.resolveURL(spec.DirectoryParams)
		if err != nil {
			return nil, invalid("directory_params", "%v", err)
		}
		dirURL = u
	} else if len(spec.DirectoryParams) > 0 {
		return nil, invalid("directory_params", "directory_params fill a catalog URL template; they cannot be combined with directory_url")
	}
	if err := checkDirectoryURL(dirURL); err != nil {
		return nil, err
	}
	contacts, err := normalizeContacts(spec.Contacts)
	if err != nil {
		return nil, err
	}
	keyType := spec.AccountKeyType
	if keyType == "" {
		keyType = DefaultKeyType
	}
	if !slices.Contains(KeyTypes, keyType) {
		return nil, invalid("account_key_type", "account_key_type %q is not supported: use one of %s", keyType, strings.Join(KeyTypes, ", "))
	}
	eabKID := strings.TrimSpace(spec.EABKeyID)
	mac, err := normalizeMAC(spec.EABMACKey)
	if err != nil {
		return nil, err
	}
	switch {
	case eabKID != "" && mac.IsZero():
		return nil, invalid("eab_mac_key", "eab_key_id is set but eab_mac_key is missing: external account binding needs both")
	case eabKID == "" && !mac.IsZero():
		return nil, invalid("eab_key_id", "eab_mac_key is set but eab_key_id is missing: external account binding needs both")
	case eabKID == "" && entry.EAB == EABRequired:
		return nil, invalid("eab_key_id", "%s requires external account binding: set eab_key_id and eab_mac_key. %s", entry.Name, strings.Join(entry.Setup, " "))
	}
	if spec.CustomRootsPEM != "" {
		if _, err := parseRoots(spec.CustomRootsPEM); err != nil {
			return nil, err
		}
	}
	if len(spec.Profile) > 128 || len(spec.PreferredChain) > 256 {
		return nil, invalid("profile", "profile or preferred_chain is too long")
	}
	return &draft{entry: entry, agree: spec.AgreeTerms, iss: &storage.Issuer{
		Name: spec.Name, CatalogID: entry.ID, DirectoryURL: dirURL, Contacts: contacts,
		EABKeyID: eabKID, EABMACKey: mac, AccountKeyType: keyType, Profile: spec.Profile,
		PreferredChain: spec.PreferredChain, CustomRootsPEM: strings.TrimSpace(spec.CustomRootsPEM), Group: spec.Group,
		Status: StatusUnregistered,
	}}, nil
}

func checkDirectoryURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return invalid("directory_url", "directory_url is not a URL: %v", err)
	case u.Scheme != "https":
		return invalid("directory_url", "directory_url must be an https URL (RFC 8555 requires TLS), not %q", s)
	case u.Host == "" || u.Hostname() == "":
		return invalid("directory_url", "directory_url %q has no host", s)
	case u.User != nil:
		return invalid("directory_url", "directory_url must not contain user information")
	case u.Fragment != "":
		return invalid("directory_url", "directory_url must not contain a fragment")
	}
	return nil
}

func normalizeContacts(in []string) ([]string, error) {
	var out []string
	for _, c := range in {
		c = strings.TrimSpace(c)
		addr := strings.TrimPrefix(c, "mailto:")
		if strings.Contains(addr, ":") && !strings.Contains(addr, "@") {
			return nil, invalid("contacts", "contact %q: only email addresses (mailto:) are supported", c)
		}
		a, err := mail.ParseAddress(addr)
		if err != nil || a.Address != addr || a.Name != "" {
			return nil, invalid("contacts", "contact %q is not an email address", c)
		}
		m := "mailto:" + addr
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// normalizeMAC accepts the MAC key as CAs hand it out: base64url with or
// without padding, or standard base64, and returns it as unpadded base64url.
func normalizeMAC(mac storage.Secret) (storage.Secret, error) {
	s := strings.TrimSpace(string(mac.Reveal()))
	if s == "" {
		return storage.Secret{}, nil
	}
	s = strings.NewReplacer("+", "-", "/", "_").Replace(strings.TrimRight(s, "="))
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return storage.Secret{}, invalid("eab_mac_key", "eab_mac_key is not base64url, as CAs issue it (value not shown)")
	}
	return storage.NewSecret([]byte(s)), nil
}

func parseRoots(pemText string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(pemText)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, invalid("custom_roots_pem", "custom_roots_pem holds a %s block; give only CERTIFICATE blocks", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, invalid("custom_roots_pem", "custom_roots_pem: parsing certificate: %v", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, invalid("custom_roots_pem", "custom_roots_pem holds no PEM certificate")
	}
	return certs, nil
}

// httpClient returns the HTTP client for an issuer: the base client, or one
// whose transport also trusts the issuer's custom roots.
func (s *Service) httpClient(rootsPEM string) (*http.Client, error) {
	if rootsPEM == "" {
		return s.base, nil
	}
	key := sha256.Sum256([]byte(rootsPEM))
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[key]; ok {
		return c, nil
	}
	certs, err := parseRoots(rootsPEM)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	var tr *http.Transport
	switch t := s.base.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("using custom roots: they need an *http.Transport, the HTTP client has a %T", t)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	tr.TLSClientConfig.RootCAs = pool
	c := &http.Client{Transport: tr, Timeout: s.base.Timeout}
	s.clients[key] = c
	return c, nil
}

// directory reads the issuer's directory meta, as an Error on failure.
func (s *Service) directory(ctx context.Context, iss *storage.Issuer) (DirectoryMeta, error) {
	hc, err := s.httpClient(iss.CustomRootsPEM)
	if err != nil {
		return DirectoryMeta{}, err
	}
	m, err := fetchDirectory(ctx, hc, iss.DirectoryURL, s.userAgent)
	if err != nil {
		return m, &Error{Kind: KindUnusable, Field: "directory_url",
			Message: fmt.Sprintf("the directory %s cannot be used: %v%s", iss.DirectoryURL, err, tlsHint(err))}
	}
	return m, nil
}

// acmeClient builds the low-level ACME client of an issuer.
func (s *Service) acmeClient(iss *storage.Issuer) (*acme.Client, error) {
	hc, err := s.httpClient(iss.CustomRootsPEM)
	if err != nil {
		return nil, err
	}
	return &acme.Client{Directory: iss.DirectoryURL, HTTPClient: hc, UserAgent: s.userAgent}, nil
}

// checkAgainstMeta checks what only the directory can tell: EAB, profiles
// and terms.
func checkAgainstMeta(iss *storage.Issuer, m DirectoryMeta, agree bool) error {
	if m.ExternalAccountRequired && iss.EABKeyID == "" {
		return invalid("eab_key_id", "the CA at %s requires external account binding: set eab_key_id and eab_mac_key", iss.DirectoryURL)
	}
	if iss.Profile != "" {
		if len(m.Profiles) == 0 {
			return invalid("profile", "the CA offers no certificate profiles; leave profile empty")
		}
		if _, ok := m.Profiles[iss.Profile]; !ok {
			return invalid("profile", "the CA offers no profile %q; it offers %s", iss.Profile, strings.Join(m.ProfileNames(), ", "))
		}
	}
	if m.TermsOfService != "" && !agree {
		return invalid("agree_terms", "the CA's terms of service must be agreed to: read %s and set agree_terms to true", m.TermsOfService)
	}
	return nil
}

// register creates (or finds, for a key the CA already knows) the account
// at the CA and fills the issuer's account fields. It signs with the
// issuer's stored key when that has the right type. Otherwise it generates
// a new key, puts it in iss.AccountKey and, before the CA sees it, hands
// iss to stash to store it, so the key the CA accepts is always the one
// that is stored; stash is nil when nothing is stored yet (Create). An
// error from stash is returned as is. register saves nothing else.
func (s *Service) register(ctx context.Context, iss *storage.Issuer, agree bool, stash func(*storage.Issuer) error) error {
	m, err := s.directory(ctx, iss)
	if err != nil {
		return err
	}
	if err := checkAgainstMeta(iss, m, agree); err != nil {
		return err
	}
	var key crypto.Signer
	keyPEM := iss.AccountKey.Reveal()
	if len(keyPEM) > 0 {
		if key, err = parseKey(keyPEM); err != nil {
			return err
		}
		if keyTypeOf(key) != iss.AccountKeyType {
			key = nil
		}
	}
	if key == nil {
		if key, keyPEM, err = generateKey(iss.AccountKeyType); err != nil {
			return err
		}
		iss.AccountKey = storage.NewSecret(keyPEM)
		if stash != nil {
			if err := stash(iss); err != nil {
				return err
			}
		}
	}
	client, err := s.acmeClient(iss)
	if err != nil {
		return err
	}
	acct := acme.Account{Contact: iss.Contacts, TermsOfServiceAgreed: agree || m.TermsOfService == "", PrivateKey: key}
	if iss.EABKeyID != "" {
		if err := acct.SetExternalAccountBinding(ctx, client, acme.EAB{KeyID: iss.EABKeyID, MACKey: string(iss.EABMACKey.Reveal())}); err != nil {
			return caError("binding the external account", err)
		}
	}
	acct, err = client.NewAccount(ctx, acct)
	if err != nil {
		return caError("the new account", err)
	}
	if acct.Location == "" {
		return &Error{Kind: KindUnusable, Message: "the CA created the account but sent no account URL (Location)"}
	}
	if !slices.Equal(acct.Contact, iss.Contacts) && len(iss.Contacts) > 0 {
		// an existing account (same key) keeps its old contacts until updated
		acct.Contact = iss.Contacts
		if _, err := client.UpdateAccount(ctx, acct); err != nil {
			return caError("the contact update", err)
		}
	}
	now := s.now().UTC()
	metaJSON, _ := json.Marshal(m)
	iss.AccountURL = acct.Location
	iss.Status = StatusValid
	iss.LastMessage = "account registered"
	iss.Meta = metaJSON
	iss.MetaRefreshedAt, iss.RegisteredAt, iss.CheckedAt = now, now, now
	if m.TermsOfService != "" {
		iss.TermsAgreed, iss.TermsAgreedAt = m.TermsOfService, now
	}
	return nil
}

// Create checks spec, registers the account at the CA, and stores the
// issuer. If anything fails, nothing is stored.
func (s *Service) Create(ctx context.Context, actor string, spec Spec) (*storage.Issuer, error) {
	d, err := s.check(spec)
	if err != nil {
		return nil, err
	}
	if err := s.nameFree(ctx, d.iss.Name); err != nil {
		return nil, err
	}
	iss := d.iss
	iss.ManagedBy = storage.ManagedByAPI
	if err := s.register(ctx, iss, d.agree, nil); err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Issuers().Create(ctx, iss); err != nil {
			if errors.Is(err, storage.ErrDuplicate) {
				return &Error{Kind: KindConflict, Field: "name", Message: fmt.Sprintf("an issuer named %q already exists", iss.Name)}
			}
			return err
		}
		return s.audit(ctx, tx, actor, "issuer.create", iss, map[string]any{"catalog_id": iss.CatalogID,
			"directory_url": iss.DirectoryURL, "account_url": iss.AccountURL, "eab": iss.EABKeyID != "",
			"account_key_type": iss.AccountKeyType, "terms_agreed": iss.TermsAgreed})
	})
	if err != nil {
		s.logger.Warn("account registered but the issuer was not saved; the CA account stays unused",
			zap.String("issuer", iss.Name), zap.String("ca", iss.DirectoryURL), zap.String("account_url", iss.AccountURL), zap.Error(err))
		return nil, err
	}
	s.logger.Info("issuer created", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID),
		zap.String("ca", iss.DirectoryURL), zap.String("account_url", iss.AccountURL))
	return iss, nil
}

func (s *Service) nameFree(ctx context.Context, name string) error {
	_, err := s.store.Issuers().GetByName(ctx, name)
	switch {
	case err == nil:
		return &Error{Kind: KindConflict, Field: "name", Message: fmt.Sprintf("an issuer named %q already exists", name)}
	case errors.Is(err, storage.ErrNotFound):
		return nil
	}
	return err
}

// Get returns one issuer.
func (s *Service) Get(ctx context.Context, id string) (*storage.Issuer, error) {
	return s.store.Issuers().Get(ctx, id)
}

// List returns the issuers matching f, by name.
func (s *Service) List(ctx context.Context, f storage.IssuerFilter) ([]*storage.Issuer, error) {
	return s.store.Issuers().List(ctx, f)
}

// Patch changes an issuer's editable fields; nil fields stay as they are.
// The directory, EAB credentials and key type belong to the account and
// cannot change: create a new issuer for a new account.
type Patch struct {
	Name           *string
	Contacts       *[]string
	Profile        *string
	PreferredChain *string
	Group          *string
	CustomRootsPEM *string
	// Version, when non-zero, must be the stored version.
	Version int64
}

// Update applies p. Changed contacts are sent to the CA first; if it
// refuses, nothing changes.
func (s *Service) Update(ctx context.Context, actor, id string, p Patch) (*storage.Issuer, error) {
	iss, err := s.store.Issuers().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if iss.ManagedBy == storage.ManagedByConfig {
		return nil, readOnly(iss)
	}
	if p.Version != 0 && p.Version != iss.Version {
		return nil, &Error{Kind: KindConflict, Field: "version", Message: fmt.Sprintf("issuer %s changed since version %d (now %d): read it again", iss.Name, p.Version, iss.Version)}
	}
	var changed []string
	if p.Name != nil && *p.Name != iss.Name {
		if !nameRe.MatchString(*p.Name) {
			return nil, invalid("name", "name must be 1 to 63 letters, digits, dots, dashes or underscores, starting with a letter or digit")
		}
		if err := s.nameFree(ctx, *p.Name); err != nil {
			return nil, err
		}
		iss.Name, changed = *p.Name, append(changed, "name")
	}
	if p.Group != nil && *p.Group != iss.Group {
		if !storage.ValidGroup(*p.Group) {
			return nil, invalid("group", "group must be "+storage.GroupRule)
		}
		iss.Group, changed = *p.Group, append(changed, "group")
	}
	if p.PreferredChain != nil && *p.PreferredChain != iss.PreferredChain {
		iss.PreferredChain, changed = *p.PreferredChain, append(changed, "preferred_chain")
	}
	if p.Profile != nil && *p.Profile != iss.Profile {
		if *p.Profile != "" {
			var m DirectoryMeta
			_ = json.Unmarshal(iss.Meta, &m)
			if _, ok := m.Profiles[*p.Profile]; !ok {
				return nil, invalid("profile", "the CA offers no profile %q (offered: %s); refresh the issuer if the CA added it", *p.Profile, strings.Join(m.ProfileNames(), ", "))
			}
		}
		iss.Profile, changed = *p.Profile, append(changed, "profile")
	}
	if p.CustomRootsPEM != nil && strings.TrimSpace(*p.CustomRootsPEM) != iss.CustomRootsPEM {
		roots := strings.TrimSpace(*p.CustomRootsPEM)
		if roots != "" {
			if _, err := parseRoots(roots); err != nil {
				return nil, err
			}
		}
		iss.CustomRootsPEM = roots
		if _, err := s.directory(ctx, iss); err != nil { // the new roots must still reach the CA
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Kind: KindUnusable, Message: fmt.Sprintf("using custom roots: %v", err)}
			}
			e.Field = "custom_roots_pem"
			return nil, e
		}
		changed = append(changed, "custom_roots_pem")
	}
	if p.Contacts != nil {
		contacts, err := normalizeContacts(*p.Contacts)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(contacts, iss.Contacts) {
			if iss.Status == StatusValid && iss.AccountURL != "" {
				client, acct, err := s.clientFor(iss)
				if err != nil {
					return nil, err
				}
				if len(contacts) == 0 {
					return nil, invalid("contacts", "a registered account keeps at least one contact: give a new address instead of none")
				}
				acct.Contact = contacts
				if _, err := client.UpdateAccount(ctx, acct); err != nil {
					return nil, caError("the contact update", err)
				}
			}
			iss.Contacts, changed = contacts, append(changed, "contacts")
		}
	}
	if len(changed) == 0 {
		return iss, nil
	}
	if err := s.save(ctx, actor, "issuer.update", iss, map[string]any{"fields": changed}); err != nil {
		return nil, err
	}
	return iss, nil
}

func readOnly(iss *storage.Issuer) *Error {
	return &Error{Kind: KindReadOnly, Message: fmt.Sprintf("issuer %s is declared in the config (managed_by config): change it there", iss.Name)}
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
	return tx.Audit().Append(ctx, &storage.AuditEntry{Node: s.node, Actor: actor, Action: action, Target: iss.ID, Details: b})
}

// Delete forgets an issuer. It is refused while workflows use it, and for
// issuers declared in the config. The account stays at the CA: deactivate
// it first to retire it there too.
func (s *Service) Delete(ctx context.Context, actor, id string) error {
	iss, err := s.store.Issuers().Get(ctx, id)
	if err != nil {
		return err
	}
	if iss.ManagedBy == storage.ManagedByConfig {
		return readOnly(iss)
	}
	err = s.store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Issuers().Delete(ctx, id); err != nil {
			if errors.Is(err, storage.ErrInUse) {
				return fmt.Errorf("issuer %s is used by workflows; delete or move them first: %w", iss.Name, storage.ErrInUse)
			}
			return err
		}
		return s.audit(ctx, tx, actor, "issuer.delete", iss, map[string]any{"account_url": iss.AccountURL})
	})
	if err != nil {
		return err
	}
	s.logger.Info("issuer deleted", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID))
	return nil
}

// Refresh reads the issuer's directory again and stores its meta: terms
// of service, profiles, ARI, CAA identities, whether EAB is required.
func (s *Service) Refresh(ctx context.Context, actor, id string) (*storage.Issuer, DirectoryMeta, error) {
	iss, err := s.store.Issuers().Get(ctx, id)
	if err != nil {
		return nil, DirectoryMeta{}, err
	}
	m, err := s.directory(ctx, iss)
	if err != nil {
		return nil, DirectoryMeta{}, err
	}
	b, _ := json.Marshal(m)
	iss.Meta, iss.MetaRefreshedAt = b, s.now().UTC()
	note := map[string]any{"profiles": m.ProfileNames(), "ari": m.ARI, "external_account_required": m.ExternalAccountRequired}
	if iss.TermsAgreed != "" && m.TermsOfService != "" && m.TermsOfService != iss.TermsAgreed {
		iss.LastMessage = fmt.Sprintf("the CA's terms of service changed to %s (agreed: %s)", m.TermsOfService, iss.TermsAgreed)
		note["terms_changed"] = m.TermsOfService
	}
	if err := s.save(ctx, actor, "issuer.refresh", iss, note); err != nil {
		return nil, m, err
	}
	return iss, m, nil
}

// clientFor builds the ACME client and account of a registered issuer.
func (s *Service) clientFor(iss *storage.Issuer) (*acme.Client, acme.Account, error) {
	key, err := parseKey(iss.AccountKey.Reveal())
	if err != nil {
		return nil, acme.Account{}, fmt.Errorf("issuer %s: %w", iss.Name, err)
	}
	client, err := s.acmeClient(iss)
	if err != nil {
		return nil, acme.Account{}, err
	}
	return client, acme.Account{Status: acme.StatusValid, Contact: iss.Contacts, Location: iss.AccountURL, PrivateKey: key}, nil
}

// Client returns a ready ACME client for the issuer (its directory, and an
// HTTP client trusting its custom roots) and its account (key opened from
// the store, account URL). An issuer declared in the config is registered
// first if it is not yet; an interrupted key rollover is settled. A
// deactivated issuer is refused.
func (s *Service) Client(ctx context.Context, issuerID string) (*acme.Client, acme.Account, error) {
	iss, err := s.store.Issuers().Get(ctx, issuerID)
	if err != nil {
		return nil, acme.Account{}, err
	}
	if iss.Status == StatusDeactivated {
		return nil, acme.Account{}, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s is deactivated: its account cannot order certificates", iss.Name)}
	}
	if !iss.NextAccountKey.IsZero() {
		if iss, err = s.settleRollover(ctx, "system", iss); err != nil {
			return nil, acme.Account{}, err
		}
	}
	if iss.AccountURL == "" {
		if iss, err = s.registerStored(ctx, "system", iss.ID); err != nil {
			return nil, acme.Account{}, err
		}
	}
	return s.clientFor(iss)
}

// maxRegisterAttempts bounds how often registerStored starts over after
// another node changed the issuer under it.
const maxRegisterAttempts = 5

// registerStored registers a stored, unregistered issuer (declared in the
// config) and saves the outcome: the account, or the error as the last
// message. Registrations of one issuer are serialized: in this process by
// a lock, across nodes by the record's version. Whoever loses a race
// starts over from what the winner stored, so it signs with the winner's
// key or uses the winner's account, and never marks a registered issuer
// as failed.
func (s *Service) registerStored(ctx context.Context, actor, id string) (*storage.Issuer, error) {
	unlock, err := s.lockRegistration(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	for attempt := 1; ; attempt++ {
		// read again under the lock: the issuer may have been registered
		// meanwhile, here or by another node
		iss, err := s.store.Issuers().Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if iss.AccountURL != "" {
			return iss, nil
		}
		if iss.Status == StatusDeactivated {
			return nil, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s is deactivated: its account cannot order certificates", iss.Name)}
		}
		iss, err = s.registerOnce(ctx, actor, iss)
		if errors.Is(err, storage.ErrConflict) && attempt < maxRegisterAttempts {
			continue
		}
		return iss, err
	}
}

// registerOnce is one attempt of registerStored. It returns
// storage.ErrConflict when another node changed the issuer since iss was
// read; the caller then reads it again and starts over.
func (s *Service) registerOnce(ctx context.Context, actor string, iss *storage.Issuer) (*storage.Issuer, error) {
	s.mu.Lock()
	agree := s.declaredTerms[iss.Name]
	s.mu.Unlock()
	stash := func(iss *storage.Issuer) error {
		iss.Status, iss.LastMessage = StatusRegistering, "registering the account at the CA"
		return s.store.Issuers().Update(ctx, iss)
	}
	regErr := s.register(ctx, iss, agree, stash)
	switch {
	case errors.Is(regErr, storage.ErrConflict):
		return nil, regErr
	case regErr != nil:
		return s.registerFailed(ctx, actor, iss.ID, regErr)
	}
	if err := s.save(ctx, actor, "issuer.register", iss, map[string]any{"ok": true, "account_url": iss.AccountURL,
		"terms_agreed": iss.TermsAgreed}); err != nil {
		return nil, err
	}
	s.logger.Info("issuer account registered", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID),
		zap.String("ca", iss.DirectoryURL), zap.String("account_url", iss.AccountURL))
	return iss, nil
}

// registerFailed records a failed registration as the issuer's status and
// last message, keeping its stored key for the next attempt, and returns
// regErr. If another node registered the issuer meanwhile, its account is
// returned instead and nothing is recorded.
func (s *Service) registerFailed(ctx context.Context, actor, id string, regErr error) (*storage.Issuer, error) {
	for attempt := 1; ; attempt++ {
		fresh, err := s.store.Issuers().Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if fresh.AccountURL != "" {
			return fresh, nil
		}
		fresh.Status, fresh.LastMessage, fresh.CheckedAt = StatusError, lastMessage(regErr), s.now().UTC()
		err = s.save(ctx, actor, "issuer.register", fresh, map[string]any{"ok": false, "message": fresh.LastMessage})
		switch {
		case errors.Is(err, storage.ErrConflict) && attempt < maxRegisterAttempts:
			continue
		case err != nil:
			return nil, err
		}
		return nil, regErr
	}
}

// lockRegistration takes this process's registration lock of one issuer,
// waiting until it is free or ctx is done, and returns its release.
func (s *Service) lockRegistration(ctx context.Context, id string) (unlock func(), err error) {
	s.mu.Lock()
	l := s.regLocks[id]
	if l == nil {
		l = &regLock{ch: make(chan struct{}, 1)}
		s.regLocks[id] = l
	}
	l.refs++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.regLocks, id)
		}
		s.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func lastMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Problem != nil {
		return problemMessage(e.Problem)
	}
	return err.Error()
}

// Rollover replaces the account key with a new one of keyType (default:
// the current type). The new key is stored (sealed) before the CA is asked
// to switch, so an interruption never loses the key the CA holds; Client
// and Test settle such an interrupted rollover.
func (s *Service) Rollover(ctx context.Context, actor, id, keyType string) (*storage.Issuer, error) {
	iss, err := s.store.Issuers().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if iss.Status == StatusDeactivated || iss.AccountURL == "" {
		return nil, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s has no active account to roll over (status %s)", iss.Name, iss.Status)}
	}
	if !iss.NextAccountKey.IsZero() {
		if iss, err = s.settleRollover(ctx, actor, iss); err != nil {
			return nil, err
		}
	}
	if keyType == "" {
		keyType = iss.AccountKeyType
	}
	if !slices.Contains(KeyTypes, keyType) {
		return nil, invalid("account_key_type", "account_key_type %q is not supported: use one of %s", keyType, strings.Join(KeyTypes, ", "))
	}
	newKey, newPEM, err := generateKey(keyType)
	if err != nil {
		return nil, err
	}
	client, acct, err := s.clientFor(iss)
	if err != nil {
		return nil, err
	}
	iss.NextAccountKey = storage.NewSecret(newPEM)
	if err := s.store.Issuers().Update(ctx, iss); err != nil {
		return nil, err
	}
	if _, err := client.AccountKeyRollover(ctx, acct, newKey); err != nil {
		cerr := caError("the key rollover", err)
		if cerr.Kind != KindRefused {
			// the CA may or may not have switched: keep the next key
			cerr.Message += "; the outcome is unknown: run the test action to settle it"
			return nil, cerr
		}
		iss.NextAccountKey, iss.LastMessage = storage.Secret{}, "key rollover refused: "+problemMessage(cerr.Problem)
		if err := s.save(ctx, actor, "issuer.rollover", iss, map[string]any{"ok": false, "message": iss.LastMessage}); err != nil {
			return nil, err
		}
		return nil, cerr
	}
	now := s.now().UTC()
	iss.AccountKey, iss.NextAccountKey, iss.AccountKeyType = iss.NextAccountKey, storage.Secret{}, keyType
	iss.KeyRolledAt, iss.CheckedAt, iss.Status, iss.LastMessage = now, now, StatusValid, "account key rolled over"
	if err := s.save(ctx, actor, "issuer.rollover", iss, map[string]any{"ok": true, "account_key_type": keyType}); err != nil {
		return nil, fmt.Errorf("recording the rolled-over key (the CA switched; it stays pending and is settled on next use): %w", err)
	}
	s.logger.Info("account key rolled over", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID),
		zap.String("account_key_type", keyType))
	return iss, nil
}

// settleRollover decides an interrupted rollover by asking the CA which key
// it knows: the next key is promoted if the CA finds the account by it,
// and dropped if the CA does not.
func (s *Service) settleRollover(ctx context.Context, actor string, iss *storage.Issuer) (*storage.Issuer, error) {
	next, err := parseKey(iss.NextAccountKey.Reveal())
	if err != nil {
		return nil, err
	}
	client, err := s.acmeClient(iss)
	if err != nil {
		return nil, err
	}
	found, err := client.GetAccount(ctx, acme.Account{PrivateKey: next})
	var p acme.Problem
	switch {
	case err == nil && found.Location == iss.AccountURL:
		now := s.now().UTC()
		iss.AccountKey, iss.AccountKeyType, iss.KeyRolledAt = iss.NextAccountKey, keyTypeOf(next), now
		iss.LastMessage = "interrupted key rollover completed"
	case errors.As(err, &p) && p.Type == acme.ProblemTypeAccountDoesNotExist:
		iss.LastMessage = "interrupted key rollover abandoned: the CA kept the old key"
	case err == nil:
		return nil, &Error{Kind: KindState, Message: fmt.Sprintf("the pending key of issuer %s belongs to another account (%s)", iss.Name, found.Location)}
	default:
		return nil, caError("settling the interrupted key rollover", err)
	}
	iss.NextAccountKey = storage.Secret{}
	if err := s.save(ctx, actor, "issuer.rollover", iss, map[string]any{"settled": iss.LastMessage}); err != nil {
		return nil, err
	}
	return iss, nil
}

// Deactivate deactivates the account at the CA (RFC 8555 §7.3.6). It cannot
// be undone; the issuer stays, for history, with status deactivated.
func (s *Service) Deactivate(ctx context.Context, actor, id string) (*storage.Issuer, error) {
	iss, err := s.store.Issuers().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if iss.ManagedBy == storage.ManagedByConfig {
		return nil, readOnly(iss)
	}
	if iss.Status == StatusDeactivated || iss.AccountURL == "" {
		return nil, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s has no active account to deactivate (status %s)", iss.Name, iss.Status)}
	}
	client, acct, err := s.clientFor(iss)
	if err != nil {
		return nil, err
	}
	acct.Status = acme.StatusDeactivated
	acct.Contact = nil
	got, err := client.UpdateAccount(ctx, acct)
	if err != nil {
		return nil, caError("the deactivation", err)
	}
	now := s.now().UTC()
	iss.Status, iss.CheckedAt = StatusDeactivated, now
	iss.LastMessage = "account deactivated at the CA (status " + got.Status + ")"
	if err := s.save(ctx, actor, "issuer.deactivate", iss, map[string]any{"account_url": iss.AccountURL}); err != nil {
		return nil, err
	}
	s.logger.Info("issuer account deactivated", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID))
	return iss, nil
}

// TestResult is the outcome of Test.
type TestResult struct {
	OK      bool          `json:"ok"`
	Message string        `json:"message"`
	Problem *acme.Problem `json:"problem,omitempty"`
	// Issuer is the issuer as stored after the test.
	Issuer *storage.Issuer `json:"-"`
}

// Test checks that the issuer can order now: the directory answers and the
// CA knows the account by its key. An issuer declared in the config and
// not yet registered is registered. The outcome is stored as the issuer's
// status and last message; CA refusals are reported in the result, not as
// an error.
func (s *Service) Test(ctx context.Context, actor, id string) (TestResult, error) {
	iss, err := s.store.Issuers().Get(ctx, id)
	if err != nil {
		return TestResult{}, err
	}
	if iss.Status == StatusDeactivated {
		return TestResult{Message: "the account is deactivated", Issuer: iss}, nil
	}
	fail := func(err error) (TestResult, error) {
		var e *Error
		if !errors.As(err, &e) {
			return TestResult{}, err
		}
		fresh, gerr := s.store.Issuers().Get(ctx, id)
		if gerr != nil {
			return TestResult{}, gerr
		}
		fresh.Status, fresh.LastMessage, fresh.CheckedAt = StatusError, lastMessage(e), s.now().UTC()
		if err := s.save(ctx, actor, "issuer.test", fresh, map[string]any{"ok": false, "message": fresh.LastMessage}); err != nil {
			return TestResult{}, err
		}
		return TestResult{Message: e.Message, Problem: e.Problem, Issuer: fresh}, nil
	}
	m, err := s.directory(ctx, iss)
	if err != nil {
		return fail(err)
	}
	if !iss.NextAccountKey.IsZero() {
		if iss, err = s.settleRollover(ctx, actor, iss); err != nil {
			return fail(err)
		}
	}
	if iss.AccountURL == "" {
		if iss, err = s.registerStored(ctx, actor, iss.ID); err != nil {
			return fail(err)
		}
		return TestResult{OK: true, Message: "account registered", Issuer: iss}, nil
	}
	client, acct, err := s.clientFor(iss)
	if err != nil {
		return TestResult{}, err
	}
	found, err := client.GetAccount(ctx, acme.Account{PrivateKey: acct.PrivateKey})
	if err != nil {
		return fail(caError("the account lookup", err))
	}
	if found.Location != iss.AccountURL {
		return fail(&Error{Kind: KindState, Message: fmt.Sprintf("the CA knows this key as account %s, not %s", found.Location, iss.AccountURL)})
	}
	now := s.now().UTC()
	b, _ := json.Marshal(m)
	iss.Meta, iss.MetaRefreshedAt, iss.CheckedAt = b, now, now
	iss.Status, iss.LastMessage = StatusValid, "account is "+found.Status
	if found.Status != acme.StatusValid {
		iss.Status = StatusError
	}
	if err := s.save(ctx, actor, "issuer.test", iss, map[string]any{"ok": iss.Status == StatusValid, "message": iss.LastMessage}); err != nil {
		return TestResult{}, err
	}
	return TestResult{OK: iss.Status == StatusValid, Message: iss.LastMessage, Issuer: iss}, nil
}
