package sqlstore

import (
	"context"
	"fmt"

	"github.com/certlocker/caddy-certlocker/storage"
)

type tokens struct{ s *Store }

const tokenCols = `id, type, name, certificate_id, names, secret, grp, status, expires_at, last_used_at,
	revoked_at, created_at, updated_at, version`

func (x tokens) scan(sc interface{ Scan(...any) error }) (*storage.Token, error) {
	var (
		t                                   storage.Token
		names                               string
		secret                              []byte
		expires, used, revoked, created, up int64
	)
	if err := sc.Scan(&t.ID, &t.Type, &t.Name, &t.CertificateID, &names, &secret, &t.Group, &t.Status, &expires,
		&used, &revoked, &created, &up, &t.Version); err != nil {
		return nil, err
	}
	var err error
	if t.Names, err = parseList(names); err != nil {
		return nil, err
	}
	if t.Secret, err = x.s.open(secret, "tokens", "secret", t.ID); err != nil {
		return nil, err
	}
	t.ExpiresAt, t.LastUsedAt, t.RevokedAt, t.CreatedAt, t.UpdatedAt = tm(expires), tm(used), tm(revoked), tm(created), tm(up)
	return &t, nil
}

func (x tokens) Create(ctx context.Context, t *storage.Token) error {
	if t.ID == "" {
		t.ID = storage.NewID("tok")
	}
	if t.Type == "" {
		t.Type = storage.TokenTypeCertificate
	}
	secret, err := x.s.seal(t.Secret, "tokens", "secret", t.ID)
	if err != nil {
		return err
	}
	n := now()
	t.CreatedAt, t.UpdatedAt, t.Version = n, n, 1
	_, err = x.s.exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		t.ID, t.Type, t.Name, t.CertificateID, jsonList(t.Names), secret, t.Group, t.Status, ts(t.ExpiresAt),
		ts(t.LastUsedAt), ts(t.RevokedAt), ts(n), ts(n), t.Version)
	return x.s.classify(err, "creating token")
}

func (x tokens) Get(ctx context.Context, id string) (*storage.Token, error) {
	t, err := x.scan(x.s.queryRow(ctx, "SELECT "+tokenCols+" FROM tokens WHERE id = ?", id))
	return t, x.s.classify(err, "getting token "+id)
}

func (x tokens) List(ctx context.Context, f storage.TokenFilter) ([]*storage.Token, error) {
	var w where
	w.addIf(f.CertificateID != "", "certificate_id = ?", f.CertificateID)
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIf(f.Status != "", "status = ?", f.Status)
	rows, err := x.s.query(ctx, "SELECT "+tokenCols+" FROM tokens"+w.String()+" ORDER BY id", w.args...)
	if err != nil {
		return nil, x.s.classify(err, "listing tokens")
	}
	defer rows.Close()
	var out []*storage.Token
	for rows.Next() {
		t, err := x.scan(rows)
		if err != nil {
			return nil, x.s.classify(err, "listing tokens")
		}
		out = append(out, t)
	}
	return out, x.s.classify(rows.Err(), "listing tokens")
}

func (x tokens) Update(ctx context.Context, t *storage.Token) error {
	secret, err := x.s.seal(t.Secret, "tokens", "secret", t.ID)
	if err != nil {
		return err
	}
	n := now()
	res, err := x.s.exec(ctx, `UPDATE tokens SET name = ?, certificate_id = ?, names = ?, secret = ?, grp = ?,
		status = ?, expires_at = ?, last_used_at = ?, revoked_at = ?, updated_at = ?, version = version + 1
		WHERE id = ? AND version = ?`,
		t.Name, t.CertificateID, jsonList(t.Names), secret, t.Group, t.Status, ts(t.ExpiresAt), ts(t.LastUsedAt),
		ts(t.RevokedAt), ts(n), t.ID, t.Version)
	if err != nil {
		return x.s.classify(err, fmt.Sprintf("updating token %s", t.ID))
	}
	if err := x.s.expectOne(ctx, res, "tokens", t.ID, "updating token"); err != nil {
		return err
	}
	t.Version++
	t.UpdatedAt = n
	return nil
}

func (x tokens) Delete(ctx context.Context, id string) error {
	res, err := x.s.exec(ctx, "DELETE FROM tokens WHERE id = ?", id)
	if err != nil {
		return x.s.classify(err, "deleting token "+id)
	}
	if err := x.s.expectOne(ctx, res, "tokens", id, "deleting token"); err != nil {
		return err
	}
	x.s.deletedSecrets(ctx)
	return nil
}
