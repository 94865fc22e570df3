package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/certlocker/caddy-certlocker/storage"
)

// The keyset-paged lists of ACME clients, DNS provider clients and tokens.

type rowScanner = interface{ Scan(...any) error }

// keyset runs a keyset-paged SELECT of cols FROM table under w, ordered by
// keyCols (ascending, or descending with desc; together they are unique),
// and returns the page p asks for and its cursor. key gives a row's values
// of keyCols, which the cursor holds.
func keyset[T any](ctx context.Context, s *Store, table, cols string, w where, p storage.Page, desc bool,
	keyCols []string, key func(T) []string, scan func(rowScanner) (T, error), what string) ([]T, string, error) {
	backward := p.Backward && p.Cursor != ""
	dir, op := " DESC", "<"
	if !desc != backward {
		dir, op = "", ">"
	}
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, len(keyCols))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", what, err)
		}
		cond, args := keysetCond(keyCols, c, op, backward)
		w.add(cond, args...)
	}
	order := make([]string, len(keyCols))
	for i, k := range keyCols {
		order[i] = k + dir
	}
	limit := p.Clamp()
	rows, err := s.query(ctx, "SELECT "+cols+" FROM "+table+w.String()+" ORDER BY "+strings.Join(order, ", ")+" LIMIT ?",
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", s.classify(err, what)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, "", s.classify(err, what)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, "", s.classify(err, what)
	}
	out, next := keysetPage(out, limit, backward, func(v T) string { return encodeCursor(key(v)...) })
	return out, next, nil
}

// keysetCond is the condition "after the cursor" on keyCols in the order
// op gives ("<" or ">"): (a op ? OR (a = ? AND (b op ? ...))), the last
// comparison inclusive when paging backward (the cursor's row is the last
// of the page before).
func keysetCond(keyCols, vals []string, op string, inclusive bool) (string, []any) {
	last := len(keyCols) - 1
	lastOp := op
	if inclusive {
		lastOp += "="
	}
	cond := keyCols[last] + " " + lastOp + " ?"
	args := []any{vals[last]}
	for i := last - 1; i >= 0; i-- {
		cond = "(" + keyCols[i] + " " + op + " ? OR (" + keyCols[i] + " = ? AND " + cond + "))"
		args = append([]any{vals[i], vals[i]}, args...)
	}
	return cond, args
}

func (x issuers) ListPage(ctx context.Context, f storage.IssuerFilter, p storage.Page) ([]*storage.Issuer, string, error) {
	var w where
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIn("grp", f.Groups)
	w.addIf(f.ManagedBy != "", "managed_by = ?", f.ManagedBy)
	return keyset(ctx, x.s, "issuers", issuerCols, w, p, false, []string{"name", "id"},
		func(i *storage.Issuer) []string { return []string{i.Name, i.ID} }, x.scan, "listing issuers")
}

func (x dnsProviders) ListPage(ctx context.Context, f storage.DNSProviderFilter, p storage.Page) ([]*storage.DNSProvider, string, error) {
	var w where
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIn("grp", f.Groups)
	return keyset(ctx, x.s, "dns_providers", dnsProviderCols, w, p, false, []string{"name", "id"},
		func(d *storage.DNSProvider) []string { return []string{d.Name, d.ID} }, x.scan, "listing DNS providers")
}

func (x tokens) ListPage(ctx context.Context, f storage.TokenFilter, p storage.Page) ([]*storage.Token, string, error) {
	var desc bool // IDs grow with creation time
	switch f.Sort {
	case "", "created":
	case "-created":
		desc = true
	default:
		return nil, "", fmt.Errorf("listing tokens: unknown sort %q: use created or -created", f.Sort)
	}
	var w where
	w.addIf(f.CertificateID != "", "certificate_id = ?", f.CertificateID)
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIn("grp", f.Groups)
	w.addIf(f.Status != "", "status = ?", f.Status)
	w.addIf(!f.LiveAt.IsZero(), "(expires_at = 0 OR expires_at > ?)", ts(f.LiveAt))
	w.addIf(!f.ExpiredAt.IsZero(), "expires_at <> 0 AND expires_at <= ?", ts(f.ExpiredAt))
	return keyset(ctx, x.s, "tokens", tokenCols, w, p, desc, []string{"id"},
		func(t *storage.Token) []string { return []string{t.ID} }, x.scan, "listing tokens")
}
