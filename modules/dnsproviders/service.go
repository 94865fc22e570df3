// Package dnsproviders is CertLocker's DNS provider store: DNS provider
// clients (credentials sealed at rest, the zones they may touch, an account,
// a group, TTL and propagation settings), their verification, and the
// DNS-01 challenge records they publish.
//
// A provider client is one of
//
//   - "cloudflare": built in on github.com/libdns/cloudflare, with API
//     token, optional zone token and account; verified against the
//     Cloudflare API with its errors mapped to plain messages;
//   - "rfc2136": built in on github.com/libdns/rfc2136, dynamic updates
//     with a TSIG key (BIND, Knot, PowerDNS);
//   - any installed Caddy module "dns.providers.<name>", configured by its
//     JSON config, sealed as a whole.
//
// The challenge lifecycle is what the workflow engine drives: Present
// stores the record's identity, then publishes it; WaitPropagation asks the
// zone's authoritative nameservers directly until every one serves the
// value; CleanUp removes it and forgets it. A record is never published
// before it is stored, so a crash leaves nothing the Janitor cannot find,
// and the Janitor removes only records CertLocker stored: it never lists a
// zone, so it cannot touch a record it did not create.
//
// This package is a library the certlocker app holds (App.DNS), not a
// Caddy module.
package dnsproviders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/retry"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Provider types built in; any other type is a Caddy module ID in the
// dns.providers namespace.
const (
	TypeCloudflare = "cloudflare"
	TypeRFC2136    = "rfc2136"
	modulePrefix   = "dns.providers."
)

// Provider client statuses.
const (
	StatusUnverified = "unverified"
	StatusVerified   = "verified"
	StatusFailed     = "failed"
)

// Defaults of Options and of each provider client's settings.
const (
	DefaultPropagationTimeout = 2 * time.Minute
	MaxPropagationTimeout     = 30 * time.Minute
	DefaultPollInitial        = 25 * time.Millisecond
	DefaultPollMax            = 250 * time.Millisecond
	DefaultRetries            = 4
	DefaultRetryBase          = 500 * time.Millisecond
	DefaultRetryMax           = 30 * time.Second
	DefaultJanitorAge         = time.Hour
	DefaultJanitorEvery       = 15 * time.Minute
	DefaultJanitorDelay       = time.Minute
)

// Options configure a Service. Zero fields take the documented defaults.
type Options struct {
	// Context loads dns.providers.* modules (ctx.LoadModuleByID). Without
	// it, only the built-in types work.
	Context caddy.Context
	// Logger receives the service's logs. Default: a no-op logger.
	Logger *zap.Logger
	// Node is this node's ID, written to the audit log.
	Node string
	// HTTPClient talks to the Cloudflare API. Default: a client with a
	// 30 s timeout. Tests give acmetest.Cloudflare.HTTPClient().
	HTTPClient *http.Client
	// Resolvers are the recursive resolvers (host:port) used to find a
	// zone's authoritative nameservers when a provider client names none.
	// Default: those of /etc/resolv.conf.
	Resolvers []string
	// NameserverPort is the port authoritative nameservers found through
	// NS records are queried on. Default: 53.
	NameserverPort int
	// PollInitial and PollMax bound the back-off between two rounds of
	// propagation queries. Defaults: 25 ms, growing to 250 ms.
	PollInitial, PollMax time.Duration
	// Retries is how often a provider call is retried after a rate limit
	// or a provider-side failure; RetryBase doubles after each attempt up
	// to RetryMax, and a Retry-After answer is honoured up to RetryMax.
	// Defaults: 4 (negative: none), 500 ms, 30 s.
	Retries             int
	RetryBase, RetryMax time.Duration
	// Sleep waits d or until ctx is done, between retries. Default: a
	// timer. Tests replace it to observe the waits.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for stored times and record ages. Default:
	// time.Now.
	Now func() time.Time
	// ConfigureModule, if set, is called with every dns.providers module
	// instance after it is loaded and before it is used (tests point
	// module API clients at local stand-ins with it).
	ConfigureModule func(moduleID string, module any)
}

// Service is the DNS provider store. It is safe for concurrent use.
type Service struct {
	store storage.Store

	mu     sync.Mutex // guards opts, cache and module loading
	opts   Options
	cache  map[string]cachedProvider // by provider ID
	logger *zap.Logger
}

type cachedProvider struct {
	key  string // hash of name, type and credentials
	prov *liveProvider
}

// New returns a service over store.
func New(store storage.Store, opts Options) *Service {
	s := &Service{store: store, cache: make(map[string]cachedProvider)}
	s.setOptions(opts)
	return s
}

func (s *Service) setOptions(o Options) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.NameserverPort == 0 {
		o.NameserverPort = 53
	}
	if o.PollInitial <= 0 {
		o.PollInitial = DefaultPollInitial
	}
	if o.PollMax <= 0 {
		o.PollMax = DefaultPollMax
	}
	if o.PollMax < o.PollInitial {
		o.PollMax = o.PollInitial
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RetryBase <= 0 {
		o.RetryBase = DefaultRetryBase
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.Sleep == nil {
		o.Sleep = retry.Sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s.opts = o
	s.logger = o.Logger
	s.cache = make(map[string]cachedProvider)
}

// Configure changes the service's options while it runs, e.g. to point it
// at local stand-ins in tests. Provider clients are rebuilt on next use.
func (s *Service) Configure(fn func(o *Options)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.opts
	fn(&o)
	s.setOptions(o)
}

func (s *Service) options() Options {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts
}

func (s *Service) now() time.Time { return s.options().Now().UTC() }

// Store returns the store the service works on.
func (s *Service) Store() storage.Store { return s.store }

// Get returns a provider client by ID or, failing that, by name.
// Under a group scope (storage.WithGroups), provider clients of other
// groups are not found.
func (s *Service) Get(ctx context.Context, idOrName string) (*storage.DNSProvider, error) {
	p, err := s.store.DNSProviders().Get(ctx, idOrName)
	if errors.Is(err, storage.ErrNotFound) {
		p, err = s.store.DNSProviders().GetByName(ctx, idOrName)
		if err != nil {
			return nil, fmt.Errorf("DNS provider %q: %w", idOrName, storage.ErrNotFound)
		}
	}
	if err != nil {
		return nil, err
	}
	if !storage.InScope(ctx, p.Group) {
		return nil, fmt.Errorf("DNS provider %q: %w", idOrName, storage.ErrNotFound)
	}
	return p, nil
}

// List returns the provider clients of a group ("" for all), by name.
// Under a group scope only the scope's provider clients are listed.
func (s *Service) List(ctx context.Context, group string) ([]*storage.DNSProvider, error) {
	g, ok := storage.NarrowGroup(ctx, group)
	if !ok {
		return nil, nil
	}
	list, err := s.store.DNSProviders().List(ctx, g)
	if err != nil {
		return nil, err
	}
	return storage.FilterScope(ctx, list, func(p *storage.DNSProvider) string { return p.Group }), nil
}

// ListPage returns a page of the provider clients of a group ("" for
// all), by name. Under a group scope the query itself keeps the scope's
// provider clients, so a page is full whatever other groups' lie between.
func (s *Service) ListPage(ctx context.Context, group string, p storage.Page) ([]*storage.DNSProvider, string, error) {
	g, groups, ok := storage.ScopeFilter(ctx, group)
	if !ok {
		return nil, "", nil
	}
	return s.store.DNSProviders().ListPage(ctx, storage.DNSProviderFilter{Group: g, Groups: groups}, p)
}

// Records returns the challenge records of a provider client that are not
// cleaned up yet, oldest first.
func (s *Service) Records(ctx context.Context, providerID string) ([]*storage.ChallengeRecord, error) {
	return s.store.DNSProviders().ListRecords(ctx, providerID, time.Time{})
}

// Create validates c and stores it as a new provider client managed through
// the API, with an audit entry, in one transaction.
func (s *Service) Create(ctx context.Context, actor string, c Config) (*storage.DNSProvider, error) {
	p, err := s.build(c)
	if err != nil {
		return nil, err
	}
	if !storage.InScope(ctx, p.Group) {
		return nil, &InputError{Field: "group", Message: fmt.Sprintf("group %q is not one of yours: choose one of your groups", p.Group)}
	}
	p.ManagedBy = storage.ManagedByAPI
	err = s.store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.DNSProviders().Create(ctx, p); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "dns_provider.create", p, nil)
	})
	if err != nil {
		return nil, err
	}
	s.logger.Info("dns provider created", zap.String("dns_provider", p.Name), zap.String("type", p.Type),
		zap.Strings("zones", p.Zones), zap.String("actor", actor))
	return p, nil
}

// Patch changes some fields of a provider client; nil fields stay as they
// are, and Credentials replace the stored credentials only when given.
type Patch struct {
	// Version, if not zero, must be the provider client's current version
	// (optimistic concurrency).
	Version            int64           `json:"version,omitempty"`
	Name               *string         `json:"name,omitempty"`
	Credentials        json.RawMessage `json:"credentials,omitempty"`
	Zones              *[]string       `json:"zones,omitempty"`
	AccountID          *string         `json:"account_id,omitempty"`
	Group              *string         `json:"group,omitempty"`
	TTL                *caddy.Duration `json:"ttl,omitempty"`
	Resolvers          *[]string       `json:"resolvers,omitempty"`
	Nameservers        *[]string       `json:"nameservers,omitempty"`
	PropagationTimeout *caddy.Duration `json:"propagation_timeout,omitempty"`
}

// Update applies patch to the provider client id and returns it. Changing
// the credentials, zones or account resets its status to unverified.
func (s *Service) Update(ctx context.Context, actor, id string, patch Patch) (*storage.DNSProvider, error) {
	var out *storage.DNSProvider
	err := s.store.InTx(ctx, func(tx storage.Store) error {
		cur, err := tx.DNSProviders().Get(ctx, id)
		if err != nil {
			return err
		}
		if err := storage.CheckScope(ctx, cur.Group, "DNS provider "+id); err != nil {
			return err
		}
		if patch.Group != nil && !storage.InScope(ctx, *patch.Group) {
			return &InputError{Field: "group", Message: fmt.Sprintf("group %q is not one of yours", *patch.Group)}
		}
		if cur.ManagedBy == storage.ManagedByConfig {
			return fmt.Errorf("DNS provider %q is declared in the config: change it there: %w", cur.Name, ErrManagedByConfig)
		}
		if patch.Version != 0 && patch.Version != cur.Version {
			return fmt.Errorf("DNS provider %q is at version %d, not %d: %w", cur.Name, cur.Version, patch.Version, storage.ErrConflict)
		}
		c := configOf(cur)
		if patch.Name != nil {
			c.Name = *patch.Name
		}
		credsChanged := len(patch.Credentials) > 0
		if credsChanged {
			c.Credentials = patch.Credentials
		}
		if patch.Zones != nil {
			c.Zones = *patch.Zones
		}
		if patch.AccountID != nil {
			c.AccountID = *patch.AccountID
		}
		if patch.Group != nil {
			c.Group = *patch.Group
		}
		if patch.TTL != nil {
			c.TTL = *patch.TTL
		}
		if patch.Resolvers != nil {
			c.Resolvers = *patch.Resolvers
		}
		if patch.Nameservers != nil {
			c.Nameservers = *patch.Nameservers
		}
		if patch.PropagationTimeout != nil {
			c.PropagationTimeout = *patch.PropagationTimeout
		}
		next, err := s.build(c)
		if err != nil {
			return err
		}
		reverify := credsChanged || !slices.Equal(next.Zones, cur.Zones) || next.AccountID != cur.AccountID
		cur.Name, cur.Credentials, cur.Zones, cur.AccountID, cur.Group = next.Name, next.Credentials, next.Zones, next.AccountID, next.Group
		cur.TTL, cur.Settings = next.TTL, next.Settings
		if reverify {
			cur.Status, cur.LastMessage, cur.VerifiedAt, cur.Verification = StatusUnverified, "", time.Time{}, nil
		}
		if err := tx.DNSProviders().Update(ctx, cur); err != nil {
			return err
		}
		out = cur
		return s.audit(ctx, tx, actor, "dns_provider.update", cur, map[string]any{"credentials_changed": credsChanged})
	})
	if err != nil {
		return nil, err
	}
	s.logger.Info("dns provider updated", zap.String("dns_provider", out.Name), zap.String("actor", actor))
	return out, nil
}

// Delete removes a provider client managed through the API. It refuses
// (storage.ErrInUse) while challenge records it published are not cleaned
// up, since removing them needs its credentials.
func (s *Service) Delete(ctx context.Context, actor, id string) error {
	var name string
	err := s.store.InTx(ctx, func(tx storage.Store) error {
		p, err := tx.DNSProviders().Get(ctx, id)
		if err != nil {
			return err
		}
		if err := storage.CheckScope(ctx, p.Group, "DNS provider "+id); err != nil {
			return err
		}
		if p.ManagedBy == storage.ManagedByConfig {
			return fmt.Errorf("DNS provider %q is declared in the config: remove it there: %w", p.Name, ErrManagedByConfig)
		}
		if err := deletable(ctx, tx, p); err != nil {
			return err
		}
		if err := tx.DNSProviders().Delete(ctx, p.ID); err != nil {
			return err
		}
		name = p.Name
		return s.audit(ctx, tx, actor, "dns_provider.delete", p, nil)
	})
	if err != nil {
		return err
	}
	s.forget(id)
	s.logger.Info("dns provider deleted", zap.String("dns_provider", name), zap.String("actor", actor))
	return nil
}

func deletable(ctx context.Context, tx storage.Store, p *storage.DNSProvider) error {
	recs, err := tx.DNSProviders().ListRecords(ctx, p.ID, time.Time{})
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		return fmt.Errorf("DNS provider %q still has %d challenge record(s) to clean up; run the cleanup first: %w",
			p.Name, len(recs), storage.ErrInUse)
	}
	return nil
}

func (s *Service) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cache, id)
}

// audit appends an audit entry in tx; details never hold credentials.
func (s *Service) audit(ctx context.Context, tx storage.Store, actor, action string, p *storage.DNSProvider, extra map[string]any) error {
	d := map[string]any{"name": p.Name, "type": p.Type, "zones": p.Zones}
	if p.Group != "" {
		d["group"] = p.Group
	}
	for k, v := range extra {
		d[k] = v
	}
	b, _ := json.Marshal(d)
	return tx.Audit().Append(ctx, &storage.AuditEntry{Node: s.options().Node, Actor: actor, Action: action,
		Target: p.ID, Group: p.Group, Details: b})
}

// retryPolicy is the policy of provider calls and Cloudflare requests:
// Retries after the first attempt, RetryBase doubling up to RetryMax (with
// a fifth of jitter), a Retry-After honoured up to RetryMax.
func (o Options) retryPolicy() retry.Policy {
	return retry.Policy{Attempts: o.Retries + 1, Base: o.RetryBase, Max: o.RetryMax, Jitter: retryJitter, Sleep: o.Sleep, Now: o.Now}
}

// retryJitter is the random part added to a provider call's back-off.
const retryJitter = 0.2
