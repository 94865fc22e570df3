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
	var (
		group string
		err   error
	)
	switch prefix {
	case "iss":
		var v *storage.Issuer
		if v, err = a.issuers.Get(ctx, id); err == nil {
			group = v.Group
		}
	case "dns":
		var v *storage.DNSProvider
		if v, err = a.dns.Get(ctx, id); err == nil {
			group = v.Group
		}
	case "wf":
		var v *storage.Workflow
		if v, err = a.engine.Get(ctx, id); err == nil {
			group = v.Group
		}
	case "crt":
		var v *storage.Certificate
		if v, err = a.inv.Get(ctx, id); err == nil {
			group = v.Group
		}
	case "ctk":
		var v *storage.Token
		if v, err = a.Tokens().Get(ctx, id); err == nil {
			group = v.Group
		}
	}
	return group
}
