package workflow

import (
	"context"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/storage"
)

// What the engine needs from the rest of CertLocker. Small interfaces with
// written contracts; all implementations MUST honour context cancellation.

// ACMEClients gives the engine a ready ACME client and account for an
// ACME client record (issuer).
type ACMEClients interface {
	// Client returns a low-level client for the issuer's directory (with
	// the issuer's trusted roots) and the registered account.
	Client(ctx context.Context, issuerID string) (*acme.Client, acme.Account, error)
}

// DNSPresenter publishes and removes DNS-01 records through a DNS provider
// client. Present stores the record's identity before publishing it, so a
// crash never leaves a record nobody knows about.
type DNSPresenter interface {
	Present(ctx context.Context, providerID, workflowID, fqdn, value string) (*storage.ChallengeRecord, error)
	// WaitPropagation returns once every authoritative nameserver serves
	// the record, with how long that took.
	WaitPropagation(ctx context.Context, rec *storage.ChallengeRecord) (time.Duration, error)
	// CleanUp removes the record from DNS and forgets it; removing a
	// record that is already gone is not an error.
	CleanUp(ctx context.Context, rec *storage.ChallengeRecord) error
	// CleanUpWorkflow removes every record the workflow left behind.
	CleanUpWorkflow(ctx context.Context, workflowID string) error
}

// Inventory receives issued certificates.
type Inventory interface {
	// AddIssued stores the chain (leaf first, PEM) and its private key
	// (PEM) and returns the inventory certificate. Adding the same leaf
	// twice returns the existing certificate.
	AddIssued(ctx context.Context, chainPEM, keyPEM []byte, issuerID, workflowID, profile string) (*storage.Certificate, error)
}

// Deps are the engine's collaborators. They can be swapped while the
// engine runs (a config reload); a workflow step uses the set current
// when it starts.
type Deps struct {
	Clients   ACMEClients
	DNS       DNSPresenter
	Inventory Inventory
	// Events receives workflow events (state changes, issued, failed).
	Events func(name string, data map[string]any)
}
