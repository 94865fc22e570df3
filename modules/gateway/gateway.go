package gateway

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/smallstep/certificates/acme"
	acmeapi "github.com/smallstep/certificates/acme/api"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/jose"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Options configure a Gateway.
type Options struct {
	Store  storage.Store
	Engine *workflow.Engine
	Node   string
	Logger *zap.Logger
	Clock  func() time.Time
	// Host is used in links when a request has no Host header.
	Host string
	// FinalizeWait bounds how long a finalize waits for the upstream CA
	// before answering the order in status processing. Default: 25s.
	FinalizeWait time.Duration
	// RetryAfter is the Retry-After of a processing order. Default: 5s.
	RetryAfter time.Duration
	// MaxBodyBytes caps a request body. Default: 64 KiB.
	MaxBodyBytes int64
	// DuplicateLimit caps new upstream certificates for exactly the same
	// names per token within DuplicateWindow (the CA's duplicate-
	// certificate limit; Let's Encrypt: 5 per 7 days); past it a finalize
	// answers rateLimited with Retry-After. A fresh re-pull is not
	// counted. 0: the limit the CA catalog gives for the token's ACME
	// client's CA (none if it gives none); negative: no pacing.
	DuplicateLimit  int
	DuplicateWindow time.Duration
	// WarmMargin: a token's upstream authorizations are renewed (a new
	// pre-authorization workflow, see Warm) once they expire within it.
	// Default: 15m.
	WarmMargin time.Duration
	// WarmRetry: a failed pre-authorization is retried after it.
	// Default: 5m.
	WarmRetry time.Duration
	// PullRetention is how long a pull record (which lets a retried
	// finalize find its workflow) is kept; Prune removes older ones.
	// Default: 7 days.
	PullRetention time.Duration
	// Clients gives the ACME client that issued a certificate, to forward
	// an edge's revocation upstream; nil refuses revocations.
	Clients workflow.ACMEClients
}

// Gateway is CertLocker's ACME server for edge systems: smallstep's ACME
// API on CertLocker's store, with certificate tokens as EAB keys or as
// per-token directory URLs, and a registration authority behind it. It
// holds no state of its own: every node serving the same store answers
// the same.
type Gateway struct {
	opts   Options
	store  storage.Store
	engine *workflow.Engine
	tokens *Service
	log    *zap.Logger
	clock  func() time.Time

	auth    *authority.Authority
	db      *db
	linker  linker
	eab     http.Handler
	byToken http.Handler
	pulls   inflight
	// follow settles processing orders in the background (processing.go)
	follow followers

	// lastExpiry is when this node last removed expired nonces (Unix s)
	lastExpiry atomic.Int64
	// nonceMAC is the nonces' MAC key, read (or made) once (nonceKey)
	nonceMu  sync.Mutex
	nonceMAC []byte
}

// expireNonces removes used nonces past their TTL, at most once a minute
// per node, during the request that triggers it.
func (g *Gateway) expireNonces(ctx context.Context, now time.Time) {
	last := g.lastExpiry.Load()
	if now.Unix()-last < 60 || !g.lastExpiry.CompareAndSwap(last, now.Unix()) {
		return
	}
	if _, err := g.store.ACME().DeleteBelow(context.WithoutCancel(ctx), noncesBucket, nonceKeyAt(now.Add(-nonceTTL))); err != nil {
		g.log.Warn("removing expired nonces", zap.Error(err))
	}
}

// New builds a gateway over a store and workflow engine.
func New(opts Options) (*Gateway, error) {
	if opts.Store == nil || opts.Engine == nil {
		return nil, errors.New("creating the ACME gateway: store and workflow engine are required")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.FinalizeWait <= 0 {
		opts.FinalizeWait = 25 * time.Second
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 5 * time.Second
	}
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = 7 * 24 * time.Hour
	}
	if opts.WarmMargin <= 0 {
		opts.WarmMargin = 15 * time.Minute
	}
	if opts.PullRetention <= 0 {
		opts.PullRetention = 7 * 24 * time.Hour
	}
	if opts.WarmRetry <= 0 {
		opts.WarmRetry = 5 * time.Minute
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	g := &Gateway{opts: opts, store: opts.Store, engine: opts.Engine, log: opts.Logger, clock: opts.Clock,
		tokens: NewService(opts.Store, opts.Node, opts.Logger, opts.Clock), pulls: inflight{m: map[string]*pull{}}}
	g.linker = linker{g: g}
	var err error
	if g.db, err = newDB(g); err != nil {
		return nil, err
	}
	root, err := placeholderRoot()
	if err != nil {
		return nil, err
	}
	claims := &provisioner.Claims{
		MinTLSDur:     &provisioner.Duration{Duration: time.Minute},
		MaxTLSDur:     &provisioner.Duration{Duration: 398 * 24 * time.Hour},
		DefaultTLSDur: &provisioner.Duration{Duration: 90 * 24 * time.Hour},
	}
	challenges := []provisioner.ACMEChallenge{provisioner.HTTP_01, provisioner.DNS_01}
	g.auth, err = authority.NewEmbedded(
		authority.WithConfig(&config.Config{AuthorityConfig: &config.AuthConfig{Provisioners: provisioner.List{
			&provisioner.ACME{Type: provisioner.TypeACME.String(), Name: provEAB, RequireEAB: true, Challenges: challenges, Claims: claims},
			&provisioner.ACME{Type: provisioner.TypeACME.String(), Name: provToken, Challenges: challenges, Claims: claims},
		}}}),
		authority.WithX509CAService(ra{g: g}),
		authority.WithX509RootCerts(root),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("creating the ACME gateway's authority: %w", err)
	}
	eab := chi.NewRouter()
	eab.Route(eabPrefix, func(r chi.Router) { acmeapi.Route(r) })
	byToken := chi.NewRouter()
	byToken.Route(tokenPrefix, func(r chi.Router) { acmeapi.Route(r) })
	g.eab, g.byToken = eab, byToken
	return g, nil
}

// placeholderRoot is the root smallstep's authority insists on; the
// gateway never signs with it (the upstream CA issues) nor serves it.
func placeholderRoot() (*x509.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CertLocker gateway (placeholder, never signs)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * 365 * 24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Handles reports whether the gateway serves path.
func Handles(path string) bool {
	return strings.HasPrefix(path, "/rest/acme/") || strings.HasPrefix(path, BundlePathPrefix)
}

// ServeHTTP serves /rest/acme/… and /rest/tokens/{id}/bundle.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := &reqState{host: r.Host, remote: r.RemoteAddr}
	if strings.HasPrefix(r.URL.Path, BundlePathPrefix) {
		g.serveBundle(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, s)))
		return
	}
	ctx := context.WithValue(r.Context(), stateKey{}, s)
	ctx = acme.NewContext(ctx, g.db, acme.NewClient(), g.linker, nil)
	ctx = authority.NewContext(ctx, g.auth)
	r = r.WithContext(ctx)

	router := g.eab
	if rest, ok := strings.CutPrefix(r.URL.Path, tokenPrefix+"/"); ok {
		secret, _, _ := strings.Cut(rest, "/")
		t, err := g.tokens.ByURLSecret(ctx, secret)
		if err != nil {
			if !errors.Is(err, storage.ErrNotFound) {
				g.log.Error("finding the token of a directory URL", zap.Error(err))
			}
			g.problem(w, r, http.StatusNotFound, acme.ErrorMalformedType, "no such directory", 0)
			return
		}
		s.urlSecret, s.urlToken = secret, t
		router = g.byToken
	} else if !strings.HasPrefix(r.URL.Path, eabPrefix+"/"+provEAB+"/") {
		http.NotFound(w, r)
		return
	}
	if i := strings.Index(r.URL.Path, renewalInfoPath+"/"); i >= 0 && strings.Count(r.URL.Path[i+len(renewalInfoPath)+1:], "/") == 0 {
		g.serveRenewalInfo(w, r, r.URL.Path[i+len(renewalInfoPath)+1:])
		return
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.HasSuffix(r.URL.Path, "/directory") {
		g.serveDirectory(w, r, s, router)
		return
	}
	if r.Method == http.MethodPost {
		body, err := io.ReadAll(io.LimitReader(r.Body, g.opts.MaxBodyBytes+1))
		if err != nil {
			g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "reading the request body failed", 0)
			return
		}
		if int64(len(body)) > g.opts.MaxBodyBytes {
			g.problem(w, r, http.StatusRequestEntityTooLarge, acme.ErrorMalformedType,
				fmt.Sprintf("request body is larger than %d bytes", g.opts.MaxBodyBytes), 0)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if done := g.precheck(w, r, s, body); done {
			return
		}
	}
	router.ServeHTTP(w, r)
}

// jwsRequest is a request body read before smallstep verifies it: used
// only to refuse early (no state), or to route the finalize to its token.
type jwsRequest struct {
	kid       string
	accountID string
	payload   []byte
}

func parseJWSRequest(body []byte) (*jwsRequest, bool) {
	jws, err := jose.ParseJWS(string(body))
	if err != nil || len(jws.Signatures) != 1 {
		return nil, false
	}
	kid := jws.Signatures[0].Protected.KeyID
	out := &jwsRequest{kid: kid, payload: jws.UnsafePayloadWithoutVerification()}
	if i := strings.LastIndex(kid, "/"); i >= 0 {
		out.accountID = kid[i+1:]
	}
	return out, true
}

// precheck refuses, before smallstep stores anything, what the token's
// rules refuse: a wrong EAB MAC, an order or CSR outside the scope, a weak
// CSR key. A body that does not parse is left to smallstep's own
// problems. It reports whether it answered.
func (g *Gateway) precheck(w http.ResponseWriter, r *http.Request, s *reqState, body []byte) bool {
	ctx := r.Context()
	path := r.URL.Path
	req, ok := parseJWSRequest(body)
	if !ok {
		return false
	}
	switch {
	case strings.Contains(path, "/certificate/"):
		if certID, n, ok := alternatePath(path); ok {
			g.serveAlternate(w, r, body, certID, n)
		} else {
			g.serveCertificate(w, r, s)
		}
		return true
	case strings.HasSuffix(path, "/revoke-cert"):
		g.revokeCert(w, r, s, body)
		return true
	case strings.HasSuffix(path, "/key-change"):
		g.keyChange(w, r, s, body)
		return true
	case strings.HasSuffix(path, "/new-account") && s.urlSecret == "":
		return g.checkEAB(w, r, s, req)
	case strings.HasSuffix(path, "/new-order"):
		var nor struct {
			Identifiers []acme.Identifier `json:"identifiers"`
			Replaces    string            `json:"replaces"`
			Profile     json.RawMessage   `json:"profile"`
		}
		if json.Unmarshal(req.payload, &nor) != nil || req.accountID == "" {
			return false
		}
		t, done := g.boundToken(w, r, s, req)
		if done || t == nil {
			return done
		}
		scope, _ := NewScope(t.Names)
		for _, id := range nor.Identifiers {
			if scope.Empty() || !scope.Covers(id.Value) {
				g.use(ctx, t, "token.refused", map[string]any{"reason": "identifier outside scope", "identifier": id.Value})
				g.problem(w, r, http.StatusForbidden, acme.ErrorRejectedIdentifierType,
					fmt.Sprintf("%s is outside the scope of token %s", id.Value, t.ID), 0)
				return true
			}
		}
		profile, ok := g.orderProfile(w, r, t, nor.Profile)
		if !ok {
			return true
		}
		if nor.Replaces != "" || profile != "" {
			g.newOrder(w, r, s, req.accountID, nor.Replaces, profile)
			return true
		}
	case strings.Contains(path, "/order/") && strings.HasSuffix(path, "/finalize"):
		var fr struct {
			CSR string `json:"csr"`
		}
		if json.Unmarshal(req.payload, &fr) != nil || req.accountID == "" {
			return false
		}
		der, err := base64.RawURLEncoding.DecodeString(fr.CSR)
		if err != nil {
			return false
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return false
		}
		t, done := g.boundToken(w, r, s, req)
		if done || t == nil {
			return done
		}
		if msg := checkCSR(t, csr); msg != "" {
			typ := acme.ErrorBadCSRType
			if strings.Contains(msg, "outside the scope") {
				typ = acme.ErrorRejectedIdentifierType
			}
			g.use(ctx, t, "token.refused", map[string]any{"reason": msg})
			g.problem(w, r, http.StatusForbidden, typ, msg, 0)
			return true
		}
		g.finalize(w, r, s, t, der)
		return true
	case strings.Contains(path, "/order/"):
		g.serveOrder(w, r, s)
		return true
	}
	return false
}

// boundToken returns the active token the request's account is bound to
// (nil, false for an account the store does not know: smallstep answers),
// refusing a revoked or expired token, and an account used through another
// token's directory.
func (g *Gateway) boundToken(w http.ResponseWriter, r *http.Request, s *reqState, req *jwsRequest) (*storage.Token, bool) {
	ctx := r.Context()
	id, err := g.store.Tokens().AccountToken(ctx, req.accountID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		g.problem(w, r, http.StatusInternalServerError, acme.ErrorServerInternalType, "looking up the account's token failed", 0)
		return nil, true
	}
	t, err := g.store.Tokens().Get(ctx, id)
	if err != nil {
		g.problem(w, r, http.StatusUnauthorized, acme.ErrorUnauthorizedType, "the account's token is gone", 0)
		return nil, true
	}
	if st := State(t, g.clock()); st != StateActive {
		g.use(ctx, t, "token.refused", map[string]any{"reason": "token " + st})
		g.problem(w, r, http.StatusUnauthorized, acme.ErrorUnauthorizedType, fmt.Sprintf("token %s is %s", t.ID, st), 0)
		return nil, true
	}
	if s.urlToken != nil && s.urlToken.ID != t.ID {
		g.problem(w, r, http.StatusUnauthorized, acme.ErrorUnauthorizedType, "this account is bound to another token", 0)
		return nil, true
	}
	return t, false
}

// checkEAB verifies a new account's external account binding against the
// token's MAC keys (the current one, and the previous during a rotation's
// grace), so that a wrong MAC is unauthorized, not smallstep's 500, and the
// key that verified is the one smallstep checks again.
func (g *Gateway) checkEAB(w http.ResponseWriter, r *http.Request, s *reqState, req *jwsRequest) bool {
	var nar struct {
		EAB json.RawMessage `json:"externalAccountBinding"`
	}
	if json.Unmarshal(req.payload, &nar) != nil || len(nar.EAB) == 0 || string(nar.EAB) == "null" {
		return false // smallstep answers externalAccountRequired
	}
	eab, err := jose.ParseJWS(string(nar.EAB))
	if err != nil || len(eab.Signatures) != 1 {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "externalAccountBinding is not a JWS", 0)
		return true
	}
	kid := eab.Signatures[0].Protected.KeyID
	alg := eab.Signatures[0].Protected.Algorithm
	if !slices.Contains([]string{jose.HS256, jose.HS384, jose.HS512}, alg) {
		g.problem(w, r, http.StatusBadRequest, acme.ErrorMalformedType, "externalAccountBinding alg must be HS256, HS384 or HS512", 0)
		return true
	}
	t, err := g.store.Tokens().Get(r.Context(), kid)
	if err != nil {
		g.use(r.Context(), &storage.Token{ID: kid}, "token.refused", map[string]any{"reason": "unknown EAB key ID"})
		g.problem(w, r, http.StatusUnauthorized, acme.ErrorUnauthorizedType, "unknown EAB key ID", 0)
		return true
	}
	keys := MACKeys(t, g.clock())
	if len(keys) == 0 {
		g.use(r.Context(), t, "token.refused", map[string]any{"reason": "token " + State(t, g.clock())})
		g.problem(w, r, http.StatusUnauthorized, acme.ErrorUnauthorizedType, fmt.Sprintf("token %s is %s", t.ID, State(t, g.clock())), 0)
		return true
	}
	for _, k := range keys {
		if _, err := eab.Verify(k); err == nil {
			s.eabToken, s.macKey = t.ID, k
			return false
		}
	}
	g.use(r.Context(), t, "token.refused", map[string]any{"reason": "EAB MAC does not verify"})
	g.problem(w, r, http.StatusUnauthorized, acme.ErrorUnauthorizedType, "the external account binding's MAC does not verify", 0)
	return true
}

// checkCSR returns why the token refuses the CSR, or "".
func checkCSR(t *storage.Token, csr *x509.CertificateRequest) string {
	scope, _ := NewScope(t.Names)
	names := slices.Clone(csr.DNSNames)
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	if csr.Subject.CommonName != "" {
		names = append(names, csr.Subject.CommonName)
	}
	for _, n := range names {
		if scope.Empty() || !scope.Covers(n) {
			return fmt.Sprintf("the CSR names %s, outside the scope of token %s", n, t.ID)
		}
	}
	switch k := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		min := t.Spec.MinRSABits
		if min == 0 {
			min = DefaultMinRSABits
		}
		if k.N.BitLen() < min {
			return fmt.Sprintf("the CSR's RSA key has %d bits; token %s needs at least %d", k.N.BitLen(), t.ID, min)
		}
	case *ecdsa.PublicKey:
		allowed := t.Spec.AllowedCurves
		if len(allowed) == 0 {
			allowed = []string{"P-256", "P-384"}
		}
		if !slices.Contains(allowed, k.Curve.Params().Name) {
			return fmt.Sprintf("the CSR's key is on curve %s; token %s allows %s", k.Curve.Params().Name, t.ID, strings.Join(allowed, ", "))
		}
	default:
		return fmt.Sprintf("the CSR's key type %T is not allowed (RSA or ECDSA)", csr.PublicKey)
	}
	return ""
}

// finalize hands the finalize to smallstep with the pull registered for
// the CA service; if issuance outlasts the wait, it answers the order in
// status processing instead of smallstep's error, keeping smallstep's new
// nonce (see processing.go).
func (g *Gateway) finalize(w http.ResponseWriter, r *http.Request, s *reqState, t *storage.Token, der []byte) {
	hash := csrHash(der)
	orderID := orderIDOf(r.URL.Path)
	// an order already processing: the same CSR waits for its workflow
	// again (below, found by the pull record); another CSR is refused
	pr, processing := g.processingOf(r.Context(), orderID)
	if processing && pr.CSRHash != hash {
		g.problem(w, r, http.StatusForbidden, acme.ErrorOrderNotReadyType,
			fmt.Sprintf("order %s is processing (workflow %s); poll it, or finalize with the same CSR", orderID, pr.WorkflowID), g.opts.RetryAfter)
		return
	}
	p := &pull{tokenID: t.ID, remote: s.remote, replaces: g.replacesOf(r.Context(), orderID), profile: g.profileOf(r.Context(), orderID),
		orderID: orderID, processing: processing}
	g.pulls.put(hash, p)
	defer g.pulls.del(hash, p)
	rec := &recorder{header: http.Header{}}
	g.byRouter(s).ServeHTTP(rec, r)
	if p.limited > 0 {
		for k, v := range rec.header {
			if k == "Replay-Nonce" || k == "Link" {
				w.Header()[k] = v
			}
		}
		g.problemNoNonce(w, http.StatusTooManyRequests, acme.ErrorRateLimitedType,
			fmt.Sprintf("token %s reached %d new certificates for these names per %s; retry later", t.ID, p.limit, p.window),
			p.limited)
		return
	}
	if p.pending {
		g.answerProcessing(w, r, rec, orderID, p, der)
		return
	}
	if rec.status == http.StatusOK {
		if processing {
			g.doneProcessing(r.Context(), orderID)
		}
		rec.setBody(withProfile(rec.body.Bytes(), p.profile))
	}
	rec.flush(w)
}

// serveOrder answers POST-as-GET of an order: smallstep's answer (which
// verifies the request), with the order's profile, and for an order
// processing at the gateway its status (see processing.go).
func (g *Gateway) serveOrder(w http.ResponseWriter, r *http.Request, s *reqState) {
	rec := &recorder{header: http.Header{}}
	g.byRouter(s).ServeHTTP(rec, r)
	orderID := orderIDOf(r.URL.Path)
	if rec.status == http.StatusOK {
		if _, ok := g.processingOf(r.Context(), orderID); ok {
			g.processingOrder(w, r, s, rec, orderID)
			return
		}
		rec.setBody(withProfile(rec.body.Bytes(), g.profileOf(r.Context(), orderID)))
	}
	rec.flush(w)
}

func (g *Gateway) byRouter(s *reqState) http.Handler {
	if s.urlSecret != "" {
		return g.byToken
	}
	return g.eab
}

// recorder buffers a response so the gateway can replace it.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// setBody replaces the recorded body.
func (r *recorder) setBody(b []byte) {
	r.body.Reset()
	r.body.Write(b)
	r.header.Del("Content-Length")
}

func (r *recorder) flush(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	if r.status == 0 {
		r.status = http.StatusOK
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes())
}

// problem answers an RFC 8555 problem with a fresh nonce.
func (g *Gateway) problem(w http.ResponseWriter, r *http.Request, status int, typ acme.ProblemType, detail string, retry time.Duration) {
	if n, err := g.db.CreateNonce(r.Context()); err == nil {
		w.Header().Set("Replay-Nonce", string(n))
	}
	w.Header().Set("Cache-Control", "no-store")
	g.problemNoNonce(w, status, typ, detail, retry)
}

func (g *Gateway) problemNoNonce(w http.ResponseWriter, status int, typ acme.ProblemType, detail string, retry time.Duration) {
	writeProblem(w, status, "urn:ietf:params:acme:error:"+typ.String(), detail, retry)
}

func writeProblem(w http.ResponseWriter, status int, typ, detail string, retry time.Duration) {
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": typ, "detail": detail, "status": status})
}

// use records a use of token t (account bound, order, finalize, refusal)
// in the audit log with the token's group, the edge's source address and
// the result: refused for the actions named token.*refused. Where the
// context has no request state (the CA callback), details["remote"]
// names the edge.
func (g *Gateway) use(ctx context.Context, t *storage.Token, action string, details map[string]any) {
	if details == nil {
		details = map[string]any{}
	}
	remote, _ := details["remote"].(string)
	if remote == "" {
		remote = stateFrom(ctx).remote
		details["remote"] = remote
	}
	source := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		source = h
	}
	result := storage.AuditOK
	if strings.HasSuffix(action, "refused") {
		result = storage.AuditRefused
	}
	raw, _ := json.Marshal(details)
	if err := g.store.Audit().Append(context.WithoutCancel(ctx), &storage.AuditEntry{Node: g.opts.Node, Actor: "acme@" + remote,
		Action: action, Target: t.ID, Group: t.Group, Source: source, Result: result, Details: raw}); err != nil {
		g.log.Warn("auditing a token use", zap.String("token_id", t.ID), zap.String("action", action), zap.Error(err))
	}
}
