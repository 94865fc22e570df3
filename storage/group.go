package storage

import "regexp"

// nameRe is the one rule for names CertLocker gives things: ACME client and
// DNS provider client names, group names and node IDs.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// NameRule says in words what ValidName accepts, for error messages.
const NameRule = "up to 63 letters, digits, dots, dashes or underscores, starting with a letter or digit"

// GroupRule says in words what ValidGroup accepts, for error messages.
const GroupRule = NameRule

// ValidName reports whether s can name an ACME client, a DNS provider
// client, a group or a node.
func ValidName(s string) bool { return nameRe.MatchString(s) }

// ValidGroup reports whether g can name a group (a team or environment
// that scopes ACME clients, DNS provider clients, workflows and
// certificates); "" (no group) is valid.
func ValidGroup(g string) bool { return g == "" || ValidName(g) }
