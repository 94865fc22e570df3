// The test and deactivate actions.

package issuers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Deactivate deactivates the account at the CA (RFC 8555 §7.3.6). It cannot
// be undone; the issuer stays, for history, with status deactivated.
func (s *Service) Deactivate(ctx context.Context, actor, id string) (*storage.Issuer, error) {
	iss, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if iss.ManagedBy == storage.ManagedByConfig {
		return nil, readOnly(iss)
	}
	if iss.Status == StatusDeactivated || iss.AccountURL == "" {
		return nil, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s has no active account to deactivate (status %s)", iss.Name, iss.Status)}
	}
	client, acct, err := s.clientFor(iss)
	if err != nil {
		return nil, err
	}
	acct.Status = acme.StatusDeactivated
	acct.Contact = nil
	got, err := client.UpdateAccount(ctx, acct)
	if err != nil {
		return nil, caError("the deactivation", err)
	}
	now := s.now().UTC()
	iss.Status, iss.CheckedAt = StatusDeactivated, now
	iss.LastMessage = "account deactivated at the CA (status " + got.Status + ")"
	if err := s.save(ctx, actor, "issuer.deactivate", iss, map[string]any{"account_url": iss.AccountURL}); err != nil {
		return nil, err
	}
	s.logger.Info("issuer account deactivated", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID))
	return iss, nil
}

// TestResult is the outcome of Test.
type TestResult struct {
	OK      bool          `json:"ok"`
	Message string        `json:"message"`
	Problem *acme.Problem `json:"problem,omitempty"`
	// Issuer is the issuer as stored after the test.
	Issuer *storage.Issuer `json:"-"`
}

// Test checks that the issuer can order now: the directory answers and the
// CA knows the account by its key. An issuer declared in the config and
// not yet registered is registered. The outcome is stored as the issuer's
// status and last message; CA refusals are reported in the result, not as
// an error.
func (s *Service) Test(ctx context.Context, actor, id string) (TestResult, error) {
	iss, err := s.Get(ctx, id)
	if err != nil {
		return TestResult{}, err
	}
	if iss.Status == StatusDeactivated {
		return TestResult{Message: "the account is deactivated", Issuer: iss}, nil
	}
	fail := func(err error) (TestResult, error) {
		var e *Error
		if !errors.As(err, &e) {
			return TestResult{}, err
		}
		fresh, gerr := s.store.Issuers().Get(ctx, id)
		if gerr != nil {
			return TestResult{}, gerr
		}
		fresh.Status, fresh.LastMessage, fresh.CheckedAt = StatusError, lastMessage(e), s.now().UTC()
		if err := s.save(ctx, actor, "issuer.test", fresh, map[string]any{"ok": false, "message": fresh.LastMessage}); err != nil {
			return TestResult{}, err
		}
		return TestResult{Message: e.Message, Problem: e.Problem, Issuer: fresh}, nil
	}
	m, err := s.directory(ctx, iss)
	if err != nil {
		return fail(err)
	}
	if !iss.NextAccountKey.IsZero() {
		if iss, err = s.settleRollover(ctx, actor, iss); err != nil {
			return fail(err)
		}
	}
	if iss.AccountURL == "" {
		if iss, err = s.registerStored(ctx, actor, iss.ID); err != nil {
			return fail(err)
		}
		return TestResult{OK: true, Message: "account registered", Issuer: iss}, nil
	}
	client, acct, err := s.clientFor(iss)
	if err != nil {
		return TestResult{}, err
	}
	found, err := client.GetAccount(ctx, acme.Account{PrivateKey: acct.PrivateKey})
	if err != nil {
		return fail(caError("the account lookup", err))
	}
	if found.Location != iss.AccountURL {
		return fail(&Error{Kind: KindState, Message: fmt.Sprintf("the CA knows this key as account %s, not %s", found.Location, iss.AccountURL)})
	}
	now := s.now().UTC()
	b, _ := json.Marshal(m)
	iss.Meta, iss.MetaRefreshedAt, iss.CheckedAt = b, now, now
	iss.Status, iss.LastMessage = StatusValid, "account is "+found.Status
	if found.Status != acme.StatusValid {
		iss.Status = StatusError
	}
	if err := s.save(ctx, actor, "issuer.test", iss, map[string]any{"ok": iss.Status == StatusValid, "message": iss.LastMessage}); err != nil {
		return TestResult{}, err
	}
	return TestResult{OK: iss.Status == StatusValid, Message: iss.LastMessage, Issuer: iss}, nil
}
