package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// A pre-authorization workflow (trigger TriggerPreauthorization) places an
// order and gets every identifier authorized at the CA, then ends in
// storage.StateAuthorized without finalizing. The CA's valid
// authorizations (Let's Encrypt and Pebble reuse them for the same
// account) make a later order for those names come back ready at once, so
// a gateway finalize waits only for the CA to issue.

// authorized ends a pre-authorization workflow once every authorization is
// valid, recording when the first of them expires at the CA.
func (s *session) authorized(ctx context.Context) error {
	var until time.Time
	for _, a := range s.d.Authzs {
		authz, err := s.cl.GetAuthorization(ctx, s.acct, a.URL)
		if err != nil {
			return s.failOrRetry(ctx, "authorizing", a.Identifier, err)
		}
		if authz.Status != "valid" {
			s.w.State = storage.StateAuthorizing
			s.live = nil
			return s.save(ctx, storage.WorkflowEvent{Step: "authorizing", Identifier: a.Identifier,
				Message: "authorization is " + authz.Status + " again"})
		}
		if authz.Expires.IsZero() {
			continue
		}
		if until.IsZero() || authz.Expires.Before(until) {
			until = authz.Expires
		}
	}
	s.d.AuthorizedUntil = until
	s.w.State = storage.StateAuthorized
	msg := "every identifier authorized at the CA; nothing finalized (pre-authorization)"
	if !until.IsZero() {
		msg += fmt.Sprintf("; the authorizations are valid until %s", until.UTC().Format(time.RFC3339))
	}
	s.w.Status = msg
	return s.save(ctx, storage.WorkflowEvent{Step: "authorized", Message: msg})
}

// AuthorizedUntil returns when the first authorization of a finished
// pre-authorization workflow expires at the CA (zero if the CA did not
// say, or the workflow is not authorized).
func AuthorizedUntil(w *storage.Workflow) time.Time {
	if w.State != storage.StateAuthorized || len(w.Data) == 0 {
		return time.Time{}
	}
	var d struct {
		Until time.Time `json:"authorized_until"`
	}
	if json.Unmarshal(w.Data, &d) != nil {
		return time.Time{}
	}
	return d.Until
}
