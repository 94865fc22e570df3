package sqlstore

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

func nowNanos() int64 { return time.Now().UnixNano() }

// ts stores a time as Unix nanoseconds, 0 for the zero time.
func ts(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// tm reads a time stored by ts, in UTC.
func tm(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// now returns the current time truncated to what the database keeps.
func now() time.Time { return time.Now().UTC() }

func jsonList(v []string) string {
	if v == nil {
		v = []string{}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func parseList(s string) ([]string, error) {
	var v []string
	if s == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("decoding list column: %w", err)
	}
	return v, nil
}

func rawOr(b json.RawMessage, def string) string {
	if len(b) == 0 {
		return def
	}
	return string(b)
}

func raw(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// cursor encodes a position in an ordered list: the sort key and the id.
// The first part is a tag, so a random string is not taken for a cursor.
func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorTag + "\x00" + strings.Join(parts, "\x00")))
}

const cursorTag = "c1"

func decodeCursor(c string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, storage.ErrInvalidCursor
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != n+1 || parts[0] != cursorTag {
		return nil, storage.ErrInvalidCursor
	}
	return parts[1:], nil
}

// where accumulates AND-ed conditions and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) addIf(ok bool, cond string, args ...any) {
	if ok {
		w.add(cond, args...)
	}
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// addIn keeps rows whose column is one of vals, when vals is not nil (an
// empty, non-nil vals keeps nothing).
func (w *where) addIn(column string, vals []string) {
	switch {
	case vals == nil:
	case len(vals) == 0:
		w.add("1 = 0")
	default:
		cond, args := inCond(column, vals)
		w.add(cond, args...)
	}
}

// inCond is "column IN (?, …)" for vals (at least one) and its arguments.
func inCond(column string, vals []string) (string, []any) {
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return column + " IN (?" + strings.Repeat(", ?", len(vals)-1) + ")", args
}

// keysetPage turns the rows a keyset query fetched for p (at most limit+1,
// in query order: reversed when paging backward) into the page in list
// order and the cursor to return (see storage.Page).
func keysetPage[T any](rows []T, limit int, backward bool, cursor func(T) string) ([]T, string) {
	next := ""
	if len(rows) > limit {
		next = cursor(rows[limit])
		if !backward {
			next = cursor(rows[limit-1])
		}
		rows = rows[:limit]
	}
	if backward {
		slices.Reverse(rows)
	}
	return rows, next
}
