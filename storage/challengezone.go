package storage

import (
	"context"
	"time"
)

// ChallengeZoneStore is what CertLocker's authoritative DNS server
// (modules/challengezone) reads, and what the acme-dns-compatible update
// API writes: the TXT values served in a challenge zone. Every node answers
// from it, so a record published on one node is served by all.
//
// A Store whose backend has it also implements ChallengeZoner; callers get
// it with ChallengeZoneOf.
type ChallengeZoneStore interface {
	// ZoneTXT returns the TXT values served at name in zone: name is
	// relative to zone ("@" for the apex), both lower case without a
	// trailing dot. The values are those of the challenge records of
	// DNS provider clients of type "delegated" (stored before they are
	// served, removed at cleanup) and those of acme-dns registrations.
	ZoneTXT(ctx context.Context, zone, name string) ([]string, error)

	// CreateRegistration stores a new acme-dns registration; its
	// Password is sealed at rest. ErrDuplicate if the username or the
	// subdomain is taken.
	CreateRegistration(ctx context.Context, r *ACMEDNSRegistration) error
	// GetRegistration returns a registration by username; ErrNotFound if
	// there is none.
	GetRegistration(ctx context.Context, username string) (*ACMEDNSRegistration, error)
	// SetRegistrationTXT makes value the newest of the registration's two
	// TXT values (the older of the two is dropped), as acme-dns does, so
	// that a certificate for a name and its wildcard validates.
	SetRegistrationTXT(ctx context.Context, username, value string, at time.Time) error
}

// ChallengeZoner is a Store that holds challenge zone records.
type ChallengeZoner interface {
	ChallengeZone() ChallengeZoneStore
}

// ChallengeZoneOf returns the challenge zone store of s, or nil if its
// backend has none.
func ChallengeZoneOf(s Store) ChallengeZoneStore {
	if z, ok := s.(ChallengeZoner); ok {
		return z.ChallengeZone()
	}
	return nil
}

// ACMEDNSRegistration is one registration of the acme-dns-compatible API:
// a client (cert-manager, lego, acme.sh) that may set the TXT values of one
// subdomain of one challenge zone, and nothing else.
type ACMEDNSRegistration struct {
	// Username is the registration's ID (a UUID), sent as X-Api-User.
	Username string
	// Password is the API key, sent as X-Api-Key; sealed at rest.
	Password Secret
	// Zone is the challenge zone; Subdomain the label under it whose TXT
	// values the registration sets (fulldomain = Subdomain.Zone).
	Zone      string
	Subdomain string
	// AllowFrom lists the networks (CIDR) updates may come from; empty
	// allows any.
	AllowFrom []string
	// TXT holds the newest TXT values, newest first (at most two).
	TXT       []string
	CreatedAt time.Time
	UpdatedAt time.Time
}
