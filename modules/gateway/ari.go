package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"time"

	smacme "github.com/smallstep/certificates/acme"
	"go.uber.org/zap"
)

// ARI (RFC 9773), which smallstep lacks, around it: the directory names a
// renewalInfo endpoint, which answers for the gateway's certificates with
// the upstream CA's window where it offers ARI (the edge certificate is the
// upstream CA's certificate), else the last third of the lifetime; and a
// new order's "replaces" is checked and passed on to the upstream order.

const (
	renewalInfoPath  = "/renewal-info"
	replacesBucket   = "gateway_replaces" // order ID -> ARI ID it replaces
	replacedBucket   = "gateway_replaced" // ARI ID -> order that replaced it
	ariRetryAfter    = 6 * time.Hour
	alreadyReplaced  = "urn:ietf:params:acme:error:alreadyReplaced"
	malformedProblem = "urn:ietf:params:acme:error:malformed"
)

// renewalInfoURL is the renewalInfo link for the request's directory.
func (g *Gateway) renewalInfoURL(s *reqState) string {
	prefix := "/rest/acme"
	if s.urlSecret != "" {
		prefix = tokenPrefix + "/" + s.urlSecret
	}
	return "https://" + s.host + prefix + renewalInfoPath
}

// serveDirectory adds renewalInfo to smallstep's directory.
func (g *Gateway) serveDirectory(w http.ResponseWriter, r *http.Request, s *reqState, router http.Handler) {
	rec := &recorder{header: http.Header{}}
	router.ServeHTTP(rec, r)
	var dir map[string]any
	if rec.status != http.StatusOK || json.Unmarshal(rec.body.Bytes(), &dir) != nil {
		rec.flush(w)
		return
	}
	dir["renewalInfo"] = g.renewalInfoURL(s)
	if profiles := g.directoryProfiles(r.Context(), s); len(profiles) > 0 {
		meta, _ := dir["meta"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		meta["profiles"] = profiles
		dir["meta"] = meta
	}
	b, _ := json.Marshal(dir)
	rec.body.Reset()
	rec.body.Write(b)
	rec.header.Del("Content-Length")
	rec.flush(w)
}

// certByARIID finds a gateway certificate by its ARI ID
// (base64url(AKI) "." base64url(serial)).
func (g *Gateway) certByARIID(ctx context.Context, id string) (*smacme.Certificate, bool) {
	aki, serial, ok := strings.Cut(id, ".")
	if !ok {
		return nil, false
	}
	akiB, err1 := base64.RawURLEncoding.DecodeString(aki)
	serialB, err2 := base64.RawURLEncoding.DecodeString(serial)
	if err1 != nil || err2 != nil || len(serialB) == 0 {
		return nil, false
	}
	n := new(big.Int).SetBytes(serialB)
	c, err := g.db.GetCertificateBySerial(ctx, n.String())
	if err != nil || c.Leaf == nil || !bytes.Equal(c.Leaf.AuthorityKeyId, akiB) {
		return nil, false
	}
	return c, true
}

// serveRenewalInfo answers GET {renewalInfo}/{ARI ID}.
func (g *Gateway) serveRenewalInfo(w http.ResponseWriter, r *http.Request, id string) {
	ctx := r.Context()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeProblem(w, http.StatusMethodNotAllowed, malformedProblem, "use GET", 0)
		return
	}
	c, ok := g.certByARIID(ctx, id)
	if !ok {
		writeProblem(w, http.StatusNotFound, malformedProblem, "no certificate of this gateway has that ID", 0)
		return
	}
	leaf := c.Leaf
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	start, end := leaf.NotBefore.Add(life*2/3), leaf.NotBefore.Add(life*5/6)
	// the upstream CA's own window, where it offers ARI
	if g.opts.Clients != nil {
		if inv, err := g.store.Certificates().GetByFingerprint(ctx, fingerprintOf(leaf.Raw)); err == nil && inv.IssuerID != "" {
			if cl, _, err := g.opts.Clients.Client(ctx, inv.IssuerID); err == nil {
				if dir, err := cl.GetDirectory(ctx); err == nil && dir.RenewalInfo != "" {
					if ri, err := cl.GetRenewalInfo(ctx, leaf); err == nil && !ri.SuggestedWindow.Start.IsZero() {
						start, end = ri.SuggestedWindow.Start, ri.SuggestedWindow.End
					} else if err != nil {
						g.log.Debug("asking the upstream CA for renewal info", zap.Error(err))
					}
				}
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", "21600")
	_ = json.NewEncoder(w).Encode(map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339)}})
}

// newOrder lets smallstep create an order with what it does not know: a
// "replaces" (checked first: a certificate of this gateway, ordered by the
// same account, not replaced yet), recorded for the finalize, and a
// profile (checked by the caller), recorded and echoed.
func (g *Gateway) newOrder(w http.ResponseWriter, r *http.Request, s *reqState, accountID, replaces, profile string) {
	ctx := r.Context()
	if replaces != "" {
		c, ok := g.certByARIID(ctx, replaces)
		if !ok || c.AccountID != accountID {
			g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "replaces names no certificate of this account", 0)
			return
		}
		if _, err := g.store.ACME().Get(ctx, replacedBucket, replaces); err == nil {
			if n, err := g.db.CreateNonce(ctx); err == nil {
				w.Header().Set("Replay-Nonce", string(n))
			}
			writeProblem(w, http.StatusConflict, alreadyReplaced, "that certificate was already replaced", 0)
			return
		}
	}
	rec := &recorder{header: http.Header{}}
	g.byRouter(s).ServeHTTP(rec, r)
	if rec.status == http.StatusCreated {
		loc := rec.header.Get("Location")
		orderID := loc[strings.LastIndex(loc, "/")+1:]
		if replaces != "" {
			_, swapped, err := g.store.ACME().CompareAndSwap(ctx, replacedBucket, replaces, nil, []byte(orderID))
			if err == nil && swapped {
				err = g.store.ACME().Set(ctx, replacesBucket, orderID, []byte(replaces))
			}
			if err != nil {
				g.log.Warn("recording an order's replaces", zap.Error(err))
			}
		}
		if profile != "" {
			if err := g.store.ACME().Set(ctx, profilesBucket, orderID, []byte(profile)); err != nil {
				g.log.Warn("recording an order's profile", zap.Error(err))
			}
			rec.setBody(withProfile(rec.body.Bytes(), profile))
		}
	}
	rec.flush(w)
}

// replacesOf returns the ARI ID the order replaces, if any.
func (g *Gateway) replacesOf(ctx context.Context, orderID string) string {
	b, err := g.store.ACME().Get(ctx, replacesBucket, orderID)
	if err != nil {
		return ""
	}
	return string(b)
}
