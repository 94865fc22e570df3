package gateway

import (
	"fmt"
	"net"
	"strings"

	"golang.org/x/net/idna"
)

// NormalizeName returns the form of a DNS name or IP address that scopes
// are compared in: lowercase, without a trailing dot, internationalised
// labels as punycode (A-labels), IP addresses in their canonical text.
// A leading "*." is kept.
func NormalizeName(name string) (string, error) {
	n := strings.TrimSuffix(strings.TrimSpace(name), ".")
	if n == "" {
		return "", fmt.Errorf("empty name")
	}
	if ip := net.ParseIP(strings.Trim(n, "[]")); ip != nil {
		return ip.String(), nil
	}
	wild := strings.HasPrefix(n, "*.")
	rest := strings.TrimPrefix(n, "*.")
	ascii, err := idna.Lookup.ToASCII(rest)
	if err != nil {
		// underscores (SRV-style labels) are refused by the IDNA
		// profile but allowed in certificates' DNS names elsewhere here
		ascii, err = idna.Punycode.ToASCII(rest)
		if err != nil {
			return "", fmt.Errorf("%q is not a valid DNS name: %v", name, err)
		}
	}
	ascii = strings.ToLower(ascii)
	if wild {
		return "*." + ascii, nil
	}
	return ascii, nil
}

// Scope is a token's set of approved names, normalised.
type Scope struct {
	exact map[string]bool
	wild  map[string]bool // suffix after "*."
}

// NewScope builds a scope from approved names (exact names, "*." wildcards,
// IP addresses).
func NewScope(names []string) (Scope, error) {
	s := Scope{exact: map[string]bool{}, wild: map[string]bool{}}
	for _, n := range names {
		nn, err := NormalizeName(n)
		if err != nil {
			return Scope{}, err
		}
		if suffix, ok := strings.CutPrefix(nn, "*."); ok {
			s.wild[suffix] = true
		} else {
			s.exact[nn] = true
		}
	}
	return s, nil
}

// Empty reports whether the scope approves nothing.
func (s Scope) Empty() bool { return len(s.exact) == 0 && len(s.wild) == 0 }

// Covers reports whether the scope approves name. A wildcard approves the
// same wildcard and every name exactly one label below its base, never the
// base itself nor deeper names; an IP address only if listed. Fail-closed:
// a name that does not normalise is not covered.
func (s Scope) Covers(name string) bool {
	n, err := NormalizeName(name)
	if err != nil {
		return false
	}
	if s.exact[n] {
		return true
	}
	if net.ParseIP(n) != nil {
		return false
	}
	if suffix, ok := strings.CutPrefix(n, "*."); ok {
		return s.wild[suffix]
	}
	label, parent, ok := strings.Cut(n, ".")
	if !ok || label == "" || label == "*" {
		return false
	}
	return s.wild[parent]
}
