package storage

import "regexp"

var groupRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// GroupRule says in words what ValidGroup accepts, for error messages.
const GroupRule = "up to 63 letters, digits, dots, dashes or underscores, starting with a letter or digit"

// ValidGroup reports whether g can name a group (a team or environment
// that scopes ACME clients, DNS provider clients, workflows and
// certificates); "" (no group) is valid.
func ValidGroup(g string) bool { return g == "" || groupRe.MatchString(g) }
