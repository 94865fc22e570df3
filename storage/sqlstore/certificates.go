package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/certlocker/caddy-certlocker/storage"
)

type certificates struct{ s *Store }

const certificateCols = `id, fingerprint, common_name, names, issuer_dn, serial, not_before, not_after, key_type,
	rating, issuer_id, workflow_id, grp, status, chain_pem, private_key, meta, created_at, updated_at, version`

func (x certificates) scan(sc interface{ Scan(...any) error }) (*storage.Certificate, error) {
	var (
		c                       storage.Certificate
		names, meta             string
		key                     []byte
		nb, na, created, update int64
	)
	if err := sc.Scan(&c.ID, &c.Fingerprint, &c.CommonName, &names, &c.IssuerDN, &c.Serial, &nb, &na, &c.KeyType,
		&c.Rating, &c.IssuerID, &c.WorkflowID, &c.Group, &c.Status, &c.ChainPEM, &key, &meta, &created, &update,
		&c.Version); err != nil {
		return nil, err
	}
	var err error
	if c.Names, err = parseList(names); err != nil {
		return nil, err
	}
	if c.PrivateKey, err = x.s.open(key, "certificates", "private_key", c.ID); err != nil {
		return nil, err
	}
	c.Meta = raw(meta)
	c.NotBefore, c.NotAfter, c.CreatedAt, c.UpdatedAt = tm(nb), tm(na), tm(created), tm(update)
	return &c, nil
}

func (x certificates) Put(ctx context.Context, c *storage.Certificate) error {
	if c.Fingerprint == "" {
		return errors.New("storing certificate: no fingerprint")
	}
	if c.ID == "" {
		c.ID = storage.NewID("crt")
	}
	key, err := x.s.seal(c.PrivateKey, "certificates", "private_key", c.ID)
	if err != nil {
		return err
	}
	t := now()
	return x.s.inTx(ctx, func(tx *Store) error {
		var id string
		err := tx.queryRow(ctx, "SELECT id FROM certificates WHERE fingerprint = ?", c.Fingerprint).Scan(&id)
		if err == nil {
			c.ID = id
			return fmt.Errorf("storing certificate %s: %w", c.Fingerprint, storage.ErrDuplicate)
		}
		_, err = tx.exec(ctx, `INSERT INTO certificates (`+certificateCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			c.ID, c.Fingerprint, c.CommonName, jsonList(c.Names), c.IssuerDN, c.Serial, ts(c.NotBefore), ts(c.NotAfter),
			c.KeyType, c.Rating, c.IssuerID, c.WorkflowID, c.Group, c.Status, c.ChainPEM, key, rawOr(c.Meta, "{}"),
			ts(t), ts(t), 1)
		if err != nil {
			return tx.classify(err, "storing certificate "+c.Fingerprint)
		}
		seen := map[string]bool{}
		for _, n := range c.Names {
			n = strings.ToLower(n)
			if seen[n] {
				continue
			}
			seen[n] = true
			if _, err := tx.exec(ctx, "INSERT INTO certificate_names (certificate_id, name) VALUES (?, ?)", c.ID, n); err != nil {
				return tx.classify(err, "storing certificate names")
			}
		}
		c.CreatedAt, c.UpdatedAt, c.Version = t, t, 1
		return nil
	})
}

func (x certificates) Get(ctx context.Context, id string) (*storage.Certificate, error) {
	c, err := x.scan(x.s.queryRow(ctx, "SELECT "+certificateCols+" FROM certificates WHERE id = ?", id))
	return c, x.s.classify(err, "getting certificate "+id)
}

func (x certificates) GetByFingerprint(ctx context.Context, fp string) (*storage.Certificate, error) {
	c, err := x.scan(x.s.queryRow(ctx, "SELECT "+certificateCols+" FROM certificates WHERE fingerprint = ?", strings.ToLower(fp)))
	return c, x.s.classify(err, "getting certificate "+fp)
}

// List returns certificates soonest expiry first.
func (x certificates) List(ctx context.Context, f storage.CertificateFilter, p storage.Page) ([]*storage.Certificate, string, error) {
	var w where
	w.addIf(f.Domain != "", "id IN (SELECT certificate_id FROM certificate_names WHERE name = ?)", strings.ToLower(f.Domain))
	w.addIf(f.IssuerID != "", "issuer_id = ?", f.IssuerID)
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIf(f.Status != "", "status = ?", f.Status)
	w.addIf(f.Rating != "", "rating = ?", f.Rating)
	w.addIf(!f.NotAfterBefore.IsZero(), "not_after < ?", ts(f.NotAfterBefore))
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 2)
		if err != nil {
			return nil, "", fmt.Errorf("listing certificates: %w", err)
		}
		na, err := strconv.ParseInt(c[0], 10, 64)
		if err != nil {
			return nil, "", fmt.Errorf("listing certificates: %w", storage.ErrInvalidCursor)
		}
		w.add("(not_after > ? OR (not_after = ? AND id > ?))", na, na, c[1])
	}
	limit := p.Clamp()
	rows, err := x.s.query(ctx, "SELECT "+certificateCols+" FROM certificates"+w.String()+" ORDER BY not_after, id LIMIT ?",
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.s.classify(err, "listing certificates")
	}
	defer rows.Close()
	var out []*storage.Certificate
	for rows.Next() {
		c, err := x.scan(rows)
		if err != nil {
			return nil, "", x.s.classify(err, "listing certificates")
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", x.s.classify(err, "listing certificates")
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(strconv.FormatInt(ts(last.NotAfter), 10), last.ID)
	}
	return out, next, nil
}

// Update writes the mutable attributes of c: rating, owner links, group,
// status, meta and private key. The certificate itself never changes.
func (x certificates) Update(ctx context.Context, c *storage.Certificate) error {
	key, err := x.s.seal(c.PrivateKey, "certificates", "private_key", c.ID)
	if err != nil {
		return err
	}
	t := now()
	res, err := x.s.exec(ctx, `UPDATE certificates SET rating = ?, issuer_id = ?, workflow_id = ?, grp = ?, status = ?,
		private_key = ?, meta = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`,
		c.Rating, c.IssuerID, c.WorkflowID, c.Group, c.Status, key, rawOr(c.Meta, "{}"), ts(t), c.ID, c.Version)
	if err != nil {
		return x.s.classify(err, "updating certificate "+c.ID)
	}
	if err := x.s.expectOne(ctx, res, "certificates", c.ID, "updating certificate"); err != nil {
		return err
	}
	c.Version++
	c.UpdatedAt = t
	return nil
}

func (x certificates) Delete(ctx context.Context, id string) error {
	return x.s.inTx(ctx, func(tx *Store) error {
		var n int
		if err := tx.queryRow(ctx, "SELECT COUNT(*) FROM tokens WHERE certificate_id = ? AND status <> 'revoked'", id).Scan(&n); err != nil {
			return tx.classify(err, "deleting certificate "+id)
		}
		if n > 0 {
			return fmt.Errorf("deleting certificate %s: %d certificate tokens still use it: %w", id, n, storage.ErrInUse)
		}
		res, err := tx.exec(ctx, "DELETE FROM certificates WHERE id = ?", id)
		if err != nil {
			return tx.classify(err, "deleting certificate "+id)
		}
		return tx.expectOne(ctx, res, "certificates", id, "deleting certificate")
	})
}
