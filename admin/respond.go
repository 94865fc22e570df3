package admin

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certlocker/caddy-certlocker/storage"
)

// MaxBodyBytes caps every request body.
const MaxBodyBytes = 1 << 20

// Error is an API error: an HTTP status, a message for the operator, and
// the input field at fault if any. Messages never contain secrets.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// BadRequest returns a 400 about one field.
func BadRequest(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Field: field}
}

// writeError writes err as a JSON problem, mapping storage errors to their
// statuses. Unexpected errors are logged and answered 500 with a generic
// message (see internalError).
func writeError(w http.ResponseWriter, logger *zap.Logger, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, storage.ErrInvalidCursor):
		e = &Error{Status: http.StatusBadRequest, Message: storage.ErrInvalidCursor.Error(), Field: "cursor"}
	case errors.Is(err, storage.ErrNotFound):
		e = &Error{Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, storage.ErrDuplicate), errors.Is(err, storage.ErrConflict), errors.Is(err, storage.ErrInUse):
		e = &Error{Status: http.StatusConflict, Message: err.Error()}
	default:
		e = &Error{Status: http.StatusInternalServerError, Message: internalError(logger, "admin API request failed", err)}
	}
	if e.Status < 500 {
		if ce := logger.Check(zapcore.DebugLevel, "admin API request refused"); ce != nil {
			ce.Write(zap.Int("status", e.Status), zap.String("field", e.Field), zap.String("message", e.Message))
		}
	}
	writeJSON(w, e.Status, e)
}

// internalError logs err under a new error ID and returns what the client
// is told instead: the ID and where to look. The text of an unexpected
// error is for the node's log only, since errors from below (the database
// driver, the network) can name hosts, users, file paths or SQL.
func internalError(logger *zap.Logger, msg string, err error) string {
	id := newErrorID()
	logger.Error(msg, zap.String("error_id", id), zap.Error(err))
	return fmt.Sprintf("internal error (id %s); see the node's log", id)
}

// newErrorID returns 8 random hex characters: short enough to read out,
// unique enough to find one entry in a node's log.
func newErrorID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeJSON writes v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeJSON reads a JSON body into v: at most MaxBodyBytes, one value, no
// unknown fields. Its errors name the field at fault where JSON tells.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &Error{Status: http.StatusUnsupportedMediaType, Message: "send the body as application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)}
	case err != nil:
		return BadRequest("", "reading request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
	)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		return BadRequest("", "request body is empty: send a JSON object")
	case errors.As(err, &typeErr):
		return BadRequest(typeErr.Field, "field %q must be %s, not %s", typeErr.Field, typeErr.Type.String(), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return BadRequest("", "request body is not valid JSON: %v (at byte %d)", syntaxErr, syntaxErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return BadRequest(f, "unknown field %q", f)
	default:
		// a field's own UnmarshalJSON refused its value; encoding/json
		// does not say which field that was
		if field, typ, ferr := locateField(body, reflect.TypeOf(v)); field != "" {
			if typ == durationType {
				return BadRequest(field, `%s must be a duration such as "2m" or "90s"`, field)
			}
			return BadRequest(field, "%s: %v", field, ferr)
		}
		return BadRequest("", "reading request body: %v", err)
	}
	if dec.More() {
		return BadRequest("", "request body holds more than one JSON value")
	}
	return nil
}

var durationType = reflect.TypeFor[caddy.Duration]()

// locateField finds the field of a JSON value of type t whose value fails
// to decode: its path as the API names fields ("ttl", "zones[0]",
// "credentials.api_token"), its Go type, and the error. It returns "" if
// no single field is at fault.
func locateField(raw []byte, t reflect.Type) (string, reflect.Type, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return "", nil, nil
		}
		for name, val := range obj {
			f, ok := jsonField(t, name)
			if !ok {
				continue
			}
			if err := json.Unmarshal(val, reflect.New(f.Type).Interface()); err != nil {
				if sub, typ, serr := locateField(val, f.Type); sub != "" {
					return joinPath(name, sub), typ, serr
				}
				return name, f.Type, err
			}
		}
	case reflect.Slice, reflect.Array:
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil {
			return "", nil, nil
		}
		for i, val := range list {
			if err := json.Unmarshal(val, reflect.New(t.Elem()).Interface()); err != nil {
				idx := fmt.Sprintf("[%d]", i)
				if sub, typ, serr := locateField(val, t.Elem()); sub != "" {
					return joinPath(idx, sub), typ, serr
				}
				return idx, t.Elem(), err
			}
		}
	case reflect.Map:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return "", nil, nil
		}
		for k, val := range obj {
			if err := json.Unmarshal(val, reflect.New(t.Elem()).Interface()); err != nil {
				if sub, typ, serr := locateField(val, t.Elem()); sub != "" {
					return joinPath(k, sub), typ, serr
				}
				return k, t.Elem(), err
			}
		}
	}
	return "", nil, nil
}

// joinPath appends a field path to its parent's: "zones" + "[0]",
// "credentials" + "api_token".
func joinPath(parent, sub string) string {
	if strings.HasPrefix(sub, "[") {
		return parent + sub
	}
	return parent + "." + sub
}

// jsonField finds the struct field encoding/json decodes the key name
// into (embedded structs included; names match case-insensitively, as
// encoding/json does).
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		key, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && key == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				if sf, ok := jsonField(et, name); ok {
					return sf, true
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if key == "" {
			key = f.Name
		}
		if strings.EqualFold(key, name) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
