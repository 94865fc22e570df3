package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/certlocker/caddy-certlocker/storage"
)

type audit struct{ s *Store }

func (x audit) Append(ctx context.Context, e *storage.AuditEntry) error {
	if e.Action == "" {
		return errors.New("appending audit entry: no action")
	}
	if e.ID == "" {
		e.ID = storage.NewID("aud")
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	_, err := x.s.exec(ctx, "INSERT INTO audit (id, at, node, actor, action, target, details) VALUES (?,?,?,?,?,?,?)",
		e.ID, ts(e.Time), e.Node, e.Actor, e.Action, e.Target, rawOr(e.Details, "{}"))
	return x.s.classify(err, "appending audit entry "+e.Action)
}

func (x audit) List(ctx context.Context, f storage.AuditFilter, p storage.Page) ([]*storage.AuditEntry, string, error) {
	var w where
	w.addIf(f.Action != "", "action = ?", f.Action)
	w.addIf(f.Target != "", "target = ?", f.Target)
	w.addIf(f.Actor != "", "actor = ?", f.Actor)
	w.addIf(!f.Since.IsZero(), "at >= ?", ts(f.Since))
	order := " ORDER BY id DESC"
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", fmt.Errorf("listing audit entries: %w", err)
		}
		if p.Backward {
			w.add("id >= ?", c[0])
			order = " ORDER BY id"
		} else {
			w.add("id < ?", c[0])
		}
	}
	limit := p.Clamp()
	rows, err := x.s.query(ctx, "SELECT id, at, node, actor, action, target, details FROM audit"+w.String()+
		order+" LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.s.classify(err, "listing audit entries")
	}
	defer rows.Close()
	var out []*storage.AuditEntry
	for rows.Next() {
		var e storage.AuditEntry
		var at int64
		var details string
		if err := rows.Scan(&e.ID, &at, &e.Node, &e.Actor, &e.Action, &e.Target, &details); err != nil {
			return nil, "", x.s.classify(err, "listing audit entries")
		}
		e.Time, e.Details = tm(at), raw(details)
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", x.s.classify(err, "listing audit entries")
	}
	out, next := keysetPage(out, limit, p.Backward && p.Cursor != "", func(e *storage.AuditEntry) string { return encodeCursor(e.ID) })
	return out, next, nil
}
