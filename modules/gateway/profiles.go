package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	smacme "github.com/smallstep/certificates/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/storage"
)

// ACME profiles (draft-ietf-acme-profiles), which smallstep lacks, around
// it: the directory's meta.profiles lists what the token's CA offers, a new
// order's profile is checked against that and recorded, every order object
// echoes it, and the finalize carries it to the upstream order.

const (
	profilesBucket        = "gateway_profiles" // order ID -> profile
	invalidProfileProblem = "urn:ietf:params:acme:error:invalidProfile"
)

// caProfiles returns the profiles an ACME client's CA offers (name ->
// description) and the profile the ACME client orders by default: from
// the directory meta stored with it (read at registration and refresh);
// when none is stored yet, the ACME client's record is refreshed from the
// CA's directory first. That read is plain HTTP, never
// through acmez: acmez holds a process-wide lock while it reads a
// directory, so an acmez edge in this process (a Caddy using its own
// gateway, or a test) reading the gateway's directory would deadlock.
func (g *Gateway) caProfiles(ctx context.Context, issuerID string) (map[string]string, string) {
	iss, err := g.store.Issuers().Get(ctx, issuerID)
	if err != nil {
		return nil, ""
	}
	if p := storedProfiles(iss); len(p) > 0 {
		return p, iss.Profile
	}
	rf, ok := g.opts.Clients.(metaRefresher)
	if !ok || !iss.MetaRefreshedAt.IsZero() {
		return nil, iss.Profile
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, m, err := rf.Refresh(ctx, "gateway", issuerID)
	if err != nil {
		g.log.Debug("reading the upstream CA's profiles", zap.String("issuer_id", issuerID), zap.Error(err))
		return nil, iss.Profile
	}
	return m.Profiles, iss.Profile
}

// storedProfiles returns the profiles stored with an ACME client (its
// CA's directory meta as last read), nil when none are.
func storedProfiles(iss *storage.Issuer) map[string]string {
	var m issuers.DirectoryMeta
	if len(iss.Meta) == 0 || json.Unmarshal(iss.Meta, &m) != nil {
		return nil
	}
	return m.Profiles
}

// metaRefresher reads an ACME client's CA directory again and stores its
// meta (issuers.Service).
type metaRefresher interface {
	Refresh(ctx context.Context, actor, id string) (*storage.Issuer, issuers.DirectoryMeta, error)
}

// directoryProfiles is meta.profiles for a directory: the token's CA's for
// a per-token directory; for the shared one, which serves every token, all
// ACME clients' CAs' (as stored: an ACME client whose CA was never read
// adds nothing until it is).
func (g *Gateway) directoryProfiles(ctx context.Context, s *reqState) map[string]string {
	if s.urlToken != nil {
		p, _ := g.caProfiles(ctx, s.urlToken.Spec.IssuerID)
		return p
	}
	list, err := g.store.Issuers().List(ctx, storage.IssuerFilter{})
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, iss := range list {
		for name, desc := range storedProfiles(iss) {
			if _, ok := out[name]; !ok {
				out[name] = desc
			}
		}
	}
	return out
}

// orderProfile checks a new order's profile field against the token's CA
// and returns the profile the order gets: the requested one, else the ACME
// client's default (possibly none). It answers and reports false when it
// refuses.
func (g *Gateway) orderProfile(w http.ResponseWriter, r *http.Request, t *storage.Token, raw json.RawMessage) (string, bool) {
	offered, def := g.caProfiles(r.Context(), t.Spec.IssuerID)
	if len(raw) == 0 || string(raw) == "null" {
		return def, true
	}
	var name string
	if json.Unmarshal(raw, &name) != nil {
		g.problem(w, r, http.StatusBadRequest, smacme.ErrorMalformedType, "profile must be a string naming one of the directory's meta.profiles", 0)
		return "", false
	}
	if name == "" {
		return def, true
	}
	if _, ok := offered[name]; !ok {
		detail := fmt.Sprintf("the CA of token %s offers no profile %q", t.ID, name)
		if len(offered) > 0 {
			detail += "; it offers " + strings.Join(slices.Sorted(maps.Keys(offered)), ", ")
		} else {
			detail += "; it offers no profiles"
		}
		g.use(r.Context(), t, "token.refused", map[string]any{"reason": "unknown profile", "profile": name})
		if n, err := g.db.CreateNonce(r.Context()); err == nil {
			w.Header().Set("Replay-Nonce", string(n))
		}
		writeProblem(w, http.StatusBadRequest, invalidProfileProblem, detail, 0)
		return "", false
	}
	return name, true
}

// profileOf returns the profile recorded for an order ("" for none).
func (g *Gateway) profileOf(ctx context.Context, orderID string) string {
	b, err := g.store.ACME().Get(ctx, profilesBucket, orderID)
	if err != nil {
		return ""
	}
	return string(b)
}

// withProfile adds "profile" to an order object's JSON; other bodies are
// returned as they are.
func withProfile(body []byte, profile string) []byte {
	if profile == "" {
		return body
	}
	var o map[string]json.RawMessage
	if json.Unmarshal(body, &o) != nil || o["status"] == nil {
		return body
	}
	o["profile"], _ = json.Marshal(profile)
	b, err := json.Marshal(o)
	if err != nil {
		return body
	}
	return b
}

// orderIDOf returns the order ID in an order or finalize path.
func orderIDOf(path string) string {
	path = strings.TrimSuffix(path, "/finalize")
	return path[strings.LastIndex(path, "/")+1:]
}
