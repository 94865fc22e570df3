package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

type workflows struct{ s *Store }

const workflowCols = `id, issuer_id, identifiers, key_type, profile, trigger_kind, grp, state, status, order_url,
	private_key, certificate_id, previous_certificate_id, parent_id, attempt, next_run_at, lease_owner,
	lease_until, data, created_at, updated_at, version`

// terminalSQL is the SQL list of terminal states.
var terminalSQL = "('" + strings.Join(storage.TerminalStates, "', '") + "')"

func (x workflows) scan(sc interface{ Scan(...any) error }) (*storage.Workflow, error) {
	var (
		w                                  storage.Workflow
		idents, data                       string
		key                                []byte
		attempt, next, lease, created, upd int64
	)
	if err := sc.Scan(&w.ID, &w.IssuerID, &idents, &w.KeyType, &w.Profile, &w.Trigger, &w.Group, &w.State,
		&w.Status, &w.OrderURL, &key, &w.CertificateID, &w.PreviousCertificateID, &w.ParentID, &attempt, &next,
		&w.LeaseOwner, &lease, &data, &created, &upd, &w.Version); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(idents), &w.Identifiers); err != nil {
		return nil, fmt.Errorf("decoding identifiers of workflow %s: %w", w.ID, err)
	}
	var err error
	if w.PrivateKey, err = x.s.open(key, "workflows", "private_key", w.ID); err != nil {
		return nil, err
	}
	w.Attempt, w.Data = int(attempt), raw(data)
	w.NextRunAt, w.LeaseUntil, w.CreatedAt, w.UpdatedAt = tm(next), tm(lease), tm(created), tm(upd)
	return &w, nil
}

func (x workflows) Create(ctx context.Context, w *storage.Workflow) error {
	if w.ID == "" {
		w.ID = storage.NewID("wf")
	}
	if len(w.Identifiers) == 0 {
		return fmt.Errorf("creating workflow: no identifiers")
	}
	if w.State == "" {
		w.State = storage.StatePending
	}
	idents, err := json.Marshal(w.Identifiers)
	if err != nil {
		return fmt.Errorf("creating workflow: encoding identifiers: %w", err)
	}
	key, err := x.sealKey(w)
	if err != nil {
		return err
	}
	t := now()
	w.CreatedAt, w.UpdatedAt, w.Version = t, t, 1
	return x.s.inTx(ctx, func(tx *Store) error {
		_, err := tx.exec(ctx, `INSERT INTO workflows (`+workflowCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			w.ID, w.IssuerID, string(idents), w.KeyType, w.Profile, w.Trigger, w.Group, w.State, w.Status, w.OrderURL,
			key, w.CertificateID, w.PreviousCertificateID, w.ParentID, w.Attempt, ts(w.NextRunAt), "", 0,
			rawOr(w.Data, "{}"), ts(t), ts(t), w.Version)
		if err != nil {
			if tx.db.dialect.IsForeignKey != nil && tx.db.dialect.IsForeignKey(err) {
				return fmt.Errorf("creating workflow: issuer %s: %w", w.IssuerID, storage.ErrNotFound)
			}
			return tx.classify(err, "creating workflow")
		}
		seen := map[string]bool{}
		for _, id := range w.Identifiers {
			name := strings.ToLower(id.Value)
			if seen[name] {
				continue
			}
			seen[name] = true
			if _, err := tx.exec(ctx, "INSERT INTO workflow_names (workflow_id, name) VALUES (?, ?)", w.ID, name); err != nil {
				return tx.classify(err, "creating workflow")
			}
		}
		return nil
	})
}

func (x workflows) Get(ctx context.Context, id string) (*storage.Workflow, error) {
	w, err := x.scan(x.s.queryRow(ctx, "SELECT "+workflowCols+" FROM workflows WHERE id = ?", id))
	return w, x.s.classify(err, "getting workflow "+id)
}

// List returns workflows newest first (oldest first with Sort "created").
func (x workflows) List(ctx context.Context, f storage.WorkflowFilter, p storage.Page) ([]*storage.Workflow, string, error) {
	var w where
	w.addIf(f.State != "", "state = ?", f.State)
	w.addIf(f.IssuerID != "", "issuer_id = ?", f.IssuerID)
	w.addIf(f.Group != "", "grp = ?", f.Group)
	w.addIn("grp", f.Groups)
	w.addIf(f.Domain != "", "id IN (SELECT workflow_id FROM workflow_names WHERE name = ?)", strings.ToLower(f.Domain))
	var asc bool // IDs grow with creation time
	switch f.Sort {
	case "", "-created":
	case "created":
		asc = true
	default:
		return nil, "", fmt.Errorf("listing workflows: unknown sort %q: use created or -created", f.Sort)
	}
	return keyset(ctx, x.s, "workflows", workflowCols, w, p, !asc, []string{"id"},
		func(wf *storage.Workflow) []string { return []string{wf.ID} }, x.scan, "listing workflows")
}

func (x workflows) Update(ctx context.Context, w *storage.Workflow) error {
	key, err := x.sealKey(w)
	if err != nil {
		return err
	}
	t := now()
	q := `UPDATE workflows SET issuer_id = ?, key_type = ?, profile = ?, trigger_kind = ?, grp = ?, state = ?, status = ?,
		order_url = ?, private_key = ?, certificate_id = ?, previous_certificate_id = ?, parent_id = ?, attempt = ?,
		next_run_at = ?, data = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`
	args := []any{w.IssuerID, w.KeyType, w.Profile, w.Trigger, w.Group, w.State, w.Status, w.OrderURL, key, w.CertificateID,
		w.PreviousCertificateID, w.ParentID, w.Attempt, ts(w.NextRunAt), rawOr(w.Data, "{}"), ts(t), w.ID, w.Version}
	if w.LeaseOwner != "" {
		q += " AND lease_owner = ?"
		args = append(args, w.LeaseOwner)
	}
	res, err := x.s.exec(ctx, q, args...)
	if err != nil {
		return x.s.classify(err, "updating workflow "+w.ID)
	}
	if err := x.s.expectOne(ctx, res, "workflows", w.ID, "updating workflow"); err != nil {
		return err
	}
	w.Version++
	w.UpdatedAt = t
	return nil
}

func (x workflows) Acquire(ctx context.Context, owner string, at time.Time, ttl time.Duration, limit int, skipIssuers ...string) ([]*storage.Workflow, error) {
	if owner == "" {
		return nil, fmt.Errorf("acquiring workflows: empty lease owner")
	}
	if limit <= 0 {
		limit = 1
	}
	skip := ""
	args := []any{ts(at), ts(at)}
	if len(skipIssuers) > 0 {
		skip = " AND issuer_id NOT IN (?" + strings.Repeat(", ?", len(skipIssuers)-1) + ")"
		for _, id := range skipIssuers {
			args = append(args, id)
		}
	}
	args = append(args, limit)
	var out []*storage.Workflow
	err := x.s.inTx(ctx, func(tx *Store) error {
		rows, err := tx.query(ctx, `SELECT id FROM workflows WHERE state NOT IN `+terminalSQL+`
			AND next_run_at <= ? AND (lease_owner = '' OR lease_until < ?)`+skip+`
			ORDER BY next_run_at, id LIMIT ? `+tx.db.dialect.SkipLocked, args...)
		if err != nil {
			return tx.classify(err, "acquiring workflows")
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return tx.classify(err, "acquiring workflows")
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return tx.classify(err, "acquiring workflows")
		}
		for _, id := range ids {
			if _, err := tx.exec(ctx, "UPDATE workflows SET lease_owner = ?, lease_until = ? WHERE id = ?",
				owner, ts(at.Add(ttl)), id); err != nil {
				return tx.classify(err, "acquiring workflow "+id)
			}
			wf, err := workflows{tx}.scan(tx.queryRow(ctx, "SELECT "+workflowCols+" FROM workflows WHERE id = ?", id))
			if err != nil {
				return tx.classify(err, "acquiring workflow "+id)
			}
			out = append(out, wf)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (x workflows) Renew(ctx context.Context, id, owner string, until time.Time) error {
	res, err := x.s.exec(ctx, "UPDATE workflows SET lease_until = ? WHERE id = ? AND lease_owner = ?", ts(until), id, owner)
	if err != nil {
		return x.s.classify(err, "renewing lease on workflow "+id)
	}
	return x.s.expectOne(ctx, res, "workflows", id, "renewing lease on workflow")
}

func (x workflows) Release(ctx context.Context, id, owner string) error {
	res, err := x.s.exec(ctx, "UPDATE workflows SET lease_owner = '', lease_until = 0 WHERE id = ? AND lease_owner = ?", id, owner)
	if err != nil {
		return x.s.classify(err, "releasing workflow "+id)
	}
	return x.s.expectOne(ctx, res, "workflows", id, "releasing workflow")
}

func (x workflows) AppendEvent(ctx context.Context, ev *storage.WorkflowEvent) error {
	if ev.Time.IsZero() {
		ev.Time = now()
	}
	problem := ""
	if len(ev.Problem) > 0 {
		problem = string(ev.Problem)
	}
	// the workflow row is locked for the transaction, so concurrent
	// appends to one timeline take turns computing the next seq
	return x.s.inTx(ctx, func(tx *Store) error {
		var one int
		err := tx.queryRow(ctx, "SELECT 1 FROM workflows WHERE id = ? "+tx.db.dialect.RowLock, ev.WorkflowID).Scan(&one)
		if err != nil {
			return tx.classify(err, "appending event to workflow "+ev.WorkflowID)
		}
		err = tx.queryRow(ctx, `INSERT INTO workflow_events (workflow_id, seq, at, node, state, step, identifier,
			message, duration, problem, retry_after)
			VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM workflow_events WHERE workflow_id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?)
			RETURNING seq`,
			ev.WorkflowID, ev.WorkflowID, ts(ev.Time), ev.Node, ev.State, ev.Step, ev.Identifier, ev.Message,
			int64(ev.Duration), problem, int64(ev.RetryAfter)).Scan(&ev.Seq)
		return tx.classify(err, "appending event to workflow "+ev.WorkflowID)
	})
}

func (x workflows) Events(ctx context.Context, workflowID string, afterSeq int64, limit int) ([]*storage.WorkflowEvent, error) {
	if limit <= 0 || limit > storage.MaxLimit {
		limit = storage.MaxLimit
	}
	rows, err := x.s.query(ctx, `SELECT workflow_id, seq, at, node, state, step, identifier, message, duration,
		problem, retry_after FROM workflow_events WHERE workflow_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
		workflowID, afterSeq, limit)
	if err != nil {
		return nil, x.s.classify(err, "listing events of workflow "+workflowID)
	}
	defer rows.Close()
	var out []*storage.WorkflowEvent
	for rows.Next() {
		var (
			ev                  storage.WorkflowEvent
			at, dur, retryAfter int64
			problem             string
		)
		if err := rows.Scan(&ev.WorkflowID, &ev.Seq, &at, &ev.Node, &ev.State, &ev.Step, &ev.Identifier,
			&ev.Message, &dur, &problem, &retryAfter); err != nil {
			return nil, x.s.classify(err, "listing events of workflow "+workflowID)
		}
		ev.Time, ev.Duration, ev.Problem, ev.RetryAfter = tm(at), time.Duration(dur), raw(problem), time.Duration(retryAfter)
		out = append(out, &ev)
	}
	return out, x.s.classify(rows.Err(), "listing events of workflow "+workflowID)
}

func (x workflows) CountByState(ctx context.Context) (map[string]int, error) {
	rows, err := x.s.query(ctx, "SELECT state, COUNT(*) FROM workflows GROUP BY state")
	if err != nil {
		return nil, x.s.classify(err, "counting workflows")
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, x.s.classify(err, "counting workflows")
		}
		out[st] = n
	}
	return out, x.s.classify(rows.Err(), "counting workflows")
}

// DropPrivateKey implements storage.WorkflowStore.
func (x workflows) DropPrivateKey(ctx context.Context, id string) error {
	res, err := x.s.exec(ctx, "UPDATE workflows SET private_key = NULL WHERE id = ?", id)
	if err != nil {
		return x.s.classify(err, "dropping the private key of workflow "+id)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("dropping the private key of workflow %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("dropping the private key of workflow %s: %w", id, storage.ErrNotFound)
	}
	return nil
}

// sealKey seals the workflow's private key, unless the workflow names its
// certificate: the inventory then holds the only copy.
func (x workflows) sealKey(w *storage.Workflow) ([]byte, error) {
	if w.CertificateID != "" {
		return nil, nil
	}
	return x.s.seal(w.PrivateKey, "workflows", "private_key", w.ID)
}
