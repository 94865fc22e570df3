package storage

import (
	"context"
	"errors"
	"slices"
)

// ErrOutOfScope is returned when a caller restricted to some groups asks to
// create or move a record into a group outside them. Records of other
// groups are not refused with it but hidden (ErrNotFound), so that their
// existence does not leak.
var ErrOutOfScope = errors.New("that group is not one of yours")

type scopeKey struct{}

// scope is the set of groups a caller may see and act in.
type scope struct{ groups []string }

// WithGroups returns a context restricted to the given groups: the module
// services (issuers, DNS providers, workflows, inventory) then show only
// records of these groups and refuse to create records elsewhere. A
// context without it is unrestricted (the admin API, the CLI, the engine
// itself). An empty list restricts to nothing.
func WithGroups(ctx context.Context, groups []string) context.Context {
	return context.WithValue(ctx, scopeKey{}, scope{groups: slices.Clone(groups)})
}

// ScopeGroups returns the groups ctx is restricted to, and false if it is
// not restricted.
func ScopeGroups(ctx context.Context) ([]string, bool) {
	s, ok := ctx.Value(scopeKey{}).(scope)
	return s.groups, ok
}

// InScope reports whether ctx may see and act on a record of group g.
// A record without a group belongs to no team: only unrestricted callers
// (admins) reach it.
func InScope(ctx context.Context, g string) bool {
	groups, restricted := ScopeGroups(ctx)
	return !restricted || (g != "" && slices.Contains(groups, g))
}

// CheckScope returns ErrNotFound (wrapped, naming what) if ctx may not see
// a record of group g.
func CheckScope(ctx context.Context, g, what string) error {
	if InScope(ctx, g) {
		return nil
	}
	return &scopeError{what: what}
}

type scopeError struct{ what string }

func (e *scopeError) Error() string { return e.what + ": " + ErrNotFound.Error() }
func (e *scopeError) Unwrap() error { return ErrNotFound }

// NarrowGroup returns the group filter a list query should use under ctx's
// scope: the filter itself if set (ok is false when it is outside the
// scope: the answer is empty), the only group of a one-group scope, or ""
// with the results then to be passed through FilterScope.
func NarrowGroup(ctx context.Context, filter string) (group string, ok bool) {
	groups, restricted := ScopeGroups(ctx)
	switch {
	case !restricted:
		return filter, true
	case filter != "":
		return filter, slices.Contains(groups, filter)
	case len(groups) == 1:
		return groups[0], true
	}
	return "", len(groups) > 0
}

// ScopeFilter is NarrowGroup for list queries that filter on a set of
// groups: when a multi-group scope leaves the group open, groups is the
// scope's groups, for the query itself to keep only those rows (a page
// is then full, whatever rows of other groups lie between). Otherwise
// groups is nil.
func ScopeFilter(ctx context.Context, filter string) (group string, groups []string, ok bool) {
	group, ok = NarrowGroup(ctx, filter)
	if scoped, restricted := ScopeGroups(ctx); ok && restricted && group == "" {
		groups = slices.Clone(scoped)
	}
	return group, groups, ok
}

// FilterScope keeps the items of list that ctx may see.
func FilterScope[T any](ctx context.Context, list []T, group func(T) string) []T {
	if _, restricted := ScopeGroups(ctx); !restricted {
		return list
	}
	out := list[:0:0]
	for _, it := range list {
		if InScope(ctx, group(it)) {
			out = append(out, it)
		}
	}
	return out
}
