package storage

import (
	"context"
	"sync/atomic"
)

// Audit results.
const (
	// AuditOK: the action was done.
	AuditOK = "ok"
	// AuditRefused: the caller may not do it, or asked for something
	// invalid (a 4xx answer, a refused token use).
	AuditRefused = "refused"
	// AuditFailed: the action was allowed but did not succeed (a 5xx
	// answer, an error from the CA or the database).
	AuditFailed = "failed"
)

// ValidAuditResult reports whether r is an audit result ("" means AuditOK).
func ValidAuditResult(r string) bool {
	return r == "" || r == AuditOK || r == AuditRefused || r == AuditFailed
}

// Audit actors of what no person asked for directly.
const (
	// ActorCLI is the actor of the certlocker command's subcommands.
	ActorCLI = "cli"
)

type auditSourceKey struct{}

// auditOrigin is a request's audit context: where it came from, and
// whether an entry other than ok was recorded for it.
type auditOrigin struct {
	source string
	notOK  atomic.Bool
}

// WithAuditSource returns a context whose audit entries name source (the
// client's network address) as where the request came from, unless an
// entry names its own; it also lets AuditRecordedNotOK tell whether a
// refusal or failure was recorded under it.
func WithAuditSource(ctx context.Context, source string) context.Context {
	return context.WithValue(ctx, auditSourceKey{}, &auditOrigin{source: source})
}

// AuditSource returns the source set by WithAuditSource, or "".
func AuditSource(ctx context.Context) string {
	if o, ok := ctx.Value(auditSourceKey{}).(*auditOrigin); ok {
		return o.source
	}
	return ""
}

// AuditRecordedNotOK reports whether an entry with result refused or
// failed was appended under ctx (from WithAuditSource): a caller that
// audits refusals generically need not add a second entry.
func AuditRecordedNotOK(ctx context.Context) bool {
	o, ok := ctx.Value(auditSourceKey{}).(*auditOrigin)
	return ok && o.notOK.Load()
}

// NoteAuditAppended is called by AuditStore implementations after they
// appended e under ctx.
func NoteAuditAppended(ctx context.Context, e *AuditEntry) {
	if o, ok := ctx.Value(auditSourceKey{}).(*auditOrigin); ok && e.Result != "" && e.Result != AuditOK {
		o.notOK.Store(true)
	}
}

type auditReaderKey struct{}

// WithAuditReader returns a context naming who reads the audit log (an
// actor without its "@address" part, e.g. "ui:alice"): a group-restricted
// reader sees the entries of their groups and their own.
func WithAuditReader(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, auditReaderKey{}, actor)
}

// AuditScopeOf returns the audit scope of ctx: nil for an unrestricted
// caller (WithGroups not set), else its groups and its reader.
func AuditScopeOf(ctx context.Context) *AuditScope {
	groups, restricted := ScopeGroups(ctx)
	if !restricted {
		return nil
	}
	reader, _ := ctx.Value(auditReaderKey{}).(string)
	return &AuditScope{Groups: groups, Actor: reader}
}
