package sqlstore

import (
	"context"
	"fmt"

	"github.com/certlocker/caddy-certlocker/storage"
)

type issuers struct{ s *Store }

const issuerCols = `id, name, catalog_id, directory_url, contacts, eab_key_id, eab_mac_key, account_key,
	account_key_type, account_url, profile, preferred_chain, custom_roots_pem, grp, status, last_message,
	managed_by, meta, next_account_key, terms_agreed, terms_agreed_at, registered_at, key_rolled_at,
	meta_refreshed_at, checked_at, created_at, updated_at, version`

func (x issuers) scan(sc interface{ Scan(...any) error }) (*storage.Issuer, error) {
	var (
		i                                    storage.Issuer
		contacts, meta                       string
		eab, acct, next                      []byte
		agreedAt, registered, rolled, metaAt int64
		checked, created, updated            int64
	)
	if err := sc.Scan(&i.ID, &i.Name, &i.CatalogID, &i.DirectoryURL, &contacts, &i.EABKeyID, &eab, &acct,
		&i.AccountKeyType, &i.AccountURL, &i.Profile, &i.PreferredChain, &i.CustomRootsPEM, &i.Group, &i.Status,
		&i.LastMessage, &i.ManagedBy, &meta, &next, &i.TermsAgreed, &agreedAt, &registered, &rolled, &metaAt,
		&checked, &created, &updated, &i.Version); err != nil {
		return nil, err
	}
	var err error
	if i.Contacts, err = parseList(contacts); err != nil {
		return nil, err
	}
	if i.EABMACKey, err = x.s.open(eab, "issuers", "eab_mac_key", i.ID); err != nil {
		return nil, err
	}
	if i.AccountKey, err = x.s.open(acct, "issuers", "account_key", i.ID); err != nil {
		return nil, err
	}
	if i.NextAccountKey, err = x.s.open(next, "issuers", "next_account_key", i.ID); err != nil {
		return nil, err
	}
	i.Meta, i.CreatedAt, i.UpdatedAt = raw(meta), tm(created), tm(updated)
	i.TermsAgreedAt, i.RegisteredAt, i.KeyRolledAt = tm(agreedAt), tm(registered), tm(rolled)
	i.MetaRefreshedAt, i.CheckedAt = tm(metaAt), tm(checked)
	return &i, nil
}

func (x issuers) sealed(i *storage.Issuer) (eab, acct, next []byte, err error) {
	if eab, err = x.s.seal(i.EABMACKey, "issuers", "eab_mac_key", i.ID); err != nil {
		return nil, nil, nil, err
	}
	if acct, err = x.s.seal(i.AccountKey, "issuers", "account_key", i.ID); err != nil {
		return nil, nil, nil, err
	}
	if next, err = x.s.seal(i.NextAccountKey, "issuers", "next_account_key", i.ID); err != nil {
		return nil, nil, nil, err
	}
	return eab, acct, next, nil
}

func (x issuers) Create(ctx context.Context, i *storage.Issuer) error {
	if i.ID == "" {
		i.ID = storage.NewID("iss")
	}
	eab, acct, next, err := x.sealed(i)
	if err != nil {
		return err
	}
	t := now()
	i.CreatedAt, i.UpdatedAt, i.Version = t, t, 1
	_, err = x.s.exec(ctx, `INSERT INTO issuers (`+issuerCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		i.ID, i.Name, i.CatalogID, i.DirectoryURL, jsonList(i.Contacts), i.EABKeyID, eab, acct,
		i.AccountKeyType, i.AccountURL, i.Profile, i.PreferredChain, i.CustomRootsPEM, i.Group, i.Status,
		i.LastMessage, i.ManagedBy, rawOr(i.Meta, "{}"), next, i.TermsAgreed, ts(i.TermsAgreedAt), ts(i.RegisteredAt),
		ts(i.KeyRolledAt), ts(i.MetaRefreshedAt), ts(i.CheckedAt), ts(t), ts(t), i.Version)
	return x.s.classify(err, fmt.Sprintf("creating issuer %q", i.Name))
}

func (x issuers) Get(ctx context.Context, id string) (*storage.Issuer, error) {
	i, err := x.scan(x.s.queryRow(ctx, "SELECT "+issuerCols+" FROM issuers WHERE id = ?", id))
	return i, x.s.classify(err, "getting issuer "+id)
}

func (x issuers) GetByName(ctx context.Context, name string) (*storage.Issuer, error) {
	i, err := x.scan(x.s.queryRow(ctx, "SELECT "+issuerCols+" FROM issuers WHERE name = ?", name))
	return i, x.s.classify(err, fmt.Sprintf("getting issuer %q", name))
}

func (x issuers) List(ctx context.Context, f storage.IssuerFilter) ([]*storage.Issuer, error) {
	var w where
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIf(f.ManagedBy != "", "managed_by = ?", f.ManagedBy)
	rows, err := x.s.query(ctx, "SELECT "+issuerCols+" FROM issuers"+w.String()+" ORDER BY name", w.args...)
	if err != nil {
		return nil, x.s.classify(err, "listing issuers")
	}
	defer rows.Close()
	var out []*storage.Issuer
	for rows.Next() {
		i, err := x.scan(rows)
		if err != nil {
			return nil, x.s.classify(err, "listing issuers")
		}
		out = append(out, i)
	}
	return out, x.s.classify(rows.Err(), "listing issuers")
}

func (x issuers) Update(ctx context.Context, i *storage.Issuer) error {
	eab, acct, next, err := x.sealed(i)
	if err != nil {
		return err
	}
	t := now()
	res, err := x.s.exec(ctx, `UPDATE issuers SET name = ?, catalog_id = ?, directory_url = ?, contacts = ?,
		eab_key_id = ?, eab_mac_key = ?, account_key = ?, account_key_type = ?, account_url = ?, profile = ?,
		preferred_chain = ?, custom_roots_pem = ?, grp = ?, status = ?, last_message = ?, managed_by = ?, meta = ?,
		next_account_key = ?, terms_agreed = ?, terms_agreed_at = ?, registered_at = ?, key_rolled_at = ?,
		meta_refreshed_at = ?, checked_at = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`,
		i.Name, i.CatalogID, i.DirectoryURL, jsonList(i.Contacts), i.EABKeyID, eab, acct, i.AccountKeyType,
		i.AccountURL, i.Profile, i.PreferredChain, i.CustomRootsPEM, i.Group, i.Status, i.LastMessage,
		i.ManagedBy, rawOr(i.Meta, "{}"), next, i.TermsAgreed, ts(i.TermsAgreedAt), ts(i.RegisteredAt),
		ts(i.KeyRolledAt), ts(i.MetaRefreshedAt), ts(i.CheckedAt), ts(t), i.ID, i.Version)
	if err != nil {
		return x.s.classify(err, fmt.Sprintf("updating issuer %q", i.Name))
	}
	if err := x.s.expectOne(ctx, res, "issuers", i.ID, "updating issuer"); err != nil {
		return err
	}
	i.Version++
	i.UpdatedAt = t
	return nil
}

func (x issuers) Delete(ctx context.Context, id string) error {
	res, err := x.s.exec(ctx, "DELETE FROM issuers WHERE id = ?", id)
	if err != nil {
		return x.s.classify(err, "deleting issuer "+id)
	}
	if err := x.s.expectOne(ctx, res, "issuers", id, "deleting issuer"); err != nil {
		return err
	}
	x.s.deletedSecrets(ctx)
	return nil
}
