package gateway

import (
	"context"

	"github.com/certlocker/caddy-certlocker/storage"
)

// ListPage returns a page of the tokens matching f (State as State
// computes it, at the service's clock), oldest first, or newest first
// with sort "-created". Under a group scope the query itself keeps the
// scope's tokens, so a page is full whatever other groups' lie between.
func (s *Service) ListPage(ctx context.Context, f ListFilter, sort string, p storage.Page) ([]*storage.Token, string, error) {
	sf := storage.TokenFilter{CertificateID: f.CertificateID, Sort: sort}
	switch f.State {
	case "":
	case StateRevoked:
		sf.Status = StateRevoked
	case StateActive:
		sf.Status, sf.LiveAt = StateActive, s.clock()
	case StateExpired:
		sf.Status, sf.ExpiredAt = StateActive, s.clock()
	default:
		return nil, "", inputErr("state", "unknown state %q: use active, revoked or expired", f.State)
	}
	if sort != "" && sort != "created" && sort != "-created" {
		return nil, "", inputErr("sort", "unknown sort %q: use created or -created", sort)
	}
	if !storage.ValidGroup(f.Group) {
		return nil, "", inputErr("group", "group must be %s", storage.GroupRule)
	}
	g, groups, ok := storage.ScopeFilter(ctx, f.Group)
	if !ok {
		return nil, "", nil
	}
	sf.Group, sf.Groups = g, groups
	return s.store.Tokens().ListPage(ctx, sf, p)
}
