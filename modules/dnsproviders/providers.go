package dnsproviders

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/libdns/cloudflare"
	"github.com/libdns/libdns"
	"github.com/libdns/rfc2136"
	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/retry"
	"github.com/certlocker/caddy-certlocker/storage"
)

// recordEditor is what a provider must do for DNS-01: add and remove
// records. Every libdns provider (and every dns.providers.* module that
// certmagic can use) does.
type recordEditor interface {
	libdns.RecordAppender
	libdns.RecordDeleter
}

// liveProvider is a provider client ready to publish: its libdns
// implementation, how to describe its failures, and whether retries happen
// here (not for Cloudflare, whose HTTP client retries).
type liveProvider struct {
	id, name, typ string
	editor        recordEditor
	red           redactor
	cf            *cfClient // cloudflare only
	server        string    // rfc2136 only
	retryHere     bool
}

// live returns the ready provider client for p, built once for each
// name, type and credentials (a verification or a group change does not
// rebuild it).
func (s *Service) live(p *storage.DNSProvider) (*liveProvider, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	creds := p.Credentials.Reveal()
	sum := sha256.Sum256(append([]byte(p.Name+"\x00"+p.Type+"\x00"), creds...))
	key := string(sum[:])
	if c, ok := s.cache[p.ID]; ok && c.key == key {
		return c.prov, nil
	}
	lp := &liveProvider{id: p.ID, name: p.Name, typ: p.Type, red: newRedactor(secretStrings(creds))}
	o := s.opts
	switch {
	case p.Type == TypeCloudflare:
		var c cloudflareCreds
		if err := json.Unmarshal(creds, &c); err != nil {
			return nil, fmt.Errorf("DNS provider %q: reading credentials: invalid JSON", p.Name)
		}
		doer := &cfDoer{client: o.HTTPClient, policy: o.retryPolicy(), logger: s.logger}
		lp.editor = &cloudflare.Provider{APIToken: c.APIToken, ZoneToken: c.ZoneToken, HTTPClient: doer}
		lp.cf = &cfClient{doer: doer, apiToken: c.APIToken, zoneToken: c.ZoneToken}
	case p.Type == TypeRFC2136:
		var c rfc2136Creds
		if err := json.Unmarshal(creds, &c); err != nil {
			return nil, fmt.Errorf("DNS provider %q: reading credentials: invalid JSON", p.Name)
		}
		alg := strings.ToLower(c.KeyAlg)
		if alg == "" {
			alg = "hmac-sha256"
		}
		server := c.Server
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
		}
		lp.editor = &rfc2136.Provider{KeyName: c.KeyName, KeyAlg: alg, Key: c.Key, Server: server}
		lp.server = server
		lp.retryHere = true
	case p.Type == TypeDelegated:
		lp.editor = storedRecords{}
	case strings.HasPrefix(p.Type, modulePrefix):
		ed, err := s.loadModuleLocked(p.Type, creds)
		if err != nil {
			return nil, fmt.Errorf("DNS provider %q: %w", p.Name, err)
		}
		lp.editor = ed
		lp.retryHere = true
	default:
		return nil, fmt.Errorf("DNS provider %q: type %q is not supported", p.Name, p.Type)
	}
	s.cache[p.ID] = cachedProvider{key: key, prov: lp}
	return lp, nil
}

// loadModule loads a dns.providers module with its JSON config, to check
// a config.
func (s *Service) loadModule(id string, cfg []byte) (recordEditor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadModuleLocked(id, cfg)
}

// loadModuleLocked loads a module; s.mu must be held (caddy.Context's
// module bookkeeping is not safe for concurrent use). Errors are scrubbed
// of every credential value: some modules echo a bad token.
func (s *Service) loadModuleLocked(id string, cfg []byte) (recordEditor, error) {
	red := newRedactor(secretStrings(cfg))
	if s.opts.Context.Context == nil {
		return nil, inputErr("type", fmt.Sprintf("type %s: Caddy modules can only be loaded inside a running CertLocker", id))
	}
	info, err := caddy.GetModule(id)
	if err != nil {
		return nil, inputErr("type", fmt.Sprintf("type %s: no such module is installed in this binary; add it with xcaddy (see the README), or use cloudflare or rfc2136", id))
	}
	if info.ID.Namespace() != "dns.providers" {
		return nil, inputErr("type", fmt.Sprintf("type %s is not a dns.providers module", id))
	}
	v, err := s.opts.Context.LoadModuleByID(id, cfg)
	if err != nil {
		return nil, &InputError{Field: "credentials", Message: red.clean(fmt.Sprintf("loading module %s with the given credentials: %v", id, err))}
	}
	ed, ok := v.(recordEditor)
	if !ok {
		if c, ok := v.(caddy.CleanerUpper); ok {
			_ = c.Cleanup()
		}
		return nil, inputErr("type", fmt.Sprintf("module %s cannot add and delete DNS records (it is not a libdns provider)", id))
	}
	if s.opts.ConfigureModule != nil {
		s.opts.ConfigureModule(id, v)
	}
	return ed, nil
}

// appendRecord publishes rec in zone; deleteRecord removes it. Both retry
// transient failures (for Cloudflare, its HTTP client does) and return
// errors scrubbed of credentials, of one of the package's kinds.
func (s *Service) appendRecord(ctx context.Context, lp *liveProvider, zone string, rec libdns.Record) ([]libdns.Record, error) {
	op := fmt.Sprintf("publishing TXT %s in zone %s through DNS provider %q", absoluteName(rec.RR().Name, zone), zone, lp.name)
	var out []libdns.Record
	err := s.call(ctx, lp, op, zone, func() error {
		var err error
		out, err = lp.editor.AppendRecords(ctx, zone+".", []libdns.Record{rec})
		var e *cfAPIError
		if errors.As(err, &e) && e.has(cfCodeIdenticalRecord) {
			// a retry after a lost answer: the record is there
			return nil
		}
		return err
	})
	return out, err
}

func (s *Service) deleteRecord(ctx context.Context, lp *liveProvider, zone string, rec libdns.Record) error {
	op := fmt.Sprintf("removing TXT %s from zone %s through DNS provider %q", absoluteName(rec.RR().Name, zone), zone, lp.name)
	return s.call(ctx, lp, op, zone, func() error {
		_, err := lp.editor.DeleteRecords(ctx, zone+".", []libdns.Record{rec})
		var e *cfAPIError
		if errors.As(err, &e) && e.has(cfCodeRecordNotFound) {
			return nil // already gone
		}
		return err
	})
}

func (s *Service) call(ctx context.Context, lp *liveProvider, op, zone string, fn func() error) error {
	p := s.options().retryPolicy()
	p.OnRetry = func(attempt int, err error, wait time.Duration) {
		if ce := s.logger.Check(zap.DebugLevel, "retrying dns provider call"); ce != nil {
			ce.Write(zap.String("dns_provider", lp.name), zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		}
	}
	err := retry.Do(ctx, p, func(int) error {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return retry.Permanent(fmt.Errorf("%s: %w", op, ctx.Err()))
		}
		kerr := s.classify(ctx, lp, op, zone, err)
		transient := errors.Is(kerr, ErrUnavailable) || errors.Is(kerr, ErrRateLimited)
		if !lp.retryHere || !transient {
			return retry.Permanent(kerr)
		}
		return kerr
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	return err
}

// classify maps a provider failure to a kind and a plain message.
func (s *Service) classify(ctx context.Context, lp *liveProvider, op, zone string, err error) error {
	var ie *InputError
	if errors.As(err, &ie) {
		return &providerError{msg: lp.red.clean(op + ": " + ie.Message), kind: ErrInvalidCredentials}
	}
	switch lp.typ {
	case TypeCloudflare:
		kind := error(ErrProviderFailed)
		var e *cfAPIError
		if errors.As(err, &e) {
			kind = e.kind
		} else if strings.Contains(err.Error(), "expected 1 zone, got 0") {
			kind = ErrZoneNotFound
		}
		return &providerError{msg: lp.red.clean(cloudflareMessage(err, op, zone)), kind: kind}
	case TypeRFC2136:
		kind := rfc2136Kind(err)
		if kind == ErrInvalidCredentials && !authoritative(ctx, lp.server, zone) {
			// miekg/dns reports any NOTAUTH answer to a signed update as a
			// TSIG failure, also "not authoritative for the zone"
			kind = ErrZoneNotFound
		}
		return lp.red.wrap(kind, op+rfc2136Hint(kind, zone), err)
	}
	kind := error(ErrProviderFailed)
	var ne net.Error
	if errors.As(err, &ne) {
		kind = ErrUnavailable
	}
	return lp.red.wrap(kind, op, err)
}

// rfc2136Kind maps a dynamic update failure to a kind.
func rfc2136Kind(err error) error {
	msg := err.Error()
	var ne net.Error
	switch {
	case strings.Contains(msg, `"NOTAUTH"`) || strings.Contains(msg, `"NOTZONE"`):
		// RFC 2136: the server is not authoritative for the zone (a TSIG
		// failure comes back as a bad signature, below)
		return ErrZoneNotFound
	case strings.Contains(msg, `"BADSIG"`), strings.Contains(msg, `"BADKEY"`),
		errors.Is(err, dns.ErrAuth), errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrKeyAlg), errors.Is(err, dns.ErrTime):
		return ErrInvalidCredentials
	case strings.Contains(msg, `"REFUSED"`):
		return ErrPermission
	case strings.Contains(msg, `"SERVFAIL"`), errors.As(err, &ne), strings.Contains(msg, "dial"),
		strings.Contains(msg, "connection refused"), strings.Contains(msg, "i/o timeout"):
		return ErrUnavailable
	}
	return ErrProviderFailed
}

// authoritative reports whether server answers authoritatively for zone
// (true when it cannot tell).
func authoritative(ctx context.Context, server, zone string) bool {
	in, err := exchange(ctx, server, dns.Fqdn(zone), dns.TypeSOA, false)
	if err != nil {
		return true
	}
	return in.Rcode == dns.RcodeSuccess && in.Authoritative
}

func rfc2136Hint(kind error, zone string) string {
	switch kind {
	case ErrInvalidCredentials:
		return ": the server rejected the TSIG key (check key_name, key_alg and key against the server's key statement)"
	case ErrPermission:
		return fmt.Sprintf(": the server refused the update (its allow-update or update-policy for zone %s does not grant this key)", zone)
	case ErrZoneNotFound:
		return fmt.Sprintf(": the server is not authoritative for zone %s", zone)
	case ErrUnavailable:
		return ": the server did not answer"
	}
	return ""
}

// Interface guards
var (
	_ recordEditor          = (*cloudflare.Provider)(nil)
	_ recordEditor          = (*rfc2136.Provider)(nil)
	_ cloudflare.HTTPClient = (*cfDoer)(nil)
)
