package storage

import "context"

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

// WithAuditSource returns a context whose audit entries name source (the
// client's network address) as where the request came from, unless an
// entry names its own.
func WithAuditSource(ctx context.Context, source string) context.Context {
	return context.WithValue(ctx, auditSourceKey{}, source)
}

// AuditSource returns the source set by WithAuditSource, or "".
func AuditSource(ctx context.Context) string {
	s, _ := ctx.Value(auditSourceKey{}).(string)
	return s
}
