package dnsproviders

import (
	"errors"
	"sort"
	"strings"
)

// Kinds of provider failure. Errors returned by Present, CleanUp, Verify and
// WaitPropagation wrap one of them, so callers can tell with errors.Is what
// went wrong and whether trying again later can help (ErrRateLimited,
// ErrUnavailable, ErrPropagationTimeout) or not.
var (
	// ErrInvalidCredentials: the provider does not accept the credentials
	// at all (unknown, revoked, expired or malformed token; bad TSIG key).
	ErrInvalidCredentials = errors.New("credentials rejected")
	// ErrPermission: the credentials are valid but not allowed to do this
	// on this zone.
	ErrPermission = errors.New("permission denied")
	// ErrZoneNotFound: the provider does not host the zone, or the
	// credentials cannot see it.
	ErrZoneNotFound = errors.New("zone not found")
	// ErrRateLimited: the provider asked to slow down, and retries did not
	// get through.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable: the provider could not be reached or failed on its
	// side (5xx, timeouts), and retries did not get through.
	ErrUnavailable = errors.New("provider unavailable")
	// ErrOutsideZones: the name is not in any zone the provider client
	// may touch.
	ErrOutsideZones = errors.New("name outside the provider's zones")
	// ErrPropagationTimeout: not every authoritative nameserver served the
	// record before the propagation timeout.
	ErrPropagationTimeout = errors.New("propagation timed out")
	// ErrManagedByConfig: the provider client is declared in the config
	// and cannot be changed through the API.
	ErrManagedByConfig = errors.New("managed by config")
)

// InputError is invalid input: the message says what is wrong with which
// field, never echoing a secret.
type InputError struct {
	Field   string
	Message string
}

func (e *InputError) Error() string { return e.Message }

func inputErr(field, msg string) error { return &InputError{Field: field, Message: msg} }

// providerError is a provider failure whose message was scrubbed of every
// credential value; it unwraps to its kind only, so no wrapped error can
// carry a secret past it.
type providerError struct {
	msg  string
	kind error
}

func (e *providerError) Error() string { return e.msg }
func (e *providerError) Unwrap() error { return e.kind }

// redactor removes credential values from text.
type redactor []string

// newRedactor collects every string value of a credentials JSON object
// (at any depth) that is long enough to be a secret.
func newRedactor(values []string) redactor {
	var r redactor
	for _, v := range values {
		if len(v) >= 4 {
			r = append(r, v)
		}
	}
	// longest first, so a secret containing another is removed whole
	sort.Slice(r, func(i, j int) bool { return len(r[i]) > len(r[j]) })
	return r
}

func (r redactor) clean(s string) string {
	for _, v := range r {
		s = strings.ReplaceAll(s, v, "(redacted)")
	}
	return s
}

// wrap turns err into a providerError of the given kind with msg as
// context; the result holds no credential value.
func (r redactor) wrap(kind error, msg string, err error) error {
	if err != nil {
		msg += ": " + err.Error()
	}
	return &providerError{msg: r.clean(msg), kind: kind}
}

// ErrProviderFailed is any other provider failure.
var ErrProviderFailed = errors.New("provider call failed")
