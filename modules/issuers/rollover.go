// Account key rollover.

package issuers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Rollover replaces the account key with a new one of keyType (default:
// the current type). The new key is stored (sealed) before the CA is asked
// to switch, so an interruption never loses the key the CA holds; Client
// and Test settle such an interrupted rollover.
func (s *Service) Rollover(ctx context.Context, actor, id, keyType string) (*storage.Issuer, error) {
	iss, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if iss.Status == StatusDeactivated || iss.AccountURL == "" {
		return nil, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s has no active account to roll over (status %s)", iss.Name, iss.Status)}
	}
	if !iss.NextAccountKey.IsZero() {
		if iss, err = s.settleRollover(ctx, actor, iss); err != nil {
			return nil, err
		}
	}
	if keyType == "" {
		keyType = iss.AccountKeyType
	}
	if !slices.Contains(KeyTypes, keyType) {
		return nil, invalid("account_key_type", "account_key_type %q is not supported: use one of %s", keyType, strings.Join(KeyTypes, ", "))
	}
	newKey, newPEM, err := generateKey(keyType)
	if err != nil {
		return nil, err
	}
	client, acct, err := s.clientFor(iss)
	if err != nil {
		return nil, err
	}
	iss.NextAccountKey = storage.NewSecret(newPEM)
	if err := s.store.Issuers().Update(ctx, iss); err != nil {
		return nil, err
	}
	if _, err := client.AccountKeyRollover(ctx, acct, newKey); err != nil {
		cerr := caError("the key rollover", err)
		if cerr.Kind != KindRefused {
			// the CA may or may not have switched: keep the next key
			cerr.Message += "; the outcome is unknown: run the test action to settle it"
			return nil, cerr
		}
		iss.NextAccountKey, iss.LastMessage = storage.Secret{}, "key rollover refused: "+problemMessage(cerr.Problem)
		if err := s.save(ctx, actor, "issuer.rollover", iss, map[string]any{"ok": false, "message": iss.LastMessage}); err != nil {
			return nil, err
		}
		return nil, cerr
	}
	now := s.now().UTC()
	iss.AccountKey, iss.NextAccountKey, iss.AccountKeyType = iss.NextAccountKey, storage.Secret{}, keyType
	iss.KeyRolledAt, iss.CheckedAt, iss.Status, iss.LastMessage = now, now, StatusValid, "account key rolled over"
	if err := s.save(ctx, actor, "issuer.rollover", iss, map[string]any{"ok": true, "account_key_type": keyType}); err != nil {
		return nil, fmt.Errorf("recording the rolled-over key (the CA switched; it stays pending and is settled on next use): %w", err)
	}
	s.logger.Info("account key rolled over", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID),
		zap.String("account_key_type", keyType))
	return iss, nil
}

// settleRollover decides an interrupted rollover by asking the CA which key
// it knows: the next key is promoted if the CA finds the account by it,
// and dropped if the CA does not.
func (s *Service) settleRollover(ctx context.Context, actor string, iss *storage.Issuer) (*storage.Issuer, error) {
	next, err := parseKey(iss.NextAccountKey.Reveal())
	if err != nil {
		return nil, err
	}
	client, err := s.acmeClient(iss)
	if err != nil {
		return nil, err
	}
	found, err := client.GetAccount(ctx, acme.Account{PrivateKey: next})
	var p acme.Problem
	switch {
	case err == nil && found.Location == iss.AccountURL:
		now := s.now().UTC()
		iss.AccountKey, iss.AccountKeyType, iss.KeyRolledAt = iss.NextAccountKey, keyTypeOf(next), now
		iss.LastMessage = "interrupted key rollover completed"
	case errors.As(err, &p) && p.Type == acme.ProblemTypeAccountDoesNotExist:
		iss.LastMessage = "interrupted key rollover abandoned: the CA kept the old key"
	case err == nil:
		return nil, &Error{Kind: KindState, Message: fmt.Sprintf("the pending key of issuer %s belongs to another account (%s)", iss.Name, found.Location)}
	default:
		return nil, caError("settling the interrupted key rollover", err)
	}
	iss.NextAccountKey = storage.Secret{}
	if err := s.save(ctx, actor, "issuer.rollover", iss, map[string]any{"settled": iss.LastMessage}); err != nil {
		return nil, err
	}
	return iss, nil
}
