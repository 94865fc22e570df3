package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/smallstep/certificates/acme"
	"go.step.sm/crypto/jose"

	"github.com/certlocker/caddy-certlocker/storage"
)

// keyChange implements account key rollover (RFC 8555 §7.3.5), which
// smallstep answers with 501: the outer JWS is signed by the account's key
// (kid), the inner one by the new key (jwk) over {account, oldKey}. The
// account's key and the key index change in one transaction.
func (g *Gateway) keyChange(w http.ResponseWriter, r *http.Request, s *reqState, body []byte) {
	ctx := r.Context()
	reqURL := (&url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path}).String()
	outer, err := jose.ParseJWS(string(body))
	if err != nil || len(outer.Signatures) != 1 {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the request is not a JWS with one signature", 0)
		return
	}
	hdr := outer.Signatures[0].Protected
	if u, _ := hdr.ExtraHeaders["url"].(string); u != reqURL {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the JWS url does not match the request", 0)
		return
	}
	req, _ := parseJWSRequest(body)
	if req == nil || req.accountID == "" || hdr.JSONWebKey != nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "keyChange is signed with the account's kid", 0)
		return
	}
	acc, err := g.db.GetAccount(ctx, req.accountID)
	if err != nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorAccountDoesNotExistType, "no such account", 0)
		return
	}
	payload, err := outer.Verify(acc.Key)
	if err != nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the JWS does not verify with the account's key", 0)
		return
	}
	if err := g.db.DeleteNonce(ctx, acme.Nonce(hdr.Nonce)); err != nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorBadNonceType, "the nonce is unknown or used", 0)
		return
	}
	if t, done := g.boundToken(w, r, s, req); done {
		return
	} else if t != nil {
		defer g.use(ctx, t, "token.key_change", map[string]any{"account_id": acc.ID})
	}
	inner, err := jose.ParseJWS(string(payload))
	if err != nil || len(inner.Signatures) != 1 || inner.Signatures[0].Protected.JSONWebKey == nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the inner JWS must be signed by the new key, given as jwk", 0)
		return
	}
	ih := inner.Signatures[0].Protected
	newKey := ih.JSONWebKey
	if u, _ := ih.ExtraHeaders["url"].(string); u != reqURL || ih.Nonce != "" {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the inner JWS must have the same url and no nonce", 0)
		return
	}
	innerPayload, err := inner.Verify(newKey)
	if err != nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the inner JWS does not verify with its jwk", 0)
		return
	}
	var kc struct {
		Account string           `json:"account"`
		OldKey  *jose.JSONWebKey `json:"oldKey"`
	}
	if err := json.Unmarshal(innerPayload, &kc); err != nil || kc.OldKey == nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the inner payload must be {account, oldKey}", 0)
		return
	}
	oldID, _ := acme.KeyToID(acc.Key)
	givenOld, err1 := acme.KeyToID(kc.OldKey)
	newID, err2 := acme.KeyToID(newKey)
	if kc.Account != hdr.KeyID || err1 != nil || err2 != nil || givenOld != oldID {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "account or oldKey does not match the request", 0)
		return
	}
	if existing, err := g.db.GetAccountByKeyID(ctx, newID); err == nil {
		w.Header().Set("Location", g.linker.GetLink(ctx, acme.AccountLinkType, existing.ID))
		g.problem(w, r, http.StatusConflict, acme.ErrorMalformedType, "the new key is another account's", 0)
		return
	}
	err = g.store.InTx(ctx, func(tx storage.Store) error {
		a := tx.ACME()
		raw, err := a.Get(ctx, "acme_accounts", acc.ID)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		m["key"] = newKey
		nu, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if _, ok, err := a.CompareAndSwap(ctx, "acme_accounts", acc.ID, raw, nu); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("account %s changed: %w", acc.ID, storage.ErrConflict))
		}
		if _, ok, err := a.CompareAndSwap(ctx, "acme_keyID_accountID_index", newID, nil, []byte(acc.ID)); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("the new key is taken: %w", storage.ErrConflict))
		}
		return a.Delete(ctx, "acme_keyID_accountID_index", oldID)
	})
	if err != nil {
		g.problem(w, r, http.StatusConflict, acme.ErrorMalformedType, "the account changed concurrently; retry", 0)
		return
	}
	acc.Key = newKey
	g.linker.LinkAccount(ctx, acc)
	if n, err := g.db.CreateNonce(ctx); err == nil {
		w.Header().Set("Replay-Nonce", string(n))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", hdr.KeyID)
	_ = json.NewEncoder(w).Encode(acc)
}
