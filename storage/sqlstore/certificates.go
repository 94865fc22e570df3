package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

type certificates struct{ s *Store }

const certificateCols = `id, fingerprint, common_name, names, issuer_dn, serial, not_before, not_after, key_type,
	rating, issuer_id, workflow_id, grp, status, chain_pem, private_key, meta, created_at, updated_at, version,
	profile, catalog_id, source, replaced_by`

func (x certificates) scan(sc interface{ Scan(...any) error }) (*storage.Certificate, error) {
	var (
		c                       storage.Certificate
		names, meta             string
		key                     []byte
		nb, na, created, update int64
	)
	if err := sc.Scan(&c.ID, &c.Fingerprint, &c.CommonName, &names, &c.IssuerDN, &c.Serial, &nb, &na, &c.KeyType,
		&c.Rating, &c.IssuerID, &c.WorkflowID, &c.Group, &c.Status, &c.ChainPEM, &key, &meta, &created, &update,
		&c.Version, &c.Profile, &c.CatalogID, &c.Source, &c.ReplacedBy); err != nil {
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
	c.Fingerprint = strings.ToLower(c.Fingerprint)
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
		_, err = tx.exec(ctx, `INSERT INTO certificates (`+certificateCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			c.ID, c.Fingerprint, c.CommonName, jsonList(c.Names), c.IssuerDN, c.Serial, ts(c.NotBefore), ts(c.NotAfter),
			c.KeyType, c.Rating, c.IssuerID, c.WorkflowID, c.Group, c.Status, c.ChainPEM, key, rawOr(c.Meta, "{}"),
			ts(t), ts(t), 1, c.Profile, c.CatalogID, c.Source, c.ReplacedBy)
		if err != nil {
			return tx.classify(err, "storing certificate "+c.Fingerprint)
		}
		if err := tx.expiryDelta(ctx, expiryKey{c.Status, c.IssuerID, c.Group, ts(c.NotAfter)}, 1); err != nil {
			return err
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

// certificateSort is one sort key of List: its column and how to read the
// key of a certificate for the cursor.
type certificateSort struct {
	column string
	text   bool
	key    func(c *storage.Certificate) string
}

var certificateSorts = map[string]certificateSort{
	"expires": {column: "not_after", key: func(c *storage.Certificate) string { return strconv.FormatInt(ts(c.NotAfter), 10) }},
	"issued":  {column: "not_before", key: func(c *storage.Certificate) string { return strconv.FormatInt(ts(c.NotBefore), 10) }},
	"name":    {column: "common_name", text: true, key: func(c *storage.Certificate) string { return c.CommonName }},
	"added":   {column: "created_at", key: func(c *storage.Certificate) string { return strconv.FormatInt(ts(c.CreatedAt), 10) }},
}

// certificateWhere turns a filter into conditions (Sort aside).
func certificateWhere(f storage.CertificateFilter) *where {
	w := &where{}
	w.addIf(f.Domain != "", "id IN (SELECT certificate_id FROM certificate_names WHERE name = ?)", strings.ToLower(f.Domain))
	w.addIf(f.IssuerID != "", "issuer_id = ?", f.IssuerID)
	w.addIf(f.CatalogID != "", "catalog_id = ?", f.CatalogID)
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIn("grp", f.Groups)
	w.addIf(f.Status != "", "status = ?", f.Status)
	w.addIf(f.Rating != "", "rating = ?", f.Rating)
	w.addIf(f.Source != "", "source = ?", f.Source)
	w.addIf(!f.NotAfterBefore.IsZero(), "not_after < ?", ts(f.NotAfterBefore))
	w.addIf(!f.NotAfterFrom.IsZero(), "not_after >= ?", ts(f.NotAfterFrom))
	return w
}

// List returns certificates in f.Sort order (soonest expiry first by
// default), ties broken by ID.
func (x certificates) List(ctx context.Context, f storage.CertificateFilter, p storage.Page) ([]*storage.Certificate, string, error) {
	spec := f.Sort
	if spec == "" {
		spec = "expires"
	}
	name, desc := strings.CutPrefix(spec, "-")
	sort, ok := certificateSorts[name]
	if !ok {
		return nil, "", fmt.Errorf("listing certificates: unknown sort %q: use one of %s, optionally prefixed with -",
			f.Sort, strings.Join(storage.CertificateSorts, ", "))
	}
	w := certificateWhere(f)
	backward := p.Backward && p.Cursor != ""
	// backward pages read the other way, from the cursor's row itself
	op, idOp, dir := ">", ">", ""
	if desc != backward {
		op, idOp, dir = "<", "<", " DESC"
	}
	if backward {
		idOp += "="
	}
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 3)
		if err != nil || c[0] != spec {
			return nil, "", fmt.Errorf("listing certificates: %w", storage.ErrInvalidCursor)
		}
		var k any = c[1]
		if !sort.text {
			n, err := strconv.ParseInt(c[1], 10, 64)
			if err != nil {
				return nil, "", fmt.Errorf("listing certificates: %w", storage.ErrInvalidCursor)
			}
			k = n
		}
		w.add("("+sort.column+" "+op+" ? OR ("+sort.column+" = ? AND id "+idOp+" ?))", k, k, c[2])
	}
	limit := p.Clamp()
	rows, err := x.s.query(ctx, "SELECT "+certificateCols+" FROM certificates"+w.String()+
		" ORDER BY "+sort.column+dir+", id"+dir+" LIMIT ?", append(w.args, limit+1)...)
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
	out, next := keysetPage(out, limit, backward, func(c *storage.Certificate) string {
		return encodeCursor(spec, sort.key(c), c.ID)
	})
	return out, next, nil
}

// ExpiryCounts implements storage.CertificateStore: one pass over the
// certificates f selects, counting cumulatively per bound.
func (x certificates) ExpiryCounts(ctx context.Context, f storage.CertificateFilter, bounds []time.Time) ([]storage.ExpiryCount, error) {
	for i := 1; i < len(bounds); i++ {
		if bounds[i].Before(bounds[i-1]) {
			return nil, errors.New("counting certificates by expiry: bounds are not ascending")
		}
	}
	if sw, ok := summaryWhere(f); ok {
		return x.expiryCountsSummary(ctx, f, sw, bounds)
	}
	w := certificateWhere(f)
	var cols strings.Builder
	args := make([]any, 0, len(bounds)+len(w.args))
	for _, b := range bounds {
		cols.WriteString(", SUM(CASE WHEN not_after <= ? THEN 1 ELSE 0 END)")
		args = append(args, ts(b))
	}
	args = append(args, w.args...)
	rows, err := x.s.query(ctx, "SELECT issuer_id, grp, COUNT(*)"+cols.String()+" FROM certificates"+w.String()+
		" GROUP BY issuer_id, grp ORDER BY issuer_id, grp", args...)
	if err != nil {
		return nil, x.s.classify(err, "counting certificates by expiry")
	}
	defer rows.Close()
	var out []storage.ExpiryCount
	for rows.Next() {
		var (
			ec    storage.ExpiryCount
			total int64
			cum   = make([]int64, len(bounds))
		)
		dest := []any{&ec.IssuerID, &ec.Group, &total}
		for i := range cum {
			dest = append(dest, &cum[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, x.s.classify(err, "counting certificates by expiry")
		}
		ec.Buckets = make([]int, len(bounds)+1)
		prev := int64(0)
		for i, n := range cum {
			ec.Buckets[i] = int(n - prev)
			prev = n
		}
		ec.Buckets[len(bounds)] = int(total - prev)
		out = append(out, ec)
	}
	if err := rows.Err(); err != nil {
		return nil, x.s.classify(err, "counting certificates by expiry")
	}
	return out, nil
}

// expiryCountsSummary counts from certificate_expiry_days: whole days
// before each bound's day from the summary, and the bound's own day from
// certificates (an index range of one day).
func (x certificates) expiryCountsSummary(ctx context.Context, f storage.CertificateFilter, sw *where, bounds []time.Time) ([]storage.ExpiryCount, error) {
	const what = "counting certificates by expiry"
	type acc struct {
		total int64
		cum   []int64
	}
	groups := map[[2]string]*acc{}
	var order [][2]string
	var cols strings.Builder
	args := make([]any, 0, len(bounds)+len(sw.args))
	for _, b := range bounds {
		cols.WriteString(", SUM(CASE WHEN expiry_day < ? THEN n ELSE 0 END)")
		args = append(args, ts(b)/dayNanos)
	}
	args = append(args, sw.args...)
	rows, err := x.s.query(ctx, "SELECT issuer_id, grp, SUM(n)"+cols.String()+" FROM certificate_expiry_days"+sw.String()+
		" GROUP BY issuer_id, grp ORDER BY issuer_id, grp", args...)
	if err != nil {
		return nil, x.s.classify(err, what)
	}
	defer rows.Close()
	for rows.Next() {
		var k [2]string
		a := &acc{cum: make([]int64, len(bounds))}
		dest := []any{&k[0], &k[1], &a.total}
		for i := range a.cum {
			dest = append(dest, &a.cum[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, x.s.classify(err, what)
		}
		groups[k] = a
		order = append(order, k)
	}
	if err := rows.Err(); err != nil {
		return nil, x.s.classify(err, what)
	}
	rows.Close()
	for i, b := range bounds {
		w := certificateWhere(f)
		w.add("not_after >= ? AND not_after <= ?", (ts(b)/dayNanos)*dayNanos, ts(b))
		edge, err := x.s.query(ctx, "SELECT issuer_id, grp, COUNT(*) FROM certificates"+w.String()+" GROUP BY issuer_id, grp", w.args...)
		if err != nil {
			return nil, x.s.classify(err, what)
		}
		for edge.Next() {
			var k [2]string
			var n int64
			if err := edge.Scan(&k[0], &k[1], &n); err != nil {
				edge.Close()
				return nil, x.s.classify(err, what)
			}
			if a := groups[k]; a != nil {
				a.cum[i] += n
			}
		}
		err = edge.Err()
		edge.Close()
		if err != nil {
			return nil, x.s.classify(err, what)
		}
	}
	out := make([]storage.ExpiryCount, 0, len(order))
	for _, k := range order {
		a := groups[k]
		ec := storage.ExpiryCount{IssuerID: k[0], Group: k[1], Buckets: make([]int, len(bounds)+1)}
		prev := int64(0)
		for i, n := range a.cum {
			ec.Buckets[i] = int(n - prev)
			prev = n
		}
		ec.Buckets[len(bounds)] = int(a.total - prev)
		out = append(out, ec)
	}
	return out, nil
}

// ExpiryTimeline implements storage.CertificateStore.
func (x certificates) ExpiryTimeline(ctx context.Context, f storage.CertificateFilter, from time.Time, step time.Duration, n int) ([]int, error) {
	if step <= 0 || n <= 0 {
		return nil, errors.New("counting certificates by expiry date: step and n must be positive")
	}
	start := ts(from)
	if sw, ok := summaryWhere(f); ok && start%dayNanos == 0 && int64(step)%dayNanos == 0 {
		return x.expiryTimelineSummary(ctx, sw, start/dayNanos, int64(step)/dayNanos, n)
	}
	w := certificateWhere(f)
	w.add("not_after >= ? AND not_after < ?", start, start+int64(step)*int64(n))
	args := append([]any{start, int64(step)}, w.args...)
	rows, err := x.s.query(ctx, "SELECT (not_after - CAST(? AS BIGINT)) / CAST(? AS BIGINT), COUNT(*) FROM certificates"+
		w.String()+" GROUP BY 1", args...)
	if err != nil {
		return nil, x.s.classify(err, "counting certificates by expiry date")
	}
	defer rows.Close()
	out := make([]int, n)
	for rows.Next() {
		var i, c int64
		if err := rows.Scan(&i, &c); err != nil {
			return nil, x.s.classify(err, "counting certificates by expiry date")
		}
		if i >= 0 && i < int64(n) {
			out[i] += int(c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, x.s.classify(err, "counting certificates by expiry date")
	}
	return out, nil
}

// expiryTimelineSummary is ExpiryTimeline on whole days, from
// certificate_expiry_days.
func (x certificates) expiryTimelineSummary(ctx context.Context, sw *where, fromDay, stepDays int64, n int) ([]int, error) {
	const what = "counting certificates by expiry date"
	sw.add("expiry_day >= ? AND expiry_day < ?", fromDay, fromDay+stepDays*int64(n))
	rows, err := x.s.query(ctx, "SELECT expiry_day, SUM(n) FROM certificate_expiry_days"+sw.String()+" GROUP BY expiry_day", sw.args...)
	if err != nil {
		return nil, x.s.classify(err, what)
	}
	defer rows.Close()
	out := make([]int, n)
	for rows.Next() {
		var day, c int64
		if err := rows.Scan(&day, &c); err != nil {
			return nil, x.s.classify(err, what)
		}
		out[(day-fromDay)/stepDays] += int(c)
	}
	if err := rows.Err(); err != nil {
		return nil, x.s.classify(err, what)
	}
	return out, nil
}

// Update writes the mutable attributes of c: rating, owner links, profile,
// catalog entry, group, status, replacement, meta and private key. The
// certificate itself never changes.
func (x certificates) Update(ctx context.Context, c *storage.Certificate) error {
	key, err := x.s.seal(c.PrivateKey, "certificates", "private_key", c.ID)
	if err != nil {
		return err
	}
	t := now()
	err = x.s.inTx(ctx, func(tx *Store) error {
		var old expiryKey
		err := tx.queryRow(ctx, "SELECT status, issuer_id, grp, not_after FROM certificates WHERE id = ? AND version = ? "+
			tx.db.dialect.RowLock, c.ID, c.Version).Scan(&old.status, &old.issuerID, &old.group, &old.notAfter)
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return tx.classify(err, "updating certificate "+c.ID)
		}
		res, err := tx.exec(ctx, `UPDATE certificates SET rating = ?, issuer_id = ?, workflow_id = ?, grp = ?, status = ?,
			private_key = ?, meta = ?, profile = ?, catalog_id = ?, source = ?, replaced_by = ?, updated_at = ?,
			version = version + 1 WHERE id = ? AND version = ?`,
			c.Rating, c.IssuerID, c.WorkflowID, c.Group, c.Status, key, rawOr(c.Meta, "{}"), c.Profile, c.CatalogID,
			c.Source, c.ReplacedBy, ts(t), c.ID, c.Version)
		if err != nil {
			return tx.classify(err, "updating certificate "+c.ID)
		}
		if err := tx.expectOne(ctx, res, "certificates", c.ID, "updating certificate"); err != nil {
			return err
		}
		if next := (expiryKey{c.Status, c.IssuerID, c.Group, old.notAfter}); found && next != old {
			if err := tx.expiryDelta(ctx, old, -1); err != nil {
				return err
			}
			return tx.expiryDelta(ctx, next, 1)
		}
		return nil
	})
	if err != nil {
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
		var (
			old        expiryKey
			workflowID string
		)
		err := tx.queryRow(ctx, "SELECT status, issuer_id, grp, not_after, workflow_id FROM certificates WHERE id = ? "+tx.db.dialect.RowLock, id).
			Scan(&old.status, &old.issuerID, &old.group, &old.notAfter, &workflowID)
		if err != nil {
			return tx.classify(err, "deleting certificate "+id)
		}
		// every copy of the key goes with the certificate: the workflow
		// that issued it (the only one that had its key) may still hold
		// one, in rows written before the inventory took the only copy
		if workflowID != "" {
			if _, err := tx.exec(ctx, "UPDATE workflows SET private_key = NULL WHERE id = ? AND private_key IS NOT NULL", workflowID); err != nil {
				return tx.classify(err, "deleting certificate "+id+": dropping the workflow's copy of its key")
			}
		}
		tx.deletedSecrets(ctx)
		res, err := tx.exec(ctx, "DELETE FROM certificates WHERE id = ?", id)
		if err != nil {
			return tx.classify(err, "deleting certificate "+id)
		}
		if err := tx.expectOne(ctx, res, "certificates", id, "deleting certificate"); err != nil {
			return err
		}
		return tx.expiryDelta(ctx, old, -1)
	})
}

// dayNanos is one expiry day of certificate_expiry_days.
const dayNanos = int64(24 * time.Hour)

// expiryKey is what places a certificate in certificate_expiry_days.
type expiryKey struct {
	status, issuerID, group string
	notAfter                int64
}

// expiryDelta adds d certificates to the summary row of k, dropping the row
// when it reaches zero.
func (s *Store) expiryDelta(ctx context.Context, k expiryKey, d int) error {
	day := k.notAfter / dayNanos
	if d > 0 {
		_, err := s.exec(ctx, `INSERT INTO certificate_expiry_days (status, issuer_id, grp, expiry_day, n) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (status, issuer_id, grp, expiry_day) DO UPDATE SET n = certificate_expiry_days.n + excluded.n`,
			k.status, k.issuerID, k.group, day, d)
		return s.classify(err, "counting certificate expiry")
	}
	if _, err := s.exec(ctx, "UPDATE certificate_expiry_days SET n = n + ? WHERE status = ? AND issuer_id = ? AND grp = ? AND expiry_day = ?",
		d, k.status, k.issuerID, k.group, day); err != nil {
		return s.classify(err, "counting certificate expiry")
	}
	_, err := s.exec(ctx, "DELETE FROM certificate_expiry_days WHERE status = ? AND issuer_id = ? AND grp = ? AND expiry_day = ? AND n <= 0",
		k.status, k.issuerID, k.group, day)
	return s.classify(err, "counting certificate expiry")
}

// summaryWhere returns the conditions on certificate_expiry_days for f, or
// false if f filters on more than status, ACME client and group.
func summaryWhere(f storage.CertificateFilter) (*where, bool) {
	if f.Domain != "" || f.CatalogID != "" || f.Rating != "" || f.Source != "" || !f.NotAfterBefore.IsZero() || !f.NotAfterFrom.IsZero() {
		return nil, false
	}
	w := &where{}
	w.addIf(f.Status != "", "status = ?", f.Status)
	w.addIf(f.IssuerID != "", "issuer_id = ?", f.IssuerID)
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIn("grp", f.Groups)
	return w, true
}
