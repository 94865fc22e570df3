package certlocker

import (
	"context"

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
