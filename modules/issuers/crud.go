// Creating, reading, updating, deleting and refreshing issuers.

package issuers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Create checks spec, registers the account at the CA, and stores the
// issuer. If anything fails, nothing is stored.
func (s *Service) Create(ctx context.Context, actor string, spec Spec) (*storage.Issuer, error) {
	d, err := s.check(spec)
	if err != nil {
		return nil, err
	}
	if !storage.InScope(ctx, d.iss.Group) {
		return nil, &Error{Kind: KindInvalid, Field: "group", Message: fmt.Sprintf("group %q is not one of yours: choose one of your groups", d.iss.Group)}
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
// Under a group scope (storage.WithGroups), issuers of other groups are
// not found.
func (s *Service) Get(ctx context.Context, id string) (*storage.Issuer, error) {
	iss, err := s.store.Issuers().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := storage.CheckScope(ctx, iss.Group, "ACME client "+id); err != nil {
		return nil, err
	}
	return iss, nil
}

// List returns the issuers matching f, by name.
// Under a group scope only the scope's issuers are listed.
func (s *Service) List(ctx context.Context, f storage.IssuerFilter) ([]*storage.Issuer, error) {
	g, ok := storage.NarrowGroup(ctx, f.Group)
	if !ok {
		return nil, nil
	}
	f.Group = g
	list, err := s.store.Issuers().List(ctx, f)
	if err != nil {
		return nil, err
	}
	return storage.FilterScope(ctx, list, func(iss *storage.Issuer) string { return iss.Group }), nil
}

// ListPage returns a page of the issuers matching f, by name. Under a
// group scope the query itself keeps the scope's issuers, so a page is
// full whatever other groups' issuers lie between.
func (s *Service) ListPage(ctx context.Context, f storage.IssuerFilter, p storage.Page) ([]*storage.Issuer, string, error) {
	g, groups, ok := storage.ScopeFilter(ctx, f.Group)
	if !ok {
		return nil, "", nil
	}
	f.Group, f.Groups = g, groups
	return s.store.Issuers().ListPage(ctx, f, p)
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
	iss, err := s.Get(ctx, id)
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
		if !storage.ValidName(*p.Name) {
			return nil, invalid("name", "name must be "+storage.NameRule)
		}
		if err := s.nameFree(ctx, *p.Name); err != nil {
			return nil, err
		}
		iss.Name, changed = *p.Name, append(changed, "name")
	}
	if p.Group != nil && *p.Group != iss.Group {
		if !storage.InScope(ctx, *p.Group) {
			return nil, &Error{Kind: KindInvalid, Field: "group", Message: fmt.Sprintf("group %q is not one of yours", *p.Group)}
		}
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

// Delete forgets an issuer. It is refused while workflows use it, and for
// issuers declared in the config. The account stays at the CA: deactivate
// it first to retire it there too.
func (s *Service) Delete(ctx context.Context, actor, id string) error {
	iss, err := s.Get(ctx, id)
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
	iss, err := s.Get(ctx, id)
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
