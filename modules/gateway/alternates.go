package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/smallstep/certificates/acme"
	"go.step.sm/crypto/jose"

	"github.com/certlocker/caddy-certlocker/modules/workflow"
)

// The upstream CA's alternate chains: smallstep serves one chain per
// certificate, so the gateway adds Link rel="alternate" to that download,
// pointing at {certificate URL}/alt/{n}, and serves those itself (POST-as-
// GET verified as smallstep does: nonce, url, the account's key, the
// account owns the certificate). The chains come from the gateway
// workflow that issued the certificate.

const altSegment = "/alt/"

// alternatePath splits …/certificate/{id}/alt/{n} into the certificate ID
// and n (1-based).
func alternatePath(path string) (certID string, n int, ok bool) {
	i := strings.LastIndex(path, "/certificate/")
	if i < 0 {
		return "", 0, false
	}
	id, num, found := strings.Cut(path[i+len("/certificate/"):], altSegment)
	if !found || id == "" || strings.Contains(id, "/") {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		return "", 0, false
	}
	return id, n, true
}

// alternatesOfLeaf returns the CA's other chains for the certificate whose
// leaf is der (none if it was not issued by a gateway workflow).
func (g *Gateway) alternatesOfLeaf(r *http.Request, der []byte) []string {
	fp := sha256.Sum256(der)
	c, err := g.store.Certificates().GetByFingerprint(r.Context(), hex.EncodeToString(fp[:]))
	if err != nil || c.WorkflowID == "" {
		return nil
	}
	w, err := g.engine.Get(r.Context(), c.WorkflowID)
	if err != nil {
		return nil
	}
	return workflow.AlternateChains(w)
}

// serveCertificate lets smallstep answer the certificate download and adds
// a Link rel="alternate" for each alternate chain.
func (g *Gateway) serveCertificate(w http.ResponseWriter, r *http.Request, s *reqState) {
	rec := &recorder{header: http.Header{}}
	g.byRouter(s).ServeHTTP(rec, r)
	if rec.status == http.StatusOK || rec.status == 0 {
		if b, _ := pem.Decode(rec.body.Bytes()); b != nil {
			base := "https://" + r.Host + r.URL.Path
			for i := range g.alternatesOfLeaf(r, b.Bytes) {
				rec.header.Add("Link", fmt.Sprintf("<%s%s%d>;rel=\"alternate\"", base, altSegment, i+1))
			}
		}
	}
	rec.flush(w)
}

// serveAlternate answers a POST-as-GET for alternate chain n of a
// certificate.
func (g *Gateway) serveAlternate(w http.ResponseWriter, r *http.Request, body []byte, certID string, n int) {
	ctx := r.Context()
	jws, err := jose.ParseJWS(string(body))
	if err != nil || len(jws.Signatures) != 1 {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the request is not a JWS", 0)
		return
	}
	hdr := jws.Signatures[0].Protected
	if u, _ := hdr.ExtraHeaders["url"].(string); u != "https://"+r.Host+r.URL.Path {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the JWS url does not match the request url", 0)
		return
	}
	if hdr.Nonce == "" || g.db.DeleteNonce(ctx, acme.Nonce(hdr.Nonce)) != nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorBadNonceType, "the nonce is missing, used or unknown", 0)
		return
	}
	accountID := hdr.KeyID[strings.LastIndex(hdr.KeyID, "/")+1:]
	acc, err := g.db.GetAccount(ctx, accountID)
	if err != nil || acc.Key == nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorAccountDoesNotExistType, "no such account", 0)
		return
	}
	payload, err := jws.Verify(acc.Key)
	if err != nil {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the JWS signature does not verify", 0)
		return
	}
	if len(payload) != 0 {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "the certificate is fetched with POST-as-GET (empty payload)", 0)
		return
	}
	if acc.Status != acme.StatusValid {
		g.problem(w, r, http.StatusUnauthorized, acme.ErrorUnauthorizedType, "the account is "+string(acc.Status), 0)
		return
	}
	cert, err := g.db.GetCertificate(ctx, certID)
	if err != nil || cert.AccountID != acc.ID {
		g.problem(w, r, http.StatusNotFound, acme.ErrorMalformedType, "no such certificate for this account", 0)
		return
	}
	alts := g.alternatesOfLeaf(r, cert.Leaf.Raw)
	if n > len(alts) {
		g.problem(w, r, http.StatusNotFound, acme.ErrorMalformedType, fmt.Sprintf("the certificate has %d alternate chains", len(alts)), 0)
		return
	}
	if nonce, err := g.db.CreateNonce(ctx); err == nil {
		w.Header().Set("Replay-Nonce", string(nonce))
	}
	base := "https://" + r.Host + r.URL.Path[:strings.LastIndex(r.URL.Path, altSegment)]
	w.Header().Add("Link", fmt.Sprintf("<%s>;rel=\"alternate\"", base))
	for i := range alts {
		if i+1 != n {
			w.Header().Add("Link", fmt.Sprintf("<%s%s%d>;rel=\"alternate\"", base, altSegment, i+1))
		}
	}
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(alts[n-1]))
}
