package certlocker

import (
	"context"
	"strings"

	"github.com/certlocker/caddy-certlocker/storage"
)

// AuditLog returns the audit entries matching f, newest first, a page at
// a time, and the cursor of the next page ("" after the last). A caller
// restricted to groups (storage.WithGroups) reads the entries of its
// groups and its own (storage.WithAuditReader), whatever f.Scope says.
func (a *App) AuditLog(ctx context.Context, f storage.AuditFilter, p storage.Page) ([]*storage.AuditEntry, string, error) {
	f.Scope = storage.AuditScopeOf(ctx)
	return a.store.Audit().List(ctx, f, p)
}

// GroupOf returns the group of the record with this ID (an ACME client,
// DNS provider client, workflow, certificate or token, told by its
// prefix), whoever asks, or "" if there is none: for the audit entry of a
// refused request, so that the record's group sees the attempt. It tells
// the caller nothing: the group goes only into the audit log.
func (a *App) GroupOf(id string) string {
	ctx := context.Background() // unrestricted: the record may be outside the caller's groups
	prefix, _, _ := strings.Cut(id, "_")
	switch prefix {
	case "iss":
		if v, err := a.issuers.Get(ctx, id); err == nil {
			return v.Group
		}
	case "dns":
		if v, err := a.dns.Get(ctx, id); err == nil {
			return v.Group
		}
	case "wf":
		if v, err := a.engine.Get(ctx, id); err == nil {
			return v.Group
		}
	case "crt":
		if v, err := a.inv.Get(ctx, id); err == nil {
			return v.Group
		}
	case "ctk":
		if v, err := a.Tokens().Get(ctx, id); err == nil {
			return v.Group
		}
	}
	return ""
}
