// Registering an issuer's account at its CA, once, across goroutines and
// nodes, and handing the engine a ready client.

package issuers

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// register creates (or finds, for a key the CA already knows) the account
// at the CA and fills the issuer's account fields. It signs with the
// issuer's stored key when that has the right type. Otherwise it generates
// a new key, puts it in iss.AccountKey and, before the CA sees it, hands
// iss to stash to store it, so the key the CA accepts is always the one
// that is stored; stash is nil when nothing is stored yet (Create). An
// error from stash is returned as is. register saves nothing else.
func (s *Service) register(ctx context.Context, iss *storage.Issuer, agree bool, stash func(*storage.Issuer) error) error {
	m, err := s.directory(ctx, iss)
	if err != nil {
		return err
	}
	if err := checkAgainstMeta(iss, m, agree); err != nil {
		return err
	}
	var key crypto.Signer
	keyPEM := iss.AccountKey.Reveal()
	if len(keyPEM) > 0 {
		if key, err = parseKey(keyPEM); err != nil {
			return err
		}
		if keyTypeOf(key) != iss.AccountKeyType {
			key = nil
		}
	}
	if key == nil {
		if key, keyPEM, err = generateKey(iss.AccountKeyType); err != nil {
			return err
		}
		iss.AccountKey = storage.NewSecret(keyPEM)
		if stash != nil {
			if err := stash(iss); err != nil {
				return err
			}
		}
	}
	client, err := s.acmeClient(iss)
	if err != nil {
		return err
	}
	acct := acme.Account{Contact: iss.Contacts, TermsOfServiceAgreed: agree || m.TermsOfService == "", PrivateKey: key}
	if iss.EABKeyID != "" {
		if err := acct.SetExternalAccountBinding(ctx, client, acme.EAB{KeyID: iss.EABKeyID, MACKey: string(iss.EABMACKey.Reveal())}); err != nil {
			return caError("binding the external account", err)
		}
	}
	acct, err = client.NewAccount(ctx, acct)
	if err != nil {
		return caError("the new account", err)
	}
	if acct.Location == "" {
		return &Error{Kind: KindUnusable, Message: "the CA created the account but sent no account URL (Location)"}
	}
	if !slices.Equal(acct.Contact, iss.Contacts) && len(iss.Contacts) > 0 {
		// an existing account (same key) keeps its old contacts until updated
		acct.Contact = iss.Contacts
		if _, err := client.UpdateAccount(ctx, acct); err != nil {
			return caError("the contact update", err)
		}
	}
	now := s.now().UTC()
	metaJSON, _ := json.Marshal(m)
	iss.AccountURL = acct.Location
	iss.Status = StatusValid
	iss.LastMessage = "account registered"
	iss.Meta = metaJSON
	iss.MetaRefreshedAt, iss.RegisteredAt, iss.CheckedAt = now, now, now
	if m.TermsOfService != "" {
		iss.TermsAgreed, iss.TermsAgreedAt = m.TermsOfService, now
	}
	return nil
}

// Client returns a ready ACME client for the issuer (its directory, and an
// HTTP client trusting its custom roots) and its account (key opened from
// the store, account URL). An issuer declared in the config is registered
// first if it is not yet; an interrupted key rollover is settled. A
// deactivated issuer is refused.
func (s *Service) Client(ctx context.Context, issuerID string) (*acme.Client, acme.Account, error) {
	iss, err := s.store.Issuers().Get(ctx, issuerID)
	if err != nil {
		return nil, acme.Account{}, err
	}
	if iss.Status == StatusDeactivated {
		return nil, acme.Account{}, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s is deactivated: its account cannot order certificates", iss.Name)}
	}
	if !iss.NextAccountKey.IsZero() {
		if iss, err = s.settleRollover(ctx, "system", iss); err != nil {
			return nil, acme.Account{}, err
		}
	}
	if iss.AccountURL == "" {
		if iss, err = s.registerStored(ctx, "system", iss.ID); err != nil {
			return nil, acme.Account{}, err
		}
	}
	return s.clientFor(iss)
}

// maxRegisterAttempts bounds how often registerStored starts over after
// another node changed the issuer under it.
const maxRegisterAttempts = 5

// registerStored registers a stored, unregistered issuer (declared in the
// config) and saves the outcome: the account, or the error as the last
// message. Registrations of one issuer are serialized: in this process by
// a lock, across nodes by the record's version. Whoever loses a race
// starts over from what the winner stored, so it signs with the winner's
// key or uses the winner's account, and never marks a registered issuer
// as failed.
func (s *Service) registerStored(ctx context.Context, actor, id string) (*storage.Issuer, error) {
	unlock, err := s.lockRegistration(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	for attempt := 1; ; attempt++ {
		// read again under the lock: the issuer may have been registered
		// meanwhile, here or by another node
		iss, err := s.store.Issuers().Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if iss.AccountURL != "" {
			return iss, nil
		}
		if iss.Status == StatusDeactivated {
			return nil, &Error{Kind: KindState, Message: fmt.Sprintf("issuer %s is deactivated: its account cannot order certificates", iss.Name)}
		}
		iss, err = s.registerOnce(ctx, actor, iss)
		if errors.Is(err, storage.ErrConflict) && attempt < maxRegisterAttempts {
			continue
		}
		return iss, err
	}
}

// registerOnce is one attempt of registerStored. It returns
// storage.ErrConflict when another node changed the issuer since iss was
// read; the caller then reads it again and starts over.
func (s *Service) registerOnce(ctx context.Context, actor string, iss *storage.Issuer) (*storage.Issuer, error) {
	s.mu.Lock()
	agree := s.declaredTerms[iss.Name]
	s.mu.Unlock()
	stash := func(iss *storage.Issuer) error {
		iss.Status, iss.LastMessage = StatusRegistering, "registering the account at the CA"
		return s.store.Issuers().Update(ctx, iss)
	}
	regErr := s.register(ctx, iss, agree, stash)
	switch {
	case errors.Is(regErr, storage.ErrConflict):
		return nil, regErr
	case regErr != nil:
		return s.registerFailed(ctx, actor, iss.ID, regErr)
	}
	if err := s.save(ctx, actor, "issuer.register", iss, map[string]any{"ok": true, "account_url": iss.AccountURL,
		"terms_agreed": iss.TermsAgreed}); err != nil {
		return nil, err
	}
	s.logger.Info("issuer account registered", zap.String("issuer", iss.Name), zap.String("issuer_id", iss.ID),
		zap.String("ca", iss.DirectoryURL), zap.String("account_url", iss.AccountURL))
	return iss, nil
}

// registerFailed records a failed registration as the issuer's status and
// last message, keeping its stored key for the next attempt, and returns
// regErr. If another node registered the issuer meanwhile, its account is
// returned instead and nothing is recorded.
func (s *Service) registerFailed(ctx context.Context, actor, id string, regErr error) (*storage.Issuer, error) {
	for attempt := 1; ; attempt++ {
		fresh, err := s.store.Issuers().Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if fresh.AccountURL != "" {
			return fresh, nil
		}
		fresh.Status, fresh.LastMessage, fresh.CheckedAt = StatusError, lastMessage(regErr), s.now().UTC()
		err = s.save(ctx, actor, "issuer.register", fresh, map[string]any{"ok": false, "message": fresh.LastMessage})
		switch {
		case errors.Is(err, storage.ErrConflict) && attempt < maxRegisterAttempts:
			continue
		case err != nil:
			return nil, err
		}
		return nil, regErr
	}
}

// lockRegistration takes this process's registration lock of one issuer,
// waiting until it is free or ctx is done, and returns its release.
func (s *Service) lockRegistration(ctx context.Context, id string) (unlock func(), err error) {
	s.mu.Lock()
	l := s.regLocks[id]
	if l == nil {
		l = &regLock{ch: make(chan struct{}, 1)}
		s.regLocks[id] = l
	}
	l.refs++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.regLocks, id)
		}
		s.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func lastMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Problem != nil {
		return problemMessage(e.Problem)
	}
	return err.Error()
}
