package certlocker

import (
	"fmt"
	"slices"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Roles of the operator UI's users.
const (
	// RoleAdmin sees and changes everything, in every group.
	RoleAdmin = "admin"
	// RoleOperator sees and changes the records of its groups.
	RoleOperator = "operator"
	// RoleViewer sees the records of its groups and changes nothing.
	RoleViewer = "viewer"
)

// User is an operator UI user: the ID Caddy's authentication sets as
// {http.auth.user.id} (basic_auth's user name, forward_auth's user
// header), a role and the groups the user works in.
type User struct {
	// ID is the authenticated user ID.
	ID string `json:"id"`
	// Role is admin, operator or viewer.
	Role string `json:"role"`
	// Groups are the groups the user sees and acts in; admins see every
	// group whatever this says. Default: none (an operator or viewer
	// without groups sees nothing).
	Groups []string `json:"groups,omitempty"`
}

// CanMutate reports whether the user may change anything.
func (u User) CanMutate() bool { return u.Role == RoleAdmin || u.Role == RoleOperator }

// Unrestricted reports whether the user sees every group.
func (u User) Unrestricted() bool { return u.Role == RoleAdmin }

// checkUsers validates the users list: known roles, valid group names,
// no ID twice.
func checkUsers(users []User) error {
	seen := map[string]bool{}
	for i, u := range users {
		if u.ID == "" {
			return fmt.Errorf("users[%d].id: a user needs an ID (the authenticated user name)", i)
		}
		if seen[u.ID] {
			return fmt.Errorf("users[%d].id: user %q is listed twice", i, u.ID)
		}
		seen[u.ID] = true
		if !slices.Contains([]string{RoleAdmin, RoleOperator, RoleViewer}, u.Role) {
			return fmt.Errorf("users[%d].role: %q is not a role: use admin, operator or viewer", i, u.Role)
		}
		for j, g := range u.Groups {
			if g == "" || !storage.ValidGroup(g) {
				return fmt.Errorf("users[%d].groups[%d]: %q is not a group name: use %s", i, j, g, storage.GroupRule)
			}
		}
	}
	return nil
}

// LookupUser returns the configured user with that ID.
func (a *App) LookupUser(id string) (User, bool) {
	for _, u := range a.Users {
		if u.ID == id {
			return u, true
		}
	}
	return User{}, false
}

// HasUsers reports whether any UI user is configured.
func (a *App) HasUsers() bool { return len(a.Users) > 0 }
