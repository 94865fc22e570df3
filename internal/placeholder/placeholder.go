// Package placeholder holds the one rule CertLocker applies to secrets
// written in a config: a secret must be made of Caddy placeholders alone
// ("{env.CF_API_TOKEN}", "{file./run/secrets/eab}", "{env.A}{env.B}"), so no
// literal part of it ever shows in the admin API's GET /config/.
package placeholder

import (
	"regexp"
	"strings"
)

var (
	anyRe  = regexp.MustCompile(`\{[^{}]+\}`)
	onlyRe = regexp.MustCompile(`^(\{[^{}]+\})+$`)
)

// Has reports whether s contains at least one placeholder.
func Has(s string) bool { return anyRe.MatchString(s) }

// Only reports whether s, spaces around it aside, is nothing but
// placeholders. An empty string is not.
func Only(s string) bool { return onlyRe.MatchString(strings.TrimSpace(s)) }

// Mask replaces every placeholder in s with mark, for parsers (such as a DSN
// parser) that must look at the literal parts only.
func Mask(s, mark string) string { return anyRe.ReplaceAllString(s, mark) }
