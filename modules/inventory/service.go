package inventory

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/renewal"
	"github.com/certlocker/caddy-certlocker/storage"
)

// ImportRequest is a certificate to import.
type ImportRequest struct {
	// PEM is the certificate chain, leaf first or in any order, and
	// optionally its private key.
	PEM string
	// KeyPEM is the private key, if not in PEM.
	KeyPEM string
	// Group scopes the certificate (like ACME clients and DNS providers).
	Group string
}

// Import adds a certificate from PEM, its key (if given) sealed at rest.
// Importing a certificate already in the inventory (same SHA-256
// fingerprint) changes nothing and returns the stored one with created
// false. Bad input is an *InputError and stores nothing.
func (s *Service) Import(ctx context.Context, req ImportRequest, actor string) (c *storage.Certificate, created bool, err error) {
	if !storage.ValidGroup(req.Group) {
		return nil, false, inputErr("group", "%q is not a group name: use %s", req.Group, storage.GroupRule)
	}
	if !storage.InScope(ctx, req.Group) {
		return nil, false, inputErr("group", "group %q is not one of yours: choose one of your groups", req.Group)
	}
	p, err := Parse([]byte(req.PEM), []byte(req.KeyPEM))
	if err != nil {
		return nil, false, err
	}
	if existing, err := s.store.Certificates().GetByFingerprint(ctx, p.Meta.FingerprintSHA256); err == nil {
		return existing, false, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, false, err
	}
	now := s.now()
	if err := s.analyse(ctx, p, "", now); err != nil {
		return nil, false, err
	}
	c, err = s.record(p, storage.CertSourceImported, "", "", "", req.Group)
	if err != nil {
		return nil, false, err
	}
	err = s.store.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Certificates().Put(ctx, c); err != nil {
			return err
		}
		d, _ := json.Marshal(map[string]any{"fingerprint": c.Fingerprint, "names": c.Names, "issuer": c.IssuerDN,
			"not_after": c.NotAfter, "rating": c.Rating, "private_key": !c.PrivateKey.IsZero(), "group": c.Group})
		return s.audit(ctx, tx, actor, "certificate.import", c, "", d)
	})
	if errors.Is(err, storage.ErrDuplicate) { // imported concurrently
		existing, gerr := s.store.Certificates().GetByFingerprint(ctx, c.Fingerprint)
		if gerr != nil {
			return nil, false, gerr
		}
		return existing, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("importing certificate: %w", err)
	}
	s.logger.Info("certificate imported", zap.String("certificate_id", c.ID), zap.Strings("identifiers", c.Names),
		zap.String("issuer_dn", c.IssuerDN), zap.Time("expiration", c.NotAfter), zap.String("rating", c.Rating))
	return c, true, nil
}

// AddIssued adds a certificate an ACME client issued through a workflow:
// chainPEM is what the CA returned, key the certificate's private key
// (a crypto.Signer, PEM as []byte or string, or nil). The workflow (if
// workflowID is set) gives the group and the certificate it renews, which
// is marked renewed, and drops its copy of the key in the same transaction:
// the certificate holds the only one. Adding the same certificate again
// changes nothing and returns the stored one.
func (s *Service) AddIssued(ctx context.Context, chainPEM []byte, key any, issuerID, workflowID, profile string) (*storage.Certificate, error) {
	if issuerID == "" {
		return nil, errors.New("adding issued certificate: no ACME client given")
	}
	var keyPEM []byte
	switch k := key.(type) {
	case nil:
	case []byte:
		keyPEM = k
	case string:
		keyPEM = []byte(k)
	case crypto.Signer:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("adding issued certificate: encoding private key: %w", err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	default:
		return nil, fmt.Errorf("adding issued certificate: unsupported key type %T", key)
	}
	p, err := Parse(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("adding issued certificate: %w", err)
	}
	group, previous := "", ""
	if workflowID != "" {
		w, err := s.store.Workflows().Get(ctx, workflowID)
		if err != nil {
			return nil, fmt.Errorf("adding issued certificate: %w", err)
		}
		group, previous = w.Group, w.PreviousCertificateID
	}
	if err := s.analyse(ctx, p, issuerID, s.now()); err != nil {
		return nil, err
	}
	c, err := s.record(p, storage.CertSourceIssued, issuerID, workflowID, profile, group)
	if err != nil {
		return nil, err
	}
	var existing *storage.Certificate
	err = s.store.InTx(ctx, func(tx storage.Store) error {
		err := tx.Certificates().Put(ctx, c)
		if err == nil || errors.Is(err, storage.ErrDuplicate) {
			// the certificate holds the only copy of its key from now on
			if workflowID != "" {
				if derr := tx.Workflows().DropPrivateKey(ctx, workflowID); derr != nil {
					return derr
				}
			}
		}
		if errors.Is(err, storage.ErrDuplicate) {
			existing, err = tx.Certificates().GetByFingerprint(ctx, c.Fingerprint)
			return err
		}
		if err != nil {
			return err
		}
		if previous != "" {
			prev, err := tx.Certificates().Get(ctx, previous)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				s.logger.Warn("renewed certificate not in the inventory", zap.String("certificate_id", previous),
					zap.String("workflow_id", workflowID))
			case err != nil:
				return err
			case prev.ReplacedBy == "":
				prev.Status, prev.ReplacedBy = storage.CertStatusRenewed, c.ID
				if err := tx.Certificates().Update(ctx, prev); err != nil {
					return err
				}
			}
		}
		d, _ := json.Marshal(map[string]any{"fingerprint": c.Fingerprint, "names": c.Names, "issuer_id": issuerID,
			"workflow_id": workflowID, "profile": profile, "not_after": c.NotAfter, "rating": c.Rating, "renews": previous})
		actor := "workflow"
		if workflowID != "" {
			actor += ":" + workflowID
		}
		return s.audit(ctx, tx, actor, "certificate.issued", c, "", d)
	})
	if err != nil {
		return nil, fmt.Errorf("adding issued certificate: %w", err)
	}
	if existing != nil {
		return existing, nil
	}
	s.logger.Info("certificate added to inventory", zap.String("certificate_id", c.ID), zap.Strings("identifiers", c.Names),
		zap.String("issuer_id", issuerID), zap.String("workflow_id", workflowID), zap.Time("expiration", c.NotAfter),
		zap.String("rating", c.Rating))
	return c, nil
}

// Get returns one certificate.
// Under a group scope (storage.WithGroups), certificates of other groups
// are not found.
func (s *Service) Get(ctx context.Context, id string) (*storage.Certificate, error) {
	c, err := s.store.Certificates().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := storage.CheckScope(ctx, c.Group, "certificate "+id); err != nil {
		return nil, err
	}
	return c, nil
}

// List returns a page of certificates.
// Under a group scope only the scope's certificates are listed, filtered
// in the query (a page is full however the groups' rows interleave).
func (s *Service) List(ctx context.Context, f storage.CertificateFilter, p storage.Page) ([]*storage.Certificate, string, error) {
	g, groups, ok := storage.ScopeFilter(ctx, f.Group)
	if !ok {
		return nil, "", nil
	}
	f.Group, f.Groups = g, groups
	list, next, err := s.store.Certificates().List(ctx, f, p)
	if err != nil {
		return nil, "", err
	}
	return storage.FilterScope(ctx, list, func(c *storage.Certificate) string { return c.Group }), next, nil
}

// Delete removes a certificate from the inventory; storage.ErrInUse while
// certificate tokens use it.
func (s *Service) Delete(ctx context.Context, id, actor string) error {
	return s.store.InTx(ctx, func(tx storage.Store) error {
		c, err := tx.Certificates().Get(ctx, id)
		if err != nil {
			return err
		}
		if err := storage.CheckScope(ctx, c.Group, "certificate "+id); err != nil {
			return err
		}
		if err := tx.Certificates().Delete(ctx, id); err != nil {
			return err
		}
		d, _ := json.Marshal(map[string]any{"fingerprint": c.Fingerprint, "names": c.Names, "not_after": c.NotAfter})
		return s.audit(ctx, tx, actor, "certificate.delete", c, "", d)
	})
}

// Refresh re-verifies and re-rates every certificate at the current time
// (ratings change as certificates near expiry, chains expire, and the CA
// catalog learns issuers) and stores those whose rating or catalog entry
// changed. It returns how many it updated. Run it daily.
func (s *Service) Refresh(ctx context.Context) (int, error) {
	now := s.now()
	roots := map[string]*x509.CertPool{}
	extra := s.extraRoots
	cached := *s
	cached.extraRoots = func(ctx context.Context, issuerID string) (*x509.CertPool, error) {
		if p, ok := roots[issuerID]; ok {
			return p, nil
		}
		p, err := extra(ctx, issuerID)
		if err == nil {
			roots[issuerID] = p
		}
		return p, err
	}
	updated := 0
	cursor := ""
	for {
		page, next, err := s.store.Certificates().List(ctx, storage.CertificateFilter{Sort: "added"},
			storage.Page{Cursor: cursor, Limit: 200})
		if err != nil {
			return updated, fmt.Errorf("refreshing ratings: %w", err)
		}
		for _, c := range page {
			changed, err := cached.rerate(ctx, c, now)
			if err != nil {
				return updated, fmt.Errorf("refreshing rating of certificate %s: %w", c.ID, err)
			}
			if changed {
				updated++
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if updated > 0 {
		s.logger.Info("certificate ratings refreshed", zap.Int("count", updated))
	}
	return updated, nil
}

// rerate recomputes c's metadata at now and stores it if it changed.
func (s *Service) rerate(ctx context.Context, c *storage.Certificate, now time.Time) (bool, error) {
	p, err := Parse([]byte(c.ChainPEM), nil)
	if err != nil {
		return false, err
	}
	if err := s.analyse(ctx, p, c.IssuerID, now); err != nil {
		return false, err
	}
	var old Metadata
	_ = json.Unmarshal(c.Meta, &old)
	if p.Meta.Rating.Grade == c.Rating && p.Meta.CatalogID == c.CatalogID && sameFactors(old.Rating.Factors, p.Meta.Rating.Factors) &&
		old.Trust.Verified == p.Meta.Trust.Verified {
		return false, nil
	}
	p.Meta.Source, p.Meta.IssuerID, p.Meta.WorkflowID, p.Meta.Profile = c.Source, c.IssuerID, c.WorkflowID, c.Profile
	p.Meta.RenewalWindow = renewal.WindowOf(c.Meta) // the engine's, not the certificate's
	meta, err := json.Marshal(p.Meta)
	if err != nil {
		return false, err
	}
	c.Rating, c.CatalogID, c.Meta = p.Meta.Rating.Grade, p.Meta.CatalogID, meta
	err = s.store.Certificates().Update(ctx, c)
	if errors.Is(err, storage.ErrConflict) || errors.Is(err, storage.ErrNotFound) {
		return false, nil // changed or deleted meanwhile: the next refresh sees it
	}
	return err == nil, err
}

func sameFactors(a, b []Factor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Grade != b[i].Grade {
			return false
		}
	}
	return true
}

// analyse maps the issuer to the CA catalog, verifies the chain and rates
// the certificate, at now.
func (s *Service) analyse(ctx context.Context, p *Parsed, issuerID string, now time.Time) error {
	if s.matchCA != nil {
		if id, ok := s.matchCA(p.Leaf.Issuer); ok {
			p.Meta.CatalogID = id
		}
	}
	extra, err := s.extraRoots(ctx, issuerID)
	if err != nil {
		return fmt.Errorf("loading trusted roots: %w", err)
	}
	p.Meta.Trust = verify(p.Leaf, p.Chain, s.system, extra, now)
	p.Meta.Rating = Rate(&p.Meta, now)
	return nil
}

// verify checks the chain against the system roots, then the extra roots.
// It verifies at now if the leaf is valid then, else in the middle of the
// leaf's validity, so that the chain's structure is judged apart from the
// leaf's expiry (which the time_left factor rates).
func verify(leaf *x509.Certificate, chain []*x509.Certificate, system, extra *x509.CertPool, now time.Time) Trust {
	t := Trust{CheckedAt: now.UTC()}
	at := now
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	try := func(roots *x509.CertPool, by string) error {
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return err
		}
		t.Verified, t.TrustedBy, t.Error, t.Expired = true, by, "", false
		for _, c := range chains[0] {
			t.Path = append(t.Path, c.Subject.String())
		}
		return nil
	}
	err := try(system, "system")
	if err != nil && extra != nil {
		if err2 := try(extra, "acme_client"); err2 == nil {
			err = nil
		} else if _, unknown := err.(x509.UnknownAuthorityError); unknown {
			err = err2 // the custom roots' answer is the more telling one
		}
	}
	if err != nil {
		t.Error = err.Error()
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			t.Expired = true
		}
	}
	return t
}

// record builds the store row for p.
func (s *Service) record(p *Parsed, source, issuerID, workflowID, profile, group string) (*storage.Certificate, error) {
	p.Meta.Source, p.Meta.IssuerID, p.Meta.WorkflowID, p.Meta.Profile = source, issuerID, workflowID, profile
	meta, err := json.Marshal(p.Meta)
	if err != nil {
		return nil, fmt.Errorf("encoding certificate metadata: %w", err)
	}
	names := append(append([]string{}, p.Meta.DNSNames...), p.Meta.IPAddresses...)
	cn := p.Meta.CommonName
	if cn == "" && len(names) > 0 {
		cn = names[0]
	}
	c := &storage.Certificate{
		Fingerprint: p.Meta.FingerprintSHA256, CommonName: cn, Names: names, IssuerDN: p.Meta.Issuer,
		Serial: p.Meta.Serial, NotBefore: p.Meta.NotBefore, NotAfter: p.Meta.NotAfter,
		KeyType: keyLabel(p.Meta.KeyType, p.Meta.KeyBits, p.Meta.KeyCurve), Rating: p.Meta.Rating.Grade,
		IssuerID: issuerID, WorkflowID: workflowID, Profile: profile, CatalogID: p.Meta.CatalogID, Source: source,
		Group: group, Status: storage.CertStatusActive, ChainPEM: string(p.ChainPEM), Meta: meta,
	}
	if p.KeyPEM != nil {
		c.PrivateKey = storage.NewSecret(p.KeyPEM)
	}
	return c, nil
}
