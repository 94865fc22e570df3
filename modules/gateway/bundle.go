package gateway

import (
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// BundlePathPrefix starts the bundle delivery path
// /rest/tokens/{token id}/bundle.
const BundlePathPrefix = "/rest/tokens/"

// serveBundle delivers the token's inventory certificate, chain and key as
// PEM to an edge that cannot speak ACME: only if the token allows it, only
// over HTTPS, only with the token's EAB MAC key as bearer credential, and
// every use (and refusal) audited.
func (g *Gateway) serveBundle(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, BundlePathPrefix), "/bundle")
	if !ok || id == "" || strings.Contains(id, "/") {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	tok := &storage.Token{ID: id} // the group is known once the token is found
	refuse := func(status int, msg, reason string) {
		if reason != "" {
			g.use(ctx, tok, "token.bundle_refused", map[string]any{"reason": reason})
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, msg, status)
	}
	if r.TLS == nil {
		refuse(http.StatusForbidden, "bundle delivery needs HTTPS", "plain HTTP")
		return
	}
	t, err := g.store.Tokens().Get(ctx, id)
	if err != nil {
		refuse(http.StatusUnauthorized, "unknown token or wrong credential", "unknown token")
		return
	}
	tok = t
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	given, derr := base64.RawURLEncoding.DecodeString(strings.TrimSpace(bearer))
	valid := false
	for _, k := range MACKeys(t, g.clock()) {
		if ok && derr == nil && subtle.ConstantTimeCompare(k, given) == 1 {
			valid = true
		}
	}
	if !valid {
		refuse(http.StatusUnauthorized, "unknown token or wrong credential", "wrong credential or token not active")
		return
	}
	if !t.Spec.AllowBundle {
		refuse(http.StatusForbidden, "this token does not allow bundle delivery", "bundle delivery off")
		return
	}
	if t.CertificateID == "" {
		refuse(http.StatusNotFound, "the token has no certificate yet", "no certificate")
		return
	}
	c, err := g.store.Certificates().Get(ctx, t.CertificateID)
	if err != nil {
		refuse(http.StatusNotFound, "the token's certificate is gone", "certificate gone")
		return
	}
	if c.PrivateKey.IsZero() {
		refuse(http.StatusConflict, "CertLocker holds no key for this certificate (an edge's own): pull it over ACME", "no key held")
		return
	}
	g.use(ctx, t, "token.bundle", map[string]any{"certificate_id": c.ID})
	g.log.Info("bundle delivered", zap.String("token_id", t.ID), zap.String("certificate_id", c.ID))
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(c.ChainPEM))
	if !strings.HasSuffix(c.ChainPEM, "\n") {
		_, _ = w.Write([]byte("\n"))
	}
	_, _ = w.Write(c.PrivateKey.Reveal())
}
