package storage

import (
	"encoding/json"
	"time"
)

// Managed-by values: who owns a record's definition.
const (
	ManagedByAPI    = "api"
	ManagedByConfig = "config"
)

// ActorConfig is the audit actor of changes made by config as code (the
// resources declared in apps.certlocker, synced when a config starts).
const ActorConfig = "config"

// Issuer is an ACME client: one account at one CA directory.
type Issuer struct {
	ID        string
	Name      string
	CatalogID string
	// DirectoryURL is the ACME directory the account lives at.
	DirectoryURL string
	Contacts     []string
	EABKeyID     string
	EABMACKey    Secret
	// AccountKey is the account's private key, PEM.
	AccountKey     Secret
	AccountKeyType string
	AccountURL     string
	Profile        string
	PreferredChain string
	// CustomRootsPEM are extra roots trusted for this CA (private CAs).
	CustomRootsPEM string
	Group          string
	Status         string
	// LastMessage is the CA's last word on the account (a problem detail).
	LastMessage string
	ManagedBy   string
	// Meta is the directory's metadata as last read (JSON).
	Meta json.RawMessage
	// NextAccountKey is the key an account key rollover is moving to: set
	// before the CA is asked to switch, cleared once the outcome is known,
	// so a crash in between never loses the key the CA holds.
	NextAccountKey Secret
	// TermsAgreed is the terms-of-service URL agreed to at registration.
	TermsAgreed   string
	TermsAgreedAt time.Time
	RegisteredAt  time.Time
	KeyRolledAt   time.Time
	// MetaRefreshedAt is when Meta was last read from the directory.
	MetaRefreshedAt time.Time
	// CheckedAt is when the account was last checked with the CA.
	CheckedAt time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
	// Version increments on every update (optimistic concurrency).
	Version int64
}

// DNSProvider is a DNS provider client: credentials to publish challenge
// records in some zones.
type DNSProvider struct {
	ID   string
	Name string
	// Type is the provider kind: "cloudflare", "rfc2136", or a Caddy
	// module name such as "dns.providers.route53".
	Type string
	// Credentials is the provider's configuration (JSON), sealed as a whole.
	Credentials Secret
	Zones       []string
	AccountID   string
	Group       string
	TTL         time.Duration
	// Settings holds non-secret options such as propagation resolvers and
	// timeouts (JSON).
	Settings    json.RawMessage
	Status      string
	LastMessage string
	VerifiedAt  time.Time
	// Verification is the last verification's result, check by check
	// (JSON); never a secret.
	Verification json.RawMessage
	ManagedBy    string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	Version      int64
}

// ChallengeRecord is a DNS record CertLocker published (or is about to
// publish) for a challenge; stored before publishing so cleanup survives a
// crash.
type ChallengeRecord struct {
	ID         string
	ProviderID string
	WorkflowID string
	Zone       string
	Name       string
	Type       string
	Value      string
	// ProviderRecordID is the provider's own ID for the record, once known.
	ProviderRecordID string
	CreatedAt        time.Time
	// PublishedAt is when the provider accepted the record (zero while
	// it is only about to be published).
	PublishedAt time.Time
	// CleanupAttempts counts failed removals; LastError is the latest
	// failure's message (never a secret).
	CleanupAttempts int
	LastError       string
}

// Workflow states. A workflow is terminal in StateIssued, StateAuthorized,
// StateFailed and StateCancelled. StateAuthorized ends a pre-authorization
// workflow: every identifier authorized at the CA, nothing finalized.
const (
	StatePending        = "pending"
	StateOrdering       = "ordering"
	StateAuthorizing    = "authorizing"
	StateFinalizing     = "finalizing"
	StateDownloading    = "downloading"
	StateIssued         = "issued"
	StateAuthorized     = "authorized"
	StateFailed         = "failed"
	StateCancelled      = "cancelled"
	StateRetryScheduled = "retry_scheduled"
)

// TerminalStates lists the states a workflow never leaves.
var TerminalStates = []string{StateIssued, StateAuthorized, StateFailed, StateCancelled}

// IsTerminal reports whether state is terminal.
func IsTerminal(state string) bool {
	for _, s := range TerminalStates {
		if s == state {
			return true
		}
	}
	return false
}

// Identifier is one name of an order with the challenge chosen for it.
type Identifier struct {
	Type          string `json:"type"` // "dns" or "ip"
	Value         string `json:"value"`
	Challenge     string `json:"challenge,omitempty"` // "dns-01", "http-01"
	DNSProviderID string `json:"dns_provider_id,omitempty"`
}

// Workflow is one ACME order as a persisted state machine.
type Workflow struct {
	ID          string
	IssuerID    string
	Identifiers []Identifier
	KeyType     string
	Profile     string
	// Trigger says why the workflow exists: "manual", "renewal", "gateway", "migration".
	Trigger string
	Group   string
	State   string
	// Status is a one-line human summary of where the workflow is.
	Status string
	// OrderURL is the order's Location at the CA, stored before acting on it.
	OrderURL string
	// PrivateKey is the certificate key, PEM, kept until the certificate
	// is in the inventory, which then holds the only copy: a workflow
	// whose CertificateID is set stores no key (writes drop it).
	PrivateKey Secret
	// CertificateID is the inventory certificate once issued.
	CertificateID string
	// PreviousCertificateID links a renewal to the certificate it replaces.
	PreviousCertificateID string
	// ParentID links a retry or renewal to the workflow before it.
	ParentID  string
	Attempt   int
	NextRunAt time.Time
	// LeaseOwner is the node working on the workflow until LeaseUntil.
	LeaseOwner string
	LeaseUntil time.Time
	// Data holds the engine's step data (authorization URLs, challenge
	// state, policy), JSON.
	Data      json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
	Version   int64
}

// WorkflowEvent is one entry of a workflow's timeline.
type WorkflowEvent struct {
	WorkflowID string
	Seq        int64
	Time       time.Time
	Node       string
	State      string
	// Step names the finer step, e.g. "presenting" or "propagating", and
	// the identifier it concerns if any.
	Step       string
	Identifier string
	Message    string
	Duration   time.Duration
	// Problem is the CA's problem document, verbatim (JSON), if any.
	Problem    json.RawMessage
	RetryAfter time.Duration
}

// Certificate is one inventory entry.
type Certificate struct {
	ID          string
	Fingerprint string // SHA-256 of the leaf DER, lowercase hex
	CommonName  string
	// Names are the SANs (DNS names and IP addresses), lowercase.
	Names     []string
	IssuerDN  string
	Serial    string
	NotBefore time.Time
	NotAfter  time.Time
	KeyType   string
	Rating    string
	// IssuerID is the ACME client that produced it ("" when imported).
	IssuerID   string
	WorkflowID string
	// Profile is the ACME profile the certificate was ordered under.
	Profile string
	// CatalogID is the CA catalog entry its issuer DN maps to, if any.
	CatalogID string
	// Source says how it entered the inventory: CertSourceIssued or
	// CertSourceImported.
	Source string
	Group  string
	// Status is the lifecycle status: CertStatusActive, CertStatusRenewed
	// or CertStatusRevoked.
	Status string
	// ReplacedBy is the certificate that renewed this one.
	ReplacedBy string
	// ChainPEM is the leaf followed by its chain.
	ChainPEM   string
	PrivateKey Secret
	// Meta holds the parsed metadata and rating breakdown (JSON).
	Meta      json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
	Version   int64
}

// Certificate sources and lifecycle statuses.
const (
	CertSourceIssued   = "issued"
	CertSourceImported = "imported"

	CertStatusActive  = "active"
	CertStatusRenewed = "renewed"
	CertStatusRevoked = "revoked"
)

// ExpiryCount counts the certificates of one ACME client and group by
// expiry interval: Buckets[i] counts those with NotAfter in
// (bounds[i-1], bounds[i]] for the bounds given to ExpiryCounts, the first
// bucket being unbounded below and the last (index len(bounds)) above.
type ExpiryCount struct {
	IssuerID string
	Group    string
	Buckets  []int
}

// Token types.
const TokenTypeCertificate = "CERTIFICATE"

// Token is a certificate token: a scoped credential an edge system presents
// to the ACME gateway.
type Token struct {
	ID            string
	Type          string
	Name          string
	Description   string
	CertificateID string
	// Names are the hostnames the token may obtain.
	Names []string
	// Spec is the token's scope beyond its names: the ACME client that
	// issues them, each name's challenge settings, key constraints and
	// limits.
	Spec TokenSpec
	// Secret is the token's HMAC key (used as ACME EAB MAC key).
	Secret Secret
	// URLSecret is the secret in the token's own directory URL; URLHash is
	// its SHA-256 (hex), by which the token is found.
	URLSecret Secret
	URLHash   string
	// PreviousSecret and PreviousURLHash are the secrets a rotation
	// replaced; they stay valid until GraceUntil.
	PreviousSecret  Secret
	PreviousURLHash string
	GraceUntil      time.Time
	Group           string
	Status          string
	ExpiresAt       time.Time
	LastUsedAt      time.Time
	RevokedAt       time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
	Version         int64
}

// TokenSpec is the scope of a token beyond its names, stored as JSON.
type TokenSpec struct {
	// IssuerID is the ACME client that issues the token's certificates.
	IssuerID string `json:"issuer_id,omitempty"`
	// Identifiers are the token's names with their challenge settings,
	// as a workflow takes them.
	Identifiers []Identifier `json:"identifiers,omitempty"`
	// MinRSABits is the smallest RSA key an edge CSR may carry (0: 2048).
	MinRSABits int `json:"min_rsa_bits,omitempty"`
	// AllowedCurves are the ECDSA curves an edge CSR may use ("P-256",
	// "P-384", "P-521"); empty: P-256 and P-384.
	AllowedCurves []string `json:"allowed_curves,omitempty"`
	// MaxAccounts caps the ACME accounts bound to the token.
	MaxAccounts int `json:"max_accounts,omitempty"`
	// AllowBundle allows PEM bundle delivery with the token's secret.
	AllowBundle bool `json:"allow_bundle,omitempty"`
}

// TokenAccount is an ACME account of the gateway bound to a token.
type TokenAccount struct {
	AccountID string
	TokenID   string
	CreatedAt time.Time
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID     string
	Time   time.Time
	Node   string
	Actor  string
	Action string
	Target string
	// Group is the group of what was acted on ("" for records of no group
	// and node-wide actions).
	Group string
	// Source is the network address the request came from; when empty,
	// Append takes it from the context (WithAuditSource).
	Source string
	// Result is AuditOK (the default), AuditRefused or AuditFailed.
	Result string
	// Details is structured context (JSON); never a secret.
	Details json.RawMessage
}
