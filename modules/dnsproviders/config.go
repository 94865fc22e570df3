package dnsproviders

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/placeholder"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Config defines a DNS provider client: in the app's JSON config
// (apps.certlocker.dns_providers, config as code) and as the body of
// POST /certlocker/dns-providers.
type Config struct {
	// Name identifies the provider client; letters, digits, dots, dashes
	// and underscores, up to 63.
	Name string `json:"name"`

	// Type is "cloudflare", "rfc2136", or the ID of an installed Caddy
	// module in the dns.providers namespace, e.g. "dns.providers.route53".
	Type string `json:"type"`

	// Credentials is a JSON object, sealed at rest as a whole and never
	// shown again. For "cloudflare": api_token (DNS:Edit on the zones) and
	// optionally zone_token (Zone:Read). For "rfc2136": server (host:port),
	// key_name, key_alg (default hmac-sha256) and key (base64). For a
	// module: the module's own JSON config. In the app config, secret values
	// must be placeholders such as "{env.CF_API_TOKEN}" or
	// "{file./run/secrets/tsig}" with nothing around them, expanded when
	// the config is loaded, so they never show in GET /config/.
	Credentials json.RawMessage `json:"credentials,omitempty"`

	// Zones are the DNS zones this provider client may publish challenge
	// records in (at least one), e.g. ["example.com"]. A challenge for a
	// name outside them is refused.
	Zones []string `json:"zones,omitempty"`

	// AccountID is the provider account the zones belong to. For
	// Cloudflare, verification checks each zone is in this account.
	// Default: any account.
	AccountID string `json:"account_id,omitempty"`

	// Group scopes the provider client to a team or environment.
	// Default: none.
	Group string `json:"group,omitempty"`

	// TTL of challenge records, in whole seconds; Cloudflare accepts 60 s
	// to 24 h. Default: the provider's own default (Cloudflare "automatic").
	TTL caddy.Duration `json:"ttl,omitempty"`

	// Resolvers (host or host:port) are asked for the zones' NS records, to
	// find the authoritative nameservers the propagation check queries.
	// Default: the system's resolvers.
	Resolvers []string `json:"resolvers,omitempty"`

	// Nameservers (host or host:port), if set, are queried by the
	// propagation check instead of the nameservers found through NS
	// records; for on-prem zones that are not delegated publicly.
	// Default: the zone's NS records.
	Nameservers []string `json:"nameservers,omitempty"`

	// PropagationTimeout bounds the wait for every authoritative
	// nameserver to serve a challenge record, up to 30m (the janitor removes
	// records older than 1h).
	// Default: 2m.
	PropagationTimeout caddy.Duration `json:"propagation_timeout,omitempty"`
}

// settings are the stored non-secret options (storage.DNSProvider.Settings).
type settings struct {
	Resolvers          []string      `json:"resolvers,omitempty"`
	Nameservers        []string      `json:"nameservers,omitempty"`
	PropagationTimeout time.Duration `json:"propagation_timeout,omitempty"`
}

func parseSettings(p *storage.DNSProvider) settings {
	var st settings
	if len(p.Settings) > 0 {
		_ = json.Unmarshal(p.Settings, &st)
	}
	if st.PropagationTimeout <= 0 {
		st.PropagationTimeout = DefaultPropagationTimeout
	}
	return st
}

// configOf turns a stored provider client back into a Config (with its
// credentials in clear, for re-validation only).
func configOf(p *storage.DNSProvider) Config {
	st := parseSettings(p)
	return Config{Name: p.Name, Type: p.Type, Credentials: append(json.RawMessage(nil), p.Credentials.Reveal()...),
		Zones: append([]string(nil), p.Zones...), AccountID: p.AccountID, Group: p.Group, TTL: caddy.Duration(p.TTL),
		Resolvers: st.Resolvers, Nameservers: st.Nameservers, PropagationTimeout: caddy.Duration(st.PropagationTimeout)}
}

var (
	cfTokenRe    = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	printableRe  = regexp.MustCompile(`^[\x21-\x7e]*$`)
	tsigAlgNames = map[string]string{
		"hmac-md5": dns.HmacMD5, "hmac-sha1": dns.HmacSHA1, "hmac-sha224": dns.HmacSHA224,
		"hmac-sha256": dns.HmacSHA256, "hmac-sha384": dns.HmacSHA384, "hmac-sha512": dns.HmacSHA512,
	}
)

type cloudflareCreds struct {
	APIToken  string `json:"api_token"`
	ZoneToken string `json:"zone_token,omitempty"`
}

type rfc2136Creds struct {
	Server  string `json:"server"`
	KeyName string `json:"key_name"`
	KeyAlg  string `json:"key_alg,omitempty"`
	Key     string `json:"key"`
}

// build validates c and returns the provider client it defines (not
// stored). Errors are InputErrors naming the field; none echoes a secret.
func (s *Service) build(c Config) (*storage.DNSProvider, error) {
	if !storage.ValidName(c.Name) {
		return nil, inputErr("name", "name must be "+storage.NameRule)
	}
	zones, err := normaliseZones(c.Zones)
	if err != nil {
		return nil, err
	}
	if len(c.AccountID) > 64 || !printableRe.MatchString(c.AccountID) {
		return nil, inputErr("account_id", "account_id must be up to 64 printable characters without spaces")
	}
	if !storage.ValidGroup(c.Group) {
		return nil, inputErr("group", "group must be "+storage.GroupRule)
	}
	ttl := time.Duration(c.TTL)
	switch {
	case ttl < 0 || ttl%time.Second != 0:
		return nil, inputErr("ttl", "ttl must be a whole number of seconds, e.g. 120s")
	case ttl > 24*time.Hour:
		return nil, inputErr("ttl", "ttl must be at most 24h")
	case c.Type == TypeCloudflare && ttl != 0 && ttl < time.Minute:
		return nil, inputErr("ttl", "Cloudflare accepts a ttl from 60s to 24h (or none for automatic)")
	}
	resolvers, err := normaliseServers("resolvers", c.Resolvers)
	if err != nil {
		return nil, err
	}
	nameservers, err := normaliseServers("nameservers", c.Nameservers)
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(c.PropagationTimeout)
	if timeout < 0 || timeout > MaxPropagationTimeout || (timeout > 0 && timeout < time.Second) {
		return nil, inputErr("propagation_timeout", "propagation_timeout must be from 1s to 30m")
	}
	creds, err := s.checkCredentials(c.Type, c.Credentials)
	if err != nil {
		return nil, err
	}
	st := settings{Resolvers: resolvers, Nameservers: nameservers}
	if timeout != DefaultPropagationTimeout {
		st.PropagationTimeout = timeout
	}
	sb, _ := json.Marshal(st)
	return &storage.DNSProvider{Name: c.Name, Type: c.Type, Credentials: storage.NewSecret(creds), Zones: zones,
		AccountID: c.AccountID, Group: c.Group, TTL: ttl, Settings: sb, Status: StatusUnverified}, nil
}

func normaliseZones(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, inputErr("zones", "zones must name at least one zone the provider may publish challenge records in, e.g. [\"example.com\"]")
	}
	var out []string
	for i, z := range in {
		n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(z)), ".")
		if _, ok := dns.IsDomainName(n); !ok || n == "" || strings.ContainsAny(n, "* ") {
			return nil, inputErr(fmt.Sprintf("zones[%d]", i), fmt.Sprintf("zone %q is not a valid domain name", z))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// normaliseServers checks host or host:port entries and adds port 53.
func normaliseServers(field string, in []string) ([]string, error) {
	var out []string
	for i, s := range in {
		s = strings.TrimSpace(s)
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = strings.Trim(s, "[]"), "53"
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, inputErr(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%s: %q has an invalid port", field, s))
		}
		if _, ok := dns.IsDomainName(host); host == "" || (!ok && net.ParseIP(host) == nil) {
			return nil, inputErr(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%s: %q is not a host or host:port", field, s))
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out, nil
}

// checkCredentials validates the credentials for typ and returns them
// compacted.
func (s *Service) checkCredentials(typ string, raw json.RawMessage) ([]byte, error) {
	if typ == TypeDelegated {
		return delegatedCredentials(raw)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, inputErr("credentials", "credentials are required: a JSON object, e.g. {\"api_token\": \"…\"} for cloudflare")
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, inputErr("credentials", "credentials must be a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, inputErr("credentials", "credentials must be a JSON object")
	}
	strict := func(v any) error {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
				return inputErr("credentials", fmt.Sprintf("credentials: unknown field %s for type %s", f, typ))
			}
			return inputErr("credentials", fmt.Sprintf("credentials for type %s: every field must be a string", typ))
		}
		return nil
	}
	switch {
	case typ == TypeCloudflare:
		var c cloudflareCreds
		if err := strict(&c); err != nil {
			return nil, err
		}
		if c.APIToken == "" {
			return nil, inputErr("credentials.api_token", "credentials.api_token is required: a Cloudflare API token with Zone → DNS → Edit on the zones")
		}
		if !cfTokenRe.MatchString(c.APIToken) {
			return nil, inputErr("credentials.api_token", "credentials.api_token is not a Cloudflare API token (letters, digits, - and _ only; paste the token itself, not a header)")
		}
		if c.ZoneToken != "" && !cfTokenRe.MatchString(c.ZoneToken) {
			return nil, inputErr("credentials.zone_token", "credentials.zone_token is not a Cloudflare API token (letters, digits, - and _ only)")
		}
	case typ == TypeRFC2136:
		var c rfc2136Creds
		if err := strict(&c); err != nil {
			return nil, err
		}
		if c.Server == "" {
			return nil, inputErr("credentials.server", "credentials.server is required: the primary nameserver taking updates, host:port")
		}
		if _, err := normaliseServers("credentials.server", []string{c.Server}); err != nil {
			return nil, inputErr("credentials.server", "credentials.server must be host or host:port")
		}
		if c.KeyName == "" {
			return nil, inputErr("credentials.key_name", "credentials.key_name is required: the TSIG key's name as the server knows it")
		}
		if _, ok := dns.IsDomainName(c.KeyName); !ok {
			return nil, inputErr("credentials.key_name", "credentials.key_name must be a domain-name-like TSIG key name")
		}
		if c.KeyAlg != "" {
			if _, ok := tsigAlgNames[strings.TrimSuffix(strings.ToLower(c.KeyAlg), ".")]; !ok {
				return nil, inputErr("credentials.key_alg", "credentials.key_alg must be one of hmac-sha256, hmac-sha512, hmac-sha384, hmac-sha224, hmac-sha1, hmac-md5")
			}
		}
		if c.Key == "" {
			return nil, inputErr("credentials.key", "credentials.key is required: the TSIG secret, base64")
		}
		if _, err := base64.StdEncoding.DecodeString(c.Key); err != nil {
			return nil, inputErr("credentials.key", "credentials.key must be the TSIG secret in base64 (as in the server's key statement)")
		}
	case strings.HasPrefix(typ, modulePrefix):
		if _, err := s.loadModule(typ, buf.Bytes()); err != nil {
			var ie *InputError
			if errors.As(err, &ie) {
				return nil, err
			}
			return nil, inputErr("credentials", err.Error())
		}
	case typ == "":
		return nil, inputErr("type", `type is required: "cloudflare", "rfc2136", "delegated" or an installed dns.providers.* module`)
	default:
		return nil, inputErr("type", fmt.Sprintf(`type %q is not supported: use "cloudflare", "rfc2136" or an installed dns.providers.* module such as "dns.providers.cloudflare"`, typ))
	}
	return buf.Bytes(), nil
}

// credentialFields returns the top-level field names of a provider
// client's credentials (never their values).
func credentialFields(p *storage.DNSProvider) []string {
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(p.Credentials.Reveal(), &obj)
	out := make([]string, 0, len(obj))
	for k := range obj {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// secretStrings returns every string value in a credentials object.
func secretStrings(raw []byte) []string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return []string{string(raw)}
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// View is how a provider client is shown (admin API, UI): everything but
// the credentials, of which only the field names appear.
type View struct {
	ID                 string          `json:"id"`
	Name               string          `json:"name"`
	Type               string          `json:"type"`
	Zones              []string        `json:"zones"`
	AccountID          string          `json:"account_id,omitempty"`
	Group              string          `json:"group,omitempty"`
	TTL                string          `json:"ttl,omitempty"`
	Resolvers          []string        `json:"resolvers,omitempty"`
	Nameservers        []string        `json:"nameservers,omitempty"`
	PropagationTimeout string          `json:"propagation_timeout"`
	CredentialFields   []string        `json:"credential_fields"`
	Status             string          `json:"status"`
	LastMessage        string          `json:"last_message,omitempty"`
	VerifiedAt         *time.Time      `json:"verified_at,omitempty"`
	Verification       json.RawMessage `json:"verification,omitempty"`
	ManagedBy          string          `json:"managed_by"`
	CreatedAt          time.Time       `json:"created_at"`
	UpdatedAt          time.Time       `json:"updated_at"`
	Version            int64           `json:"version"`
}

// NewView renders p without its credentials.
func NewView(p *storage.DNSProvider) View {
	st := parseSettings(p)
	v := View{ID: p.ID, Name: p.Name, Type: p.Type, Zones: p.Zones, AccountID: p.AccountID, Group: p.Group,
		Resolvers: st.Resolvers, Nameservers: st.Nameservers, PropagationTimeout: st.PropagationTimeout.String(),
		CredentialFields: credentialFields(p), Status: p.Status, LastMessage: p.LastMessage, ManagedBy: p.ManagedBy,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt, Version: p.Version}
	if v.Zones == nil {
		v.Zones = []string{}
	}
	if p.TTL > 0 {
		v.TTL = p.TTL.String()
	}
	if !p.VerifiedAt.IsZero() {
		t := p.VerifiedAt
		v.VerifiedAt = &t
	}
	if len(p.Verification) > 0 && string(p.Verification) != "{}" {
		v.Verification = p.Verification
	}
	return v
}

// secretField reports whether a credentials field name looks like it holds
// a secret, for the placeholder rule of config as code.
var secretFieldRe = regexp.MustCompile(`(?i)(token|secret|password|passwd|key$|^key|_key|apikey|credential|auth)`)

// ExpandConfig checks that every secret value in c's credentials is made
// of placeholders only (no literal part) and returns c with all placeholders in its credentials
// expanded. Errors name the field, never a value.
func ExpandConfig(repl *caddy.Replacer, c Config, index int) (Config, error) {
	where := fmt.Sprintf("dns_providers[%d] (%s)", index, c.Name)
	if len(bytes.TrimSpace(c.Credentials)) == 0 {
		return c, nil
	}
	var obj any
	if err := json.Unmarshal(c.Credentials, &obj); err != nil {
		return c, fmt.Errorf("%s: credentials must be a JSON object", where)
	}
	var walk func(path, key string, v any) (any, error)
	walk = func(path, key string, v any) (any, error) {
		switch x := v.(type) {
		case string:
			if isSecretField(key) && !placeholder.Only(x) {
				return nil, fmt.Errorf(`%s: credentials.%s must be a placeholder such as "{env.VAR}" or "{file./path}", with nothing around it: a secret written in the config would be visible in GET /config/`, where, path)
			}
			if !placeholder.Has(x) {
				return x, nil
			}
			out, err := repl.ReplaceOrErr(x, true, true)
			if err != nil {
				return nil, fmt.Errorf("%s: credentials.%s: %v", where, path, err)
			}
			return out, nil
		case map[string]any:
			for k, e := range x {
				p := k
				if path != "" {
					p = path + "." + k
				}
				n, err := walk(p, k, e)
				if err != nil {
					return nil, err
				}
				x[k] = n
			}
			return x, nil
		case []any:
			for i, e := range x {
				n, err := walk(fmt.Sprintf("%s[%d]", path, i), key, e)
				if err != nil {
					return nil, err
				}
				x[i] = n
			}
			return x, nil
		}
		return v, nil
	}
	out, err := walk("", "", obj)
	if err != nil {
		return c, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return c, fmt.Errorf("%s: encoding credentials: %v", where, err)
	}
	c.Credentials = b
	return c, nil
}

// syncAttempts bounds how often Sync and Revert run their transaction:
// nodes sharing a database sync the same config at the same time, and the
// loser of a create, update or delete race syncs again against what the
// winner wrote.
const syncAttempts = 5

const syncFailed = "syncing DNS providers from the config"

// Declaration is a validated set of config-declared provider clients, ready
// to be synced: Declare builds it without touching the store, so a config
// that is only validated (caddy validate, adapt, one-off commands) writes
// nothing, and Apply writes it when the config starts.
type Declaration struct {
	decl  []declared
	names map[string]bool
}

type declared struct {
	index int
	p     *storage.DNSProvider
}

// Declare validates the config-declared provider clients (configs already
// expanded with ExpandConfig). It reads and writes nothing: a bad
// declaration is refused here, before the config starts.
func (s *Service) Declare(configs []Config) (*Declaration, error) {
	d := &Declaration{names: map[string]bool{}}
	for i, c := range configs {
		want, err := s.build(c)
		if err != nil {
			var ie *InputError
			if errors.As(err, &ie) {
				return nil, fmt.Errorf("dns_providers[%d] (%s): %s", i, c.Name, ie.Message)
			}
			return nil, fmt.Errorf("dns_providers[%d] (%s): %w", i, c.Name, err)
		}
		if d.names[want.Name] {
			return nil, fmt.Errorf("dns_providers[%d]: the name %q is declared twice", i, want.Name)
		}
		d.names[want.Name] = true
		want.ManagedBy = storage.ManagedByConfig
		d.decl = append(d.decl, declared{i, want})
	}
	// write in name order, so that nodes whose configs list the same
	// providers in different orders take row locks in the same order
	slices.SortStableFunc(d.decl, func(a, b declared) int { return strings.Compare(a.p.Name, b.p.Name) })
	return d, nil
}

// Applied is what one Apply changed, each row as it was before and as
// Apply left it, so that Revert can put the store back as it was.
type Applied struct {
	changes []change
}

type change struct {
	action        string               // dns_provider.create, .update or .delete
	before, after *storage.DNSProvider // before is nil for a create, after for a delete
}

func (c change) provider() *storage.DNSProvider {
	if c.after != nil {
		return c.after
	}
	return c.before
}

// Sync declares configs and applies them at once: Declare, then Apply.
func (s *Service) Sync(ctx context.Context, configs []Config) error {
	d, err := s.Declare(configs)
	if err != nil {
		return fmt.Errorf("%s: %w", syncFailed, err)
	}
	_, err = s.Apply(ctx, d)
	return err
}

// Apply makes the declared provider clients (config as code) the stored
// ones, in one transaction: new ones are created, changed ones updated, and
// config-managed ones no longer declared are removed unless they still
// have challenge records to clean up. A provider client of the same name
// managed through the API is an error, not taken over. Several nodes on one
// database may sync the same config at once: a transaction that loses a
// race with another node's (storage.ErrDuplicate, ErrConflict or
// ErrNotFound) is retried on the stored state it left, a few times. It
// returns what it changed, for Revert.
func (s *Service) Apply(ctx context.Context, d *Declaration) (*Applied, error) {
	var changes []change
	syncOnce := func(tx storage.Store) error {
		changes = nil
		for _, dp := range d.decl {
			w := *dp.p // a fresh copy each attempt: Create fills in its ID and times
			want := &w
			cur, err := tx.DNSProviders().GetByName(ctx, want.Name)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				if err := tx.DNSProviders().Create(ctx, want); err != nil {
					return err
				}
				changes = append(changes, change{action: "dns_provider.create", after: want})
				continue
			case err != nil:
				return err
			case cur.ManagedBy != storage.ManagedByConfig:
				return fmt.Errorf("dns_providers[%d]: a DNS provider named %q already exists and is managed through the API: rename one of them, or delete the API one first", dp.index, want.Name)
			}
			same := cur.Type == want.Type && bytes.Equal(cur.Credentials.Reveal(), want.Credentials.Reveal()) &&
				slices.Equal(cur.Zones, want.Zones) && cur.AccountID == want.AccountID && cur.Group == want.Group &&
				cur.TTL == want.TTL && bytes.Equal(cur.Settings, want.Settings)
			if same {
				continue
			}
			before := *cur
			reverify := cur.Type != want.Type || !bytes.Equal(cur.Credentials.Reveal(), want.Credentials.Reveal()) ||
				!slices.Equal(cur.Zones, want.Zones) || cur.AccountID != want.AccountID
			cur.Type, cur.Credentials, cur.Zones, cur.AccountID, cur.Group = want.Type, want.Credentials, want.Zones, want.AccountID, want.Group
			cur.TTL, cur.Settings = want.TTL, want.Settings
			if reverify {
				cur.Status, cur.LastMessage, cur.VerifiedAt, cur.Verification = StatusUnverified, "", time.Time{}, nil
			}
			if err := tx.DNSProviders().Update(ctx, cur); err != nil {
				return err
			}
			changes = append(changes, change{action: "dns_provider.update", before: &before, after: cur})
		}
		all, err := tx.DNSProviders().List(ctx, "")
		if err != nil {
			return err
		}
		for _, p := range all {
			if p.ManagedBy != storage.ManagedByConfig || d.names[p.Name] {
				continue
			}
			if err := deletable(ctx, tx, p); err != nil {
				if !errors.Is(err, storage.ErrInUse) {
					return err
				}
				s.logger.Warn("dns provider removed from the config kept until its challenge records are cleaned up",
					zap.String("dns_provider", p.Name))
				continue
			}
			if err := tx.DNSProviders().Delete(ctx, p.ID); err != nil {
				return err
			}
			changes = append(changes, change{action: "dns_provider.delete", before: p})
		}
		for _, ch := range changes {
			if err := s.audit(ctx, tx, storage.ActorConfig, ch.action, ch.provider(), nil); err != nil {
				return err
			}
		}
		return nil
	}
	if err := s.inTxRetrying(ctx, "sync", syncOnce); err != nil {
		return nil, fmt.Errorf("%s: %w", syncFailed, err)
	}
	for _, ch := range changes {
		s.forget(ch.provider().ID)
		s.logger.Info("dns provider synced from config", zap.String("dns_provider", ch.provider().Name),
			zap.String("action", strings.TrimPrefix(ch.action, "dns_provider.")))
	}
	return &Applied{changes: changes}, nil
}

// Revert undoes what Apply changed, for a config that synced and then
// failed to start: created provider clients are removed, updated ones get
// their previous settings back, and removed ones are stored again under
// their old IDs (workflows refer to provider clients by ID). A row changed
// since Apply, by another node or the API, is left as it is (and logged),
// as is a created one that already has challenge records.
func (s *Service) Revert(ctx context.Context, a *Applied) error {
	if a == nil || len(a.changes) == 0 {
		return nil
	}
	reason := map[string]any{"reason": "reverted: the config that synced it failed to start"}
	var reverted []change
	revertOnce := func(tx storage.Store) error {
		reverted = nil
		for i := len(a.changes) - 1; i >= 0; i-- {
			ch := a.changes[i]
			p := ch.provider()
			switch ch.action {
			case "dns_provider.create", "dns_provider.update":
				cur, err := tx.DNSProviders().Get(ctx, p.ID)
				if errors.Is(err, storage.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if cur.Version != ch.after.Version {
					s.logger.Warn("dns provider changed since the failed config synced it: left as it is",
						zap.String("dns_provider", p.Name))
					continue
				}
				if ch.action == "dns_provider.create" {
					if err := deletable(ctx, tx, cur); err != nil {
						if !errors.Is(err, storage.ErrInUse) {
							return err
						}
						s.logger.Warn("dns provider of the failed config kept until its challenge records are cleaned up",
							zap.String("dns_provider", p.Name))
						continue
					}
					if err := tx.DNSProviders().Delete(ctx, cur.ID); err != nil {
						return err
					}
					reverted = append(reverted, change{action: "dns_provider.delete", before: cur})
					continue
				}
				restored := *ch.before
				restored.Version = cur.Version
				if err := tx.DNSProviders().Update(ctx, &restored); err != nil {
					return err
				}
				reverted = append(reverted, change{action: "dns_provider.update", before: cur, after: &restored})
			case "dns_provider.delete":
				if _, err := tx.DNSProviders().GetByName(ctx, p.Name); err == nil {
					s.logger.Warn("dns provider recreated since the failed config removed it: left as it is",
						zap.String("dns_provider", p.Name))
					continue
				} else if !errors.Is(err, storage.ErrNotFound) {
					return err
				}
				restored := *ch.before
				if err := tx.DNSProviders().Create(ctx, &restored); err != nil {
					return err
				}
				reverted = append(reverted, change{action: "dns_provider.create", after: &restored})
			}
		}
		for _, ch := range reverted {
			if err := s.audit(ctx, tx, storage.ActorConfig, ch.action, ch.provider(), reason); err != nil {
				return err
			}
		}
		return nil
	}
	if err := s.inTxRetrying(ctx, "revert", revertOnce); err != nil {
		return fmt.Errorf("reverting the DNS providers synced by a config that failed to start: %w", err)
	}
	for _, ch := range reverted {
		s.forget(ch.provider().ID)
		s.logger.Info("dns provider sync reverted", zap.String("dns_provider", ch.provider().Name),
			zap.String("action", strings.TrimPrefix(ch.action, "dns_provider.")))
	}
	return nil
}

// inTxRetrying runs fn in a transaction, again (a few times) when it lost
// a race with another node's transaction on the same rows.
func (s *Service) inTxRetrying(ctx context.Context, what string, fn func(tx storage.Store) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = s.store.InTx(ctx, fn)
		lostRace := errors.Is(err, storage.ErrDuplicate) || errors.Is(err, storage.ErrConflict) || errors.Is(err, storage.ErrNotFound)
		if !lostRace || attempt == syncAttempts || ctx.Err() != nil {
			return err
		}
		s.logger.Debug("dns provider "+what+" raced another node; trying again", zap.Int("attempt", attempt), zap.Error(err))
	}
}
