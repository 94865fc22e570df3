package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/certlocker/caddy-certlocker/storage"
)

// audit is the append-only audit log: Append and List only; the database
// refuses UPDATE and DELETE of its rows (migration 9).
type audit struct{ s *Store }

const auditColumns = "id, at, node, actor, action, target, grp, source, result, details"

func (x audit) Append(ctx context.Context, e *storage.AuditEntry) error {
	if e.Action == "" {
		return errors.New("appending audit entry: no action")
	}
	if !storage.ValidAuditResult(e.Result) {
		return fmt.Errorf("appending audit entry %s: result %q is not ok, refused or failed", e.Action, e.Result)
	}
	if e.ID == "" {
		e.ID = storage.NewID("aud")
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	if e.Result == "" {
		e.Result = storage.AuditOK
	}
	if e.Source == "" {
		e.Source = storage.AuditSource(ctx)
	}
	_, err := x.s.exec(ctx, "INSERT INTO audit ("+auditColumns+") VALUES (?,?,?,?,?,?,?,?,?,?)",
		e.ID, ts(e.Time), e.Node, e.Actor, e.Action, e.Target, e.Group, e.Source, e.Result, rawOr(e.Details, "{}"))
	if err == nil {
		storage.NoteAuditAppended(ctx, e)
	}
	return x.s.classify(err, "appending audit entry "+e.Action)
}

// actorCond matches an actor exactly or up to its "@address" part.
func actorCond(col, actor string) (string, []any) {
	return "(" + col + " = ? OR substr(" + col + ", 1, ?) = ?)", []any{actor, len(actor) + 1, actor + "@"}
}

func (x audit) List(ctx context.Context, f storage.AuditFilter, p storage.Page) ([]*storage.AuditEntry, string, error) {
	var w where
	w.addIf(f.Action != "", "action = ?", f.Action)
	w.addIf(f.Target != "", "target = ?", f.Target)
	if f.Actor != "" {
		cond, args := actorCond("actor", f.Actor)
		w.add(cond, args...)
	}
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIf(f.Result != "", "result = ?", f.Result)
	w.addIf(!f.Since.IsZero(), "at >= ?", ts(f.Since))
	w.addIf(!f.Until.IsZero(), "at < ?", ts(f.Until))
	if sc := f.Scope; sc != nil {
		var or []string
		var args []any
		if len(sc.Groups) > 0 {
			cond, a := inCond("grp", sc.Groups)
			or, args = append(or, cond), append(args, a...)
		}
		if sc.Actor != "" {
			cond, a := actorCond("actor", sc.Actor)
			or, args = append(or, cond), append(args, a...)
		}
		if len(or) == 0 {
			return nil, "", nil // a scope of nothing reads nothing
		}
		w.add("("+strings.Join(or, " OR ")+")", args...)
	}
	return keyset(ctx, x.s, "audit", auditColumns, w, p, true, []string{"id"},
		func(e *storage.AuditEntry) []string { return []string{e.ID} }, scanAudit, "listing audit entries")
}

func scanAudit(sc rowScanner) (*storage.AuditEntry, error) {
	var e storage.AuditEntry
	var at int64
	var details string
	if err := sc.Scan(&e.ID, &at, &e.Node, &e.Actor, &e.Action, &e.Target, &e.Group, &e.Source, &e.Result, &details); err != nil {
		return nil, err
	}
	e.Time, e.Details = tm(at), raw(details)
	return &e, nil
}
