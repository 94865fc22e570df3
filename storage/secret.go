package storage

// Secret holds a plaintext secret in memory. It never prints, logs or
// marshals its content: fmt, zap and encoding/json all see "(redacted)".
// Backends seal it before it reaches the database.
type Secret struct {
	b []byte
}

// NewSecret wraps b (not copied).
func NewSecret(b []byte) Secret { return Secret{b: b} }

// Reveal returns the plaintext. Callers must not log or return it.
func (s Secret) Reveal() []byte { return s.b }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// String implements fmt.Stringer without revealing anything.
func (s Secret) String() string {
	if s.IsZero() {
		return ""
	}
	return "(redacted)"
}

// GoString implements fmt.GoStringer for %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalJSON never reveals the secret.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s.IsZero() {
		return []byte(`""`), nil
	}
	return []byte(`"(redacted)"`), nil
}

// MarshalText never reveals the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
