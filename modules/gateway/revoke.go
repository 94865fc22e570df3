package gateway

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/mholt/acmez/v3/acme"
	smacme "github.com/smallstep/certificates/acme"
	"go.step.sm/crypto/jose"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// revokeCert forwards an edge's revocation to the upstream CA through the
// ACME client that issued the certificate (smallstep's own revocation
// needs an authority database that can revoke; the certificate is the
// upstream CA's anyway). The request is signed either by the account that
// ordered the certificate (kid) or by the certificate's key (jwk).
func (g *Gateway) revokeCert(w http.ResponseWriter, r *http.Request, s *reqState, body []byte) {
	ctx := r.Context()
	reqURL := (&url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path}).String()
	jws, err := jose.ParseJWS(string(body))
	if err != nil || len(jws.Signatures) != 1 {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "the request is not a JWS with one signature", 0)
		return
	}
	hdr := jws.Signatures[0].Protected
	if u, _ := hdr.ExtraHeaders["url"].(string); u != reqURL {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "the JWS url does not match the request", 0)
		return
	}
	var rr struct {
		Certificate string `json:"certificate"`
		Reason      int    `json:"reason"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &rr); err != nil {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "the payload must be {certificate, reason}", 0)
		return
	}
	der, err := base64.RawURLEncoding.DecodeString(rr.Certificate)
	if err != nil {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "certificate is not base64url DER", 0)
		return
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "certificate does not parse", 0)
		return
	}
	stored, err := g.db.GetCertificateBySerial(ctx, leaf.SerialNumber.String())
	if err != nil || stored.Leaf == nil || !bytesEqual(stored.Leaf.Raw, der) {
		g.problem(w, r, http.StatusNotFound, smacme.ErrorMalformedType, "the gateway did not issue this certificate", 0)
		return
	}
	// who may revoke: the ordering account, or the certificate's key
	var key *jose.JSONWebKey
	accountID := ""
	if hdr.JSONWebKey != nil {
		key = hdr.JSONWebKey
		ck := &jose.JSONWebKey{Key: leaf.PublicKey}
		kt, e1 := smacme.KeyToID(key)
		ct, e2 := smacme.KeyToID(ck)
		if e1 != nil || e2 != nil || kt != ct {
			g.problem(w, r, http.StatusForbidden, smacme.ErrorUnauthorizedType, "the jwk is not the certificate's key", 0)
			return
		}
	} else {
		req, _ := parseJWSRequest(body)
		if req == nil || req.accountID == "" || req.accountID != stored.AccountID {
			g.problem(w, r, http.StatusForbidden, smacme.ErrorUnauthorizedType, "only the account that ordered the certificate, or its key, may revoke it", 0)
			return
		}
		acc, err := g.db.GetAccount(ctx, req.accountID)
		if err != nil {
			g.problem(w, r, http.StatusBadRequest, smacme.ErrorAccountDoesNotExistType, "no such account", 0)
			return
		}
		key, accountID = acc.Key, acc.ID
	}
	if _, err := jws.Verify(key); err != nil {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "the JWS does not verify", 0)
		return
	}
	if err := g.db.DeleteNonce(ctx, smacme.Nonce(hdr.Nonce)); err != nil {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorBadNonceType, "the nonce is unknown or used", 0)
		return
	}
	c, err := g.store.Certificates().GetByFingerprint(ctx, fingerprintOf(der))
	if err != nil || c.IssuerID == "" || g.opts.Clients == nil {
		g.problem(w, r, http.StatusInternalServerError, smacme.ErrorServerInternalType, "the certificate's ACME client is unknown here", 0)
		return
	}
	cl, acct, err := g.opts.Clients.Client(ctx, c.IssuerID)
	if err == nil {
		err = cl.RevokeCertificate(ctx, acct, leaf, nil, rr.Reason)
	}
	var p acme.Problem
	if errors.As(err, &p) {
		status := p.Status
		if status == 0 {
			status = http.StatusBadRequest
		}
		if n, err := g.db.CreateNonce(ctx); err == nil {
			w.Header().Set("Replay-Nonce", string(n))
		}
		writeProblem(w, status, p.Type, "the upstream CA refused the revocation: "+p.Detail, 0)
		return
	}
	if err != nil {
		g.log.Error("revoking upstream", zap.String("certificate_id", c.ID), zap.Error(err))
		g.problem(w, r, http.StatusBadGateway, smacme.ErrorServerInternalType, "the upstream CA could not be reached to revoke", 0)
		return
	}
	c.Status = storage.CertStatusRevoked
	if err := g.store.Certificates().Update(ctx, c); err != nil {
		g.log.Warn("marking a revoked certificate", zap.String("certificate_id", c.ID), zap.Error(err))
	}
	if tokenID, err := g.store.Tokens().AccountToken(ctx, stored.AccountID); err == nil {
		g.use(ctx, &storage.Token{ID: tokenID, Group: c.Group}, "token.revoke_cert", map[string]any{"certificate_id": c.ID, "reason": rr.Reason,
			"by": strings.TrimSpace(map[bool]string{true: "account " + accountID, false: "certificate key"}[accountID != ""])})
	}
	if n, err := g.db.CreateNonce(ctx); err == nil {
		w.Header().Set("Replay-Nonce", string(n))
	}
	w.WriteHeader(http.StatusOK)
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// fingerprintOf is the inventory's fingerprint of a certificate (SHA-256 of
// the DER, lowercase hex).
func fingerprintOf(der []byte) string {
	fp := sha256.Sum256(der)
	return hex.EncodeToString(fp[:])
}
