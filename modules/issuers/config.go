package issuers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/placeholder"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Config declares an issuer in the app's configuration (config as code).
// It is validated when the config is provisioned (caddy validate included)
// and, when the config starts, created or updated in the store and marked
// managed_by "config": the admin API shows it but cannot change or delete
// it. Its account is registered on first use (or by the test action), so a
// CA that is down does not stop CertLocker from starting.
type Config struct {
	// Name identifies the issuer; workflows and the API refer to it.
	// Required.
	Name string `json:"name"`

	// Catalog is the ID of a CA in the built-in catalog
	// (GET /certlocker/catalog), or "custom". Default: "custom" when
	// directory_url is set.
	Catalog string `json:"catalog,omitempty"`

	// DirectoryURL is the ACME directory of a custom issuer, or replaces a
	// catalog entry's URL (a regional endpoint). Default: the catalog
	// entry's URL.
	DirectoryURL string `json:"directory_url,omitempty"`

	// DirectoryParams fill the parts of a templated catalog URL, such as
	// HARICA's {"account": "..."}. Default: none.
	DirectoryParams map[string]string `json:"directory_params,omitempty"`

	// Contacts are email addresses the CA may write to about the account.
	// Default: none.
	Contacts []string `json:"contacts,omitempty"`

	// EAB is the external account binding some CAs require. Default: none.
	EAB *EABConfig `json:"eab,omitempty"`

	// AccountKeyType is the account key: p256, p384, rsa2048, rsa3072 or
	// rsa4096. Default: p256.
	AccountKeyType string `json:"account_key_type,omitempty"`

	// Profile is the certificate profile to order (from the directory's
	// meta.profiles). Default: the CA's default.
	Profile string `json:"profile,omitempty"`

	// PreferredChain is the common name of the root (or intermediate) to
	// prefer when the CA offers alternate chains. Default: the CA's
	// default chain.
	PreferredChain string `json:"preferred_chain,omitempty"`

	// TrustedRootsPEMFiles are PEM files of private roots the CA's
	// directory and certificates chain to (step-ca, Pebble, ...); read at
	// provision. Default: none (system roots).
	TrustedRootsPEMFiles []string `json:"trusted_roots_pem_files,omitempty"`

	// Group scopes the issuer for access and listing. Default: none.
	Group string `json:"group,omitempty"`

	// AgreeTerms agrees to the CA's terms of service, which most public
	// CAs require before registering. Default: false.
	AgreeTerms bool `json:"agree_terms,omitempty"`
}

// EABConfig is an external account binding.
type EABConfig struct {
	// KeyID is the key identifier the CA issued. Placeholders are expanded.
	KeyID string `json:"key_id"`
	// MACKey is the HMAC key, base64url. It must be only placeholders,
	// such as "{env.GTS_EAB_MAC}" or "{file./run/secrets/eab}", with no
	// literal text around them, so no part of it appears in GET /config/.
	MACKey string `json:"mac_key"`
}

// Spec expands the config's placeholders and reads its root files. Errors
// name the field, never a secret value.
func (c Config) Spec(repl *caddy.Replacer) (Spec, error) {
	expand := func(v, field string) (string, error) {
		if v == "" {
			return "", nil
		}
		out, err := repl.ReplaceOrErr(v, true, true)
		if err != nil {
			return "", fmt.Errorf("issuer %s: %s: %v", c.Name, field, err)
		}
		return out, nil
	}
	spec := Spec{Name: c.Name, CatalogID: c.Catalog, Contacts: c.Contacts, AccountKeyType: c.AccountKeyType,
		Profile: c.Profile, PreferredChain: c.PreferredChain, Group: c.Group, AgreeTerms: c.AgreeTerms}
	var err error
	if spec.DirectoryURL, err = expand(c.DirectoryURL, "directory_url"); err != nil {
		return spec, err
	}
	if len(c.DirectoryParams) > 0 {
		spec.DirectoryParams = map[string]string{}
		for k, v := range c.DirectoryParams {
			if spec.DirectoryParams[k], err = expand(v, "directory_params."+k); err != nil {
				return spec, err
			}
		}
	}
	if c.EAB != nil {
		if spec.EABKeyID, err = expand(c.EAB.KeyID, "eab.key_id"); err != nil {
			return spec, err
		}
		if c.EAB.MACKey != "" && !placeholder.Only(c.EAB.MACKey) {
			return spec, fmt.Errorf(`issuer %s: eab.mac_key must be a placeholder such as "{env.EAB_MAC_KEY}" or "{file./run/secrets/eab-mac}", with nothing written around it: a key written in the config would be visible in GET /config/`, c.Name)
		}
		mac, err := repl.ReplaceOrErr(c.EAB.MACKey, true, true)
		if err != nil {
			return spec, fmt.Errorf("issuer %s: expanding eab.mac_key (redacted): %v", c.Name, err)
		}
		spec.EABMACKey = storage.NewSecret([]byte(strings.TrimSpace(mac)))
	}
	var roots []string
	for _, f := range c.TrustedRootsPEMFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return spec, fmt.Errorf("issuer %s: reading trusted_roots_pem_files: %w", c.Name, err)
		}
		roots = append(roots, strings.TrimSpace(string(b)))
	}
	spec.CustomRootsPEM = strings.Join(roots, "\n")
	return spec, nil
}

// Declaration is a validated set of config-declared issuers, ready to be
// synced: Declare builds it without touching the store, so a config that is
// only validated (caddy validate, adapt, one-off commands) writes nothing,
// and Apply writes it when the config starts.
type Declaration struct {
	drafts []*draft
	names  map[string]bool
	terms  map[string]bool
}

// Declare validates the config-declared issuers. It reads and writes
// nothing: a bad declaration is refused here, before the config starts.
func (s *Service) Declare(specs []Spec) (*Declaration, error) {
	d := &Declaration{names: map[string]bool{}, terms: map[string]bool{}}
	for i, spec := range specs {
		dr, err := s.check(spec)
		if err != nil {
			var e *Error
			if errors.As(err, &e) && e.Field != "" {
				return nil, fmt.Errorf("issuers[%d] %q: %s: %w", i, spec.Name, e.Field, err)
			}
			return nil, fmt.Errorf("issuers[%d] %q: %w", i, spec.Name, err)
		}
		if d.names[spec.Name] {
			return nil, fmt.Errorf("issuers[%d]: the name %q is declared twice", i, spec.Name)
		}
		d.names[spec.Name], d.terms[spec.Name] = true, spec.AgreeTerms
		dr.iss.ManagedBy = storage.ManagedByConfig
		d.drafts = append(d.drafts, dr)
	}
	return d, nil
}

// SyncConfig declares specs and applies them at once: Declare, then Apply.
func (s *Service) SyncConfig(ctx context.Context, specs []Spec) error {
	d, err := s.Declare(specs)
	if err != nil {
		return err
	}
	_, err = s.Apply(ctx, d)
	return err
}

// Applied is what one Apply changed, each issuer as it was before and as
// Apply left it, so that Revert can put the store back as it was.
type Applied struct {
	changes []issuerChange
}

type issuerChange struct {
	action        string          // issuer.create, .update or .release
	before, after *storage.Issuer // before is nil for a create
	fields        []string        // the declared fields an update changed
}

// Apply makes the store hold exactly the declared issuers as managed_by
// "config", in one transaction: new ones are created (unregistered),
// changed ones updated, and issuers no longer declared are handed over to
// the API (managed_by "api") rather than deleted, so no account key is
// lost. A change to the directory, EAB credentials, key type or contacts
// re-registers the account on next use. It fails, and changes nothing, if
// a declared issuer has the name of one created through the API. It
// returns what it changed, for Revert.
func (s *Service) Apply(ctx context.Context, d *Declaration) (*Applied, error) {
	var (
		changes []issuerChange
		err     error
	)
	// Nodes sharing a database sync the same config at the same time: the
	// loser of a create or update race sees ErrDuplicate or ErrConflict and
	// syncs again against what the winner wrote.
	for attempt := 0; attempt < 3; attempt++ {
		changes = nil
		err = s.store.InTx(ctx, func(tx storage.Store) error { return s.applyOnce(ctx, tx, d, &changes) })
		if !errors.Is(err, storage.ErrDuplicate) && !errors.Is(err, storage.ErrConflict) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("syncing issuers declared in config: %w", err)
	}
	s.mu.Lock()
	s.declaredTerms = d.terms
	s.mu.Unlock()
	for _, ch := range changes {
		iss := ch.after
		fields := []zap.Field{zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID)}
		switch ch.action {
		case "issuer.create":
			s.logger.Info("issuer declared in config created", append(fields, zap.String("ca", iss.DirectoryURL))...)
		case "issuer.update":
			s.logger.Info("issuer declared in config updated", append(fields, zap.Strings("fields", ch.fields))...)
		case "issuer.release":
			s.logger.Warn("issuer no longer declared in config: now managed through the API", fields...)
		}
	}
	return &Applied{changes: changes}, nil
}

// applyOnce is one attempt of Apply, in tx.
func (s *Service) applyOnce(ctx context.Context, tx storage.Store, d *Declaration, changes *[]issuerChange) error {
	for _, dr := range d.drafts {
		w := *dr.iss // a fresh copy each attempt: Create fills in its ID and times
		want := &w
		cur, err := tx.Issuers().GetByName(ctx, want.Name)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			if err := tx.Issuers().Create(ctx, want); err != nil {
				return err
			}
			if err := s.audit(ctx, tx, storage.ActorConfig, "issuer.create", want, map[string]any{"catalog_id": want.CatalogID,
				"directory_url": want.DirectoryURL, "eab": want.EABKeyID != "", "managed_by": storage.ManagedByConfig}); err != nil {
				return err
			}
			*changes = append(*changes, issuerChange{action: "issuer.create", after: want})
			continue
		case err != nil:
			return err
		case cur.ManagedBy != storage.ManagedByConfig:
			return fmt.Errorf("issuer %q exists and is managed through the API: rename the issuer in the config, or delete the API one", want.Name)
		}
		before := *cur
		changed := applyDeclared(cur, want)
		if len(changed) == 0 {
			continue
		}
		if err := tx.Issuers().Update(ctx, cur); err != nil {
			return err
		}
		if err := s.audit(ctx, tx, storage.ActorConfig, "issuer.update", cur, map[string]any{"fields": changed}); err != nil {
			return err
		}
		*changes = append(*changes, issuerChange{action: "issuer.update", before: &before, after: cur, fields: changed})
	}
	stale, err := tx.Issuers().List(ctx, storage.IssuerFilter{ManagedBy: storage.ManagedByConfig})
	if err != nil {
		return err
	}
	for _, iss := range stale {
		if d.names[iss.Name] {
			continue
		}
		before := *iss
		iss.ManagedBy = storage.ManagedByAPI
		if err := tx.Issuers().Update(ctx, iss); err != nil {
			return err
		}
		if err := s.audit(ctx, tx, storage.ActorConfig, "issuer.release", iss, map[string]any{"managed_by": storage.ManagedByAPI}); err != nil {
			return err
		}
		*changes = append(*changes, issuerChange{action: "issuer.release", before: &before, after: iss})
	}
	return nil
}

// Revert undoes what Apply changed, for a config that synced and then
// failed to start: created issuers are removed, and updated or released
// ones get their previous row back (managed_by, account state and all).
// An issuer changed since Apply (its account registered, or edited by
// another node) is left as it is and logged, as is a created one that
// workflows already use.
func (s *Service) Revert(ctx context.Context, a *Applied) error {
	if a == nil || len(a.changes) == 0 {
		return nil
	}
	reason := map[string]any{"reason": "reverted: the config that synced it failed to start"}
	var (
		reverted []issuerChange
		err      error
	)
	revertOnce := func(tx storage.Store) error {
		reverted = nil
		for i := len(a.changes) - 1; i >= 0; i-- {
			ch := a.changes[i]
			cur, err := tx.Issuers().Get(ctx, ch.after.ID)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if cur.Version != ch.after.Version {
				s.logger.Warn("issuer changed since the failed config synced it: left as it is",
					zap.String("issuer", cur.Name), zap.String("issuer_id", cur.ID))
				continue
			}
			if ch.action == "issuer.create" {
				if err := tx.Issuers().Delete(ctx, cur.ID); err != nil {
					if errors.Is(err, storage.ErrInUse) {
						s.logger.Warn("issuer of the failed config kept: workflows use it",
							zap.String("issuer", cur.Name), zap.String("issuer_id", cur.ID))
						continue
					}
					return err
				}
				if err := s.audit(ctx, tx, storage.ActorConfig, "issuer.delete", cur, reason); err != nil {
					return err
				}
				reverted = append(reverted, issuerChange{action: "issuer.delete", after: cur})
				continue
			}
			restored := *ch.before
			restored.Version = cur.Version
			if err := tx.Issuers().Update(ctx, &restored); err != nil {
				return err
			}
			if err := s.audit(ctx, tx, storage.ActorConfig, "issuer.update", &restored, reason); err != nil {
				return err
			}
			reverted = append(reverted, issuerChange{action: "issuer.update", before: cur, after: &restored})
		}
		return nil
	}
	for attempt := 0; attempt < 3; attempt++ {
		err = s.store.InTx(ctx, revertOnce)
		if !errors.Is(err, storage.ErrConflict) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("reverting the issuers synced by a config that failed to start: %w", err)
	}
	for _, ch := range reverted {
		s.logger.Info("issuer sync reverted", zap.String("issuer", ch.after.Name), zap.String("issuer_id", ch.after.ID),
			zap.String("action", strings.TrimPrefix(ch.action, "issuer.")))
	}
	return nil
}

// applyDeclared copies the declared fields of want onto cur and returns
// the names of those that changed. A change that concerns the account
// resets it to unregistered, keeping the key when it can be reused.
func applyDeclared(cur, want *storage.Issuer) []string {
	var changed, account []string
	set := func(name string, dst *string, v string, acct bool) {
		if *dst != v {
			*dst = v
			changed = append(changed, name)
			if acct {
				account = append(account, name)
			}
		}
	}
	set("catalog_id", &cur.CatalogID, want.CatalogID, false)
	set("directory_url", &cur.DirectoryURL, want.DirectoryURL, true)
	set("eab_key_id", &cur.EABKeyID, want.EABKeyID, true)
	set("account_key_type", &cur.AccountKeyType, want.AccountKeyType, true)
	set("profile", &cur.Profile, want.Profile, false)
	set("preferred_chain", &cur.PreferredChain, want.PreferredChain, false)
	set("custom_roots_pem", &cur.CustomRootsPEM, want.CustomRootsPEM, false)
	set("group", &cur.Group, want.Group, false)
	if !bytes.Equal(cur.EABMACKey.Reveal(), want.EABMACKey.Reveal()) {
		cur.EABMACKey = want.EABMACKey
		changed, account = append(changed, "eab_mac_key"), append(account, "eab_mac_key")
	}
	if !slices.Equal(cur.Contacts, want.Contacts) {
		cur.Contacts = want.Contacts
		changed, account = append(changed, "contacts"), append(account, "contacts")
	}
	if len(account) > 0 && (cur.AccountURL != "" || cur.Status != StatusUnregistered) {
		if cur.Status == StatusDeactivated && !slices.Contains(account, "directory_url") {
			cur.AccountKey = storage.Secret{} // the old account is gone: start afresh
		}
		cur.AccountURL, cur.Status, cur.RegisteredAt = "", StatusUnregistered, time.Time{}
		cur.TermsAgreed, cur.TermsAgreedAt = "", time.Time{}
		cur.LastMessage = "config changed " + strings.Join(account, ", ") + ": the account registers again on next use"
	}
	return changed
}

// UnmarshalCaddyfile sets up the issuer from Caddyfile tokens. The
// dispenser must be on the "issuer" token. Syntax:
//
//	issuer <name> {
//		catalog <id>
//		directory <url>
//		directory_param <name> <value>
//		email <address>...
//		eab <key_id> <mac_key_placeholder>
//		key_type p256|p384|rsa2048|rsa3072|rsa4096
//		profile <name>
//		preferred_chain <common_name>
//		trusted_roots <pem_file>...
//		group <group>
//		agree_terms
//	}
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("issuer needs a name, e.g. issuer letsencrypt-prod { ... }")
	}
	c.Name = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	one := func(dst *string) error {
		if !d.NextArg() {
			return d.ArgErr()
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "catalog":
			if err := one(&c.Catalog); err != nil {
				return err
			}
		case "directory":
			if err := one(&c.DirectoryURL); err != nil {
				return err
			}
		case "directory_param":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			if c.DirectoryParams == nil {
				c.DirectoryParams = map[string]string{}
			}
			c.DirectoryParams[args[0]] = args[1]
		case "email":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Contacts = append(c.Contacts, args...)
		case "eab":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Err("eab needs a key ID and a MAC key placeholder, e.g. eab {env.EAB_KID} {env.EAB_MAC}")
			}
			if !placeholder.Only(args[1]) {
				return d.Err(`the eab MAC key must be a placeholder such as {env.EAB_MAC_KEY} or {file./run/secrets/eab-mac}, with nothing written around it, so it stays out of the adapted JSON`)
			}
			c.EAB = &EABConfig{KeyID: args[0], MACKey: args[1]}
		case "key_type":
			if err := one(&c.AccountKeyType); err != nil {
				return err
			}
			if !slices.Contains(KeyTypes, c.AccountKeyType) {
				return d.Errf("unsupported key_type %q: use one of %s", c.AccountKeyType, strings.Join(KeyTypes, ", "))
			}
		case "profile":
			if err := one(&c.Profile); err != nil {
				return err
			}
		case "preferred_chain":
			if err := one(&c.PreferredChain); err != nil {
				return err
			}
		case "trusted_roots":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.TrustedRootsPEMFiles = append(c.TrustedRootsPEMFiles, args...)
		case "group":
			if err := one(&c.Group); err != nil {
				return err
			}
		case "agree_terms":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.AgreeTerms = true
		default:
			return d.Errf("unrecognized issuer subdirective: %s", d.Val())
		}
	}
	if c.Catalog != "" {
		if _, ok := LookupCatalog(c.Catalog); !ok {
			return d.Errf("issuer %s: unknown catalog %q", c.Name, c.Catalog)
		}
	}
	if c.Catalog == "" && c.DirectoryURL == "" {
		return d.Errf("issuer %s needs catalog <id> or directory <url>", c.Name)
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Config)(nil)
