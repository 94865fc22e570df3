package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/certlocker/caddy-certlocker/storage"
)

type tokens struct{ s *Store }

const tokenCols = `id, type, name, description, certificate_id, names, spec, secret, url_secret, url_hash, previous_secret,
	previous_url_hash, grace_until, grp, status, expires_at, last_used_at, revoked_at, created_at, updated_at, version`

func (x tokens) scan(sc interface{ Scan(...any) error }) (*storage.Token, error) {
	var (
		t                                          storage.Token
		names, spec                                string
		secret, urlSecret, prevSecret              []byte
		grace, expires, used, revoked, created, up int64
	)
	if err := sc.Scan(&t.ID, &t.Type, &t.Name, &t.Description, &t.CertificateID, &names, &spec, &secret, &urlSecret,
		&t.URLHash, &prevSecret, &t.PreviousURLHash, &grace, &t.Group, &t.Status, &expires, &used, &revoked, &created,
		&up, &t.Version); err != nil {
		return nil, err
	}
	var err error
	if t.Names, err = parseList(names); err != nil {
		return nil, err
	}
	if spec != "" {
		if err := json.Unmarshal([]byte(spec), &t.Spec); err != nil {
			return nil, fmt.Errorf("reading token %s spec: %w", t.ID, err)
		}
	}
	if t.Secret, err = x.s.open(secret, "tokens", "secret", t.ID); err != nil {
		return nil, err
	}
	if t.URLSecret, err = x.s.open(urlSecret, "tokens", "url_secret", t.ID); err != nil {
		return nil, err
	}
	if t.PreviousSecret, err = x.s.open(prevSecret, "tokens", "previous_secret", t.ID); err != nil {
		return nil, err
	}
	t.GraceUntil = tm(grace)
	t.ExpiresAt, t.LastUsedAt, t.RevokedAt, t.CreatedAt, t.UpdatedAt = tm(expires), tm(used), tm(revoked), tm(created), tm(up)
	return &t, nil
}

// sealed seals the token's three secrets.
func (x tokens) sealed(t *storage.Token) (secret, urlSecret, prev []byte, err error) {
	if secret, err = x.s.seal(t.Secret, "tokens", "secret", t.ID); err != nil {
		return
	}
	if urlSecret, err = x.s.seal(t.URLSecret, "tokens", "url_secret", t.ID); err != nil {
		return
	}
	prev, err = x.s.seal(t.PreviousSecret, "tokens", "previous_secret", t.ID)
	return
}

func (x tokens) Create(ctx context.Context, t *storage.Token) error {
	if t.ID == "" {
		t.ID = storage.NewID("tok")
	}
	if t.Type == "" {
		t.Type = storage.TokenTypeCertificate
	}
	secret, urlSecret, prev, err := x.sealed(t)
	if err != nil {
		return err
	}
	spec, err := json.Marshal(t.Spec)
	if err != nil {
		return fmt.Errorf("creating token: encoding spec: %w", err)
	}
	n := now()
	t.CreatedAt, t.UpdatedAt, t.Version = n, n, 1
	_, err = x.s.exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		t.ID, t.Type, t.Name, t.Description, t.CertificateID, jsonList(t.Names), string(spec), secret, urlSecret, t.URLHash,
		prev, t.PreviousURLHash, ts(t.GraceUntil), t.Group, t.Status, ts(t.ExpiresAt), ts(t.LastUsedAt), ts(t.RevokedAt),
		ts(n), ts(n), t.Version)
	return x.s.classify(err, "creating token")
}

func (x tokens) Get(ctx context.Context, id string) (*storage.Token, error) {
	t, err := x.scan(x.s.queryRow(ctx, "SELECT "+tokenCols+" FROM tokens WHERE id = ?", id))
	return t, x.s.classify(err, "getting token "+id)
}

func (x tokens) GetByURLHash(ctx context.Context, hash string) (*storage.Token, error) {
	if hash == "" {
		return nil, fmt.Errorf("getting token by URL: %w", storage.ErrNotFound)
	}
	t, err := x.scan(x.s.queryRow(ctx, "SELECT "+tokenCols+" FROM tokens WHERE url_hash = ? OR previous_url_hash = ?", hash, hash))
	return t, x.s.classify(err, "getting token by URL")
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
	secret, urlSecret, prev, err := x.sealed(t)
	if err != nil {
		return err
	}
	spec, err := json.Marshal(t.Spec)
	if err != nil {
		return fmt.Errorf("updating token %s: encoding spec: %w", t.ID, err)
	}
	n := now()
	res, err := x.s.exec(ctx, `UPDATE tokens SET name = ?, description = ?, certificate_id = ?, names = ?, spec = ?,
		secret = ?, url_secret = ?, url_hash = ?, previous_secret = ?, previous_url_hash = ?, grace_until = ?, grp = ?,
		status = ?, expires_at = ?, last_used_at = ?, revoked_at = ?, updated_at = ?, version = version + 1
		WHERE id = ? AND version = ?`,
		t.Name, t.Description, t.CertificateID, jsonList(t.Names), string(spec), secret, urlSecret, t.URLHash, prev,
		t.PreviousURLHash, ts(t.GraceUntil), t.Group, t.Status, ts(t.ExpiresAt), ts(t.LastUsedAt), ts(t.RevokedAt), ts(n),
		t.ID, t.Version)
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
	err := x.s.inTx(ctx, func(tx *Store) error {
		if _, err := tx.exec(ctx, "DELETE FROM token_accounts WHERE token_id = ?", id); err != nil {
			return tx.classify(err, "deleting token "+id)
		}
		res, err := tx.exec(ctx, "DELETE FROM tokens WHERE id = ?", id)
		if err != nil {
			return tx.classify(err, "deleting token "+id)
		}
		return tx.expectOne(ctx, res, "tokens", id, "deleting token")
	})
	if err != nil {
		return err
	}
	x.s.deletedSecrets(ctx)
	return nil
}

func (x tokens) BindAccount(ctx context.Context, tokenID, accountID string, max int) error {
	return x.s.inTx(ctx, func(tx *Store) error {
		// lock the token row: two accounts created at once are counted one
		// after the other
		var one int
		err := tx.queryRow(ctx, "SELECT 1 FROM tokens WHERE id = ? "+tx.db.dialect.RowLock, tokenID).Scan(&one)
		if err != nil {
			return tx.classify(err, "binding account to token "+tokenID)
		}
		var bound string
		err = tx.queryRow(ctx, "SELECT token_id FROM token_accounts WHERE account_id = ?", accountID).Scan(&bound)
		switch {
		case err == nil && bound == tokenID:
			return nil
		case err == nil:
			return fmt.Errorf("binding account %s to token %s: bound to another token: %w", accountID, tokenID, storage.ErrConflict)
		case !errors.Is(err, sql.ErrNoRows):
			return tx.classify(err, "binding account to token "+tokenID)
		}
		var n int
		if err := tx.queryRow(ctx, "SELECT COUNT(*) FROM token_accounts WHERE token_id = ?", tokenID).Scan(&n); err != nil {
			return tx.classify(err, "binding account to token "+tokenID)
		}
		if n >= max {
			return fmt.Errorf("binding account to token %s: %d of %d accounts bound: %w", tokenID, n, max, storage.ErrLimit)
		}
		_, err = tx.exec(ctx, "INSERT INTO token_accounts (account_id, token_id, created_at) VALUES (?, ?, ?)",
			accountID, tokenID, ts(now()))
		return tx.classify(err, "binding account to token "+tokenID)
	})
}

func (x tokens) AccountToken(ctx context.Context, accountID string) (string, error) {
	var id string
	err := x.s.queryRow(ctx, "SELECT token_id FROM token_accounts WHERE account_id = ?", accountID).Scan(&id)
	return id, x.s.classify(err, "getting the token of account "+accountID)
}

func (x tokens) Accounts(ctx context.Context, tokenID string) ([]*storage.TokenAccount, error) {
	rows, err := x.s.query(ctx, "SELECT account_id, token_id, created_at FROM token_accounts WHERE token_id = ? ORDER BY created_at, account_id", tokenID)
	if err != nil {
		return nil, x.s.classify(err, "listing accounts of token "+tokenID)
	}
	defer rows.Close()
	var out []*storage.TokenAccount
	for rows.Next() {
		var a storage.TokenAccount
		var created int64
		if err := rows.Scan(&a.AccountID, &a.TokenID, &created); err != nil {
			return nil, x.s.classify(err, "listing accounts of token "+tokenID)
		}
		a.CreatedAt = tm(created)
		out = append(out, &a)
	}
	return out, x.s.classify(rows.Err(), "listing accounts of token "+tokenID)
}
