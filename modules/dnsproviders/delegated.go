package dnsproviders

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/internal/retry"
	"github.com/certlocker/caddy-certlocker/storage"
)

// TypeDelegated is the provider client type that needs no DNS credentials:
// its Zones are challenge zones CertLocker's own DNS server
// (modules/challengezone, apps.certlocker.challenge_zones) is authoritative
// for. A challenge name inside one of them is published there directly
// (direct mode, e.g. a private zone); any other name is published under a
// label bound to that name in the first zone, and the name's owner adds
// one CNAME from the name's _acme-challenge record to that label (see
// Delegation). Storing the challenge record is publishing it: the DNS
// server answers from storage, on every node, and forgetting the record at
// cleanup removes it.
const TypeDelegated = "delegated"

// ErrDelegationMissing: the CNAME that delegates a name's challenge record
// into the challenge zone is missing or points elsewhere.
var ErrDelegationMissing = errors.New("delegation CNAME missing")

// storedRecords is the record editor of a delegated provider client: the
// challenge record Present stores is what the challenge zone serves, so
// there is nothing else to add or remove.
type storedRecords struct{}

func (storedRecords) AppendRecords(_ context.Context, _ string, recs []libdns.Record) ([]libdns.Record, error) {
	return recs, nil
}

func (storedRecords) DeleteRecords(_ context.Context, _ string, recs []libdns.Record) ([]libdns.Record, error) {
	return recs, nil
}

// delegatedCredentials checks the credentials of a delegated provider
// client: there are none (an empty object, or nothing).
func delegatedCredentials(raw json.RawMessage) ([]byte, error) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return []byte("{}"), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, inputErr("credentials", "credentials must be a JSON object")
	}
	for k := range obj {
		return nil, inputErr("credentials", fmt.Sprintf("credentials: unknown field %q for type delegated, which takes no credentials (its zones are served by CertLocker itself)", k))
	}
	return []byte("{}"), nil
}

// DelegatedLabel returns the label the challenge record of challengeName
// (e.g. "_acme-challenge.shop.example.com") is published under in a
// challenge zone: derived from the name alone, so every node, and every
// provider client on the zone, agrees on it without storing it, and the
// CNAME an operator adds once stays valid.
func DelegatedLabel(challengeName string) string {
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(challengeName)), ".")
	sum := sha256.Sum256([]byte("certlocker delegated challenge\x00" + n))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
}

// Delegation tells how a name validates through a delegated provider
// client: directly, when its challenge record is inside a served zone, or
// through the one CNAME to add.
type Delegation struct {
	// Name is the identifier, e.g. "shop.example.com" (a wildcard's
	// challenge is its base name's).
	Name string `json:"name"`
	// Record is the challenge record's name, "_acme-challenge.<name>".
	Record string `json:"record"`
	// Direct is true when Record is inside a served zone: no CNAME.
	Direct bool `json:"direct"`
	// Zone is the served zone the TXT record is published in.
	Zone string `json:"zone"`
	// Target is the name the TXT record is served at: Record itself when
	// direct, else "<label>.<zone>", the CNAME's target.
	Target string `json:"target"`
	// CNAME is the record to add to the zone of Name, in zone-file form
	// ("" when direct).
	CNAME string `json:"cname,omitempty"`
	// OK reports whether the CNAME was found pointing at Target (always
	// true when direct); Message says what was found otherwise.
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// delegation computes the delegation of a challenge record name for p,
// without looking anything up.
func delegation(p *storage.DNSProvider, record string) Delegation {
	record = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(record)), ".")
	d := Delegation{Name: strings.TrimPrefix(record, "_acme-challenge."), Record: record}
	if z := zoneFor(p.Zones, record); z != "" {
		d.Direct, d.Zone, d.Target, d.OK = true, z, record, true
		d.Message = fmt.Sprintf("%s is inside the served zone %s: no CNAME needed", record, z)
		return d
	}
	d.Zone = p.Zones[0]
	d.Target = DelegatedLabel(record) + "." + d.Zone
	d.CNAME = fmt.Sprintf("%s. CNAME %s.", record, d.Target)
	return d
}

// Delegation returns how name (an identifier such as "shop.example.com" or
// "*.shop.example.com", or its "_acme-challenge." record name) validates
// through the delegated provider client idOrName, and whether the CNAME
// it needs is in place, as its resolvers see it.
func (s *Service) Delegation(ctx context.Context, idOrName, name string) (Delegation, error) {
	p, err := s.Get(ctx, idOrName)
	if err != nil {
		return Delegation{}, err
	}
	if p.Type != TypeDelegated {
		return Delegation{}, inputErr("type", fmt.Sprintf("DNS provider %q is of type %s, not delegated: it publishes through its provider's API", p.Name, p.Type))
	}
	n := strings.TrimPrefix(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), "."), "*.")
	if _, ok := dns.IsDomainName(n); !ok || n == "" || strings.Contains(n, "*") {
		return Delegation{}, inputErr("name", fmt.Sprintf("name %q is not a DNS name", name))
	}
	if !strings.HasPrefix(n, "_acme-challenge.") {
		n = "_acme-challenge." + n
	}
	d := delegation(p, n)
	if d.Direct {
		return d, nil
	}
	err = s.checkCNAME(ctx, p, d)
	d.OK = err == nil
	if err != nil {
		d.Message = err.Error()
	} else {
		d.Message = fmt.Sprintf("%s is a CNAME to %s", d.Record, d.Target)
	}
	if ctx.Err() != nil {
		return d, ctx.Err()
	}
	return d, nil
}

// CheckChallenge checks, before an order, that a dns-01 challenge for
// identifier can be answered through the provider client: for a delegated
// one, that the identifier's CNAME is in place (ErrDelegationMissing, with
// the record to add). Other types are not checked here.
func (s *Service) CheckChallenge(ctx context.Context, providerID, identifier string) error {
	p, err := s.Get(ctx, providerID)
	if err != nil {
		return err
	}
	if p.Type != TypeDelegated {
		return nil
	}
	d, err := s.Delegation(ctx, p.ID, identifier)
	if err != nil {
		return err
	}
	if !d.OK {
		return fmt.Errorf("%s: %w", d.Message, ErrDelegationMissing)
	}
	return nil
}

// checkCNAME asks the provider client's resolvers for the CNAME of
// d.Record and checks it is d.Target.
func (s *Service) checkCNAME(ctx context.Context, p *storage.DNSProvider, d Delegation) error {
	resolvers, err := s.resolvers(p)
	if err != nil {
		return err
	}
	in, err := lookupAny(ctx, resolvers, dns.Fqdn(d.Record), dns.TypeCNAME)
	if err != nil {
		return fmt.Errorf("checking the CNAME %s: %w", d.Record, err)
	}
	for _, rr := range in.Answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(strings.TrimSuffix(c.Hdr.Name, "."), d.Record) {
			got := strings.TrimSuffix(strings.ToLower(c.Target), ".")
			if got == d.Target {
				return nil
			}
			return fmt.Errorf("the CNAME %s points to %s, not to %s: change it to %q", d.Record, got, d.Target, d.CNAME)
		}
	}
	return fmt.Errorf("the CNAME %s is missing (%s): add %q to the zone of %s, once", d.Record,
		dns.RcodeToString[in.Rcode], d.CNAME, d.Name)
}

// resolvers returns the recursive resolvers of a provider client: its
// own, the service's, or the system's.
func (s *Service) resolvers(p *storage.DNSProvider) ([]string, error) {
	if st := parseSettings(p); len(st.Resolvers) > 0 {
		return st.Resolvers, nil
	}
	if o := s.options(); len(o.Resolvers) > 0 {
		return o.Resolvers, nil
	}
	cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("no resolvers configured and none in /etc/resolv.conf: %w", ErrUnavailable)
	}
	var out []string
	for _, srv := range cfg.Servers {
		out = append(out, srv+":"+cfg.Port)
	}
	return out, nil
}

// lookupAny is lookup that also returns a NXDOMAIN answer (a missing
// CNAME is an answer, not a failure).
func lookupAny(ctx context.Context, resolvers []string, name string, qtype uint16) (*dns.Msg, error) {
	var last error
	for _, r := range resolvers {
		in, err := exchange(ctx, r, name, qtype, true)
		if err != nil {
			last = fmt.Errorf("resolver %s: %v", r, err)
			continue
		}
		if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
			last = fmt.Errorf("resolver %s answered %s", r, dns.RcodeToString[in.Rcode])
			continue
		}
		return in, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w: %w", last, ErrUnavailable)
}

// delegate maps a challenge name of a delegated provider client outside its
// zones to where it is published, checking the CNAME first.
func (s *Service) delegate(ctx context.Context, p *storage.DNSProvider, name string) (Delegation, error) {
	d := delegation(p, name)
	if err := s.checkCNAME(ctx, p, d); err != nil {
		return d, fmt.Errorf("publishing the challenge record of %s through DNS provider %q: %w: %w", d.Name, p.Name, err, ErrDelegationMissing)
	}
	return d, nil
}

// waitThroughCNAME returns once the provider client's resolvers, asked for
// the TXT of the delegated name (rec.ProviderRecordID), follow its CNAME
// to the challenge zone and answer the value: what the CA's resolver does.
func (s *Service) waitThroughCNAME(ctx context.Context, p *storage.DNSProvider, rec *storage.ChallengeRecord, timeout time.Duration) error {
	resolvers, err := s.resolvers(p)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	o := s.options()
	interval := o.PollInitial
	fqdn := dns.Fqdn(rec.ProviderRecordID)
	last := "no answer"
	for {
		in, err := lookupAny(wctx, resolvers, fqdn, dns.TypeTXT)
		if err == nil {
			last = fmt.Sprintf("%s with %d answer(s), none with the value", dns.RcodeToString[in.Rcode], len(in.Answer))
			for _, rr := range in.Answer {
				if t, ok := rr.(*dns.TXT); ok && strings.Join(t.Txt, "") == rec.Value {
					return nil
				}
			}
		} else {
			last = err.Error()
		}
		if err := retry.Sleep(wctx, interval); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("TXT record %s not served through its CNAME to %s after %s: %s: %w",
				rec.ProviderRecordID, absoluteName(rec.Name, rec.Zone), timeout, last, ErrPropagationTimeout)
		}
		interval = min(interval*2, o.PollMax)
	}
}

// Interface guards
var _ recordEditor = storedRecords{}
