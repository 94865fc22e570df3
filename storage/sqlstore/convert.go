package sqlstore

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
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
