package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	casapi "github.com/smallstep/certificates/cas/apiv1"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// pullsBucket maps a token and CSR (SHA-256 of its DER) to the gateway
// workflow that issues it, so a retried finalize, on any node, finds the
// same workflow and never places a second upstream order.
const pullsBucket = "gateway_pulls"

type pullRecord struct {
	WorkflowID string    `json:"workflow_id"`
	TokenID    string    `json:"token_id"`
	Created    time.Time `json:"created"`
	// Names are the certificate's names, sorted, for pacing
	Names []string `json:"names,omitempty"`
	// OrderID is the gateway order whose finalize made the record
	OrderID string `json:"order_id,omitempty"`
}

// pull is one finalize in flight on this node, found by the CA service by
// its CSR.
type pull struct {
	tokenID string
	remote  string
	// replaces is the ARI ID of the certificate the order replaces
	replaces string
	// profile is the order's profile ("" for the CA's default)
	profile string
	// orderID is the gateway order being finalized
	orderID string
	// limited is set when pacing refuses the pull (limit per window):
	// retry after it
	limited time.Duration
	limit   int
	window  time.Duration
	// processing: the order was processing when finalized (completing it
	// needs the claim, see mayComplete); settling: the claim is held
	processing, settling bool
	// set by the CA service
	pending    bool
	workflowID string
}

type inflight struct {
	mu sync.Mutex
	m  map[string]*pull
}

func (f *inflight) put(hash string, p *pull) {
	f.mu.Lock()
	f.m[hash] = p
	f.mu.Unlock()
}

func (f *inflight) get(hash string) *pull {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[hash]
}

func (f *inflight) del(hash string, p *pull) {
	f.mu.Lock()
	if f.m[hash] == p {
		delete(f.m, hash)
	}
	f.mu.Unlock()
}

func csrHash(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// errLimited tells the gateway that pacing refused the pull.
var errLimited = errors.New("too many certificates for these names")

// errPending tells the gateway that issuance goes on past the wait.
var errPending = errors.New("the certificate is still being issued")

// ra is the smallstep authority's X.509 CA service: a registration
// authority that issues the edge's CSR through the token's ACME client, as
// a workflow of trigger gateway, and returns the chain it got.
type ra struct{ g *Gateway }

func (c ra) CreateCertificate(req *casapi.CreateCertificateRequest) (*casapi.CreateCertificateResponse, error) {
	if req.CSR == nil {
		return nil, errors.New("issuing through the gateway: no CSR")
	}
	hash := csrHash(req.CSR.Raw)
	p := c.g.pulls.get(hash)
	if p == nil {
		return nil, errors.New("issuing through the gateway: no finalize in flight for this CSR")
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.g.opts.FinalizeWait)
	defer cancel()
	chain, err := c.g.issue(ctx, p, req.CSR, hash)
	if err != nil {
		return nil, err
	}
	if !c.g.mayComplete(p) {
		p.pending = true
		return nil, errPending
	}
	return &casapi.CreateCertificateResponse{Certificate: chain[0], CertificateChain: chain[1:]}, nil
}

func (c ra) RenewCertificate(*casapi.RenewCertificateRequest) (*casapi.RenewCertificateResponse, error) {
	return nil, errors.New("renewing through the gateway: order a new certificate")
}

func (c ra) RevokeCertificate(*casapi.RevokeCertificateRequest) (*casapi.RevokeCertificateResponse, error) {
	return nil, errors.New("revoking through the gateway is not supported yet")
}

// issue finds or starts the gateway workflow for the token and CSR and
// waits for it until ctx ends (then errPending: it carries on).
func (g *Gateway) issue(ctx context.Context, p *pull, csr *x509.CertificateRequest, hash string) ([]*x509.Certificate, error) {
	t, err := g.store.Tokens().Get(ctx, p.tokenID)
	if err != nil {
		return nil, fmt.Errorf("issuing through the gateway: %w", err)
	}
	if st := State(t, g.clock()); st != StateActive {
		return nil, fmt.Errorf("issuing through the gateway: token %s is %s", t.ID, st)
	}
	ids, err := upstreamIdentifiers(t, csr)
	if err != nil {
		return nil, err
	}
	// a pull that knows its workflow (a processing order being completed)
	// takes that workflow's certificate
	if chain := g.fresh(ctx, t, csr, p.profile); p.workflowID == "" && chain != nil {
		g.use(ctx, t, "token.reused", map[string]any{"certificate_id": t.CertificateID, "remote": p.remote})
		return chain, nil
	}
	names := make([]string, 0, len(ids))
	for _, id := range ids {
		names = append(names, id.Value)
	}
	slices.Sort(names)
	key := t.ID + "/" + hash
	rec, err := g.pullRecordFor(ctx, t, p, key, names)
	if err != nil {
		return nil, err
	}
	p.workflowID = rec.WorkflowID
	// watch before the first read: a workflow that ends between the read
	// and the watch would otherwise wake nobody
	ch, stop := g.engine.Watch(rec.WorkflowID)
	defer stop()
	w, err := g.engine.Get(ctx, rec.WorkflowID)
	if errors.Is(err, storage.ErrNotFound) {
		w, err = g.engine.Create(ctx, workflow.Request{ID: rec.WorkflowID, IssuerID: t.Spec.IssuerID, Identifiers: ids,
			Trigger: workflow.TriggerGateway, Group: t.Group, CSR: csr.Raw, Actor: "gateway@" + p.remote, Replaces: p.replaces,
			Profile: p.profile})
		if errors.Is(err, storage.ErrDuplicate) { // another node made it meanwhile
			w, err = g.engine.Get(ctx, rec.WorkflowID)
		}
		if err == nil {
			g.use(ctx, t, "token.finalize", map[string]any{"workflow_id": w.ID, "identifiers": t.Names, "remote": p.remote})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("issuing through the gateway: %w", err)
	}
	// this node's engine wakes the wait at each step it persists; a
	// workflow another node runs is seen by looking at the store, first
	// after 50 ms, doubling up to 1 s
	look := time.NewTimer(50 * time.Millisecond)
	defer look.Stop()
	next := 50 * time.Millisecond
	for {
		switch w.State {
		case storage.StateIssued:
			return g.chainOf(ctx, t, w)
		case storage.StateFailed, storage.StateCancelled:
			return nil, fmt.Errorf("issuing through the gateway: workflow %s %s: %s", w.ID, w.State, w.Status)
		}
		select {
		case <-ctx.Done():
			p.pending = true
			return nil, errPending
		case <-ch:
		case <-look.C:
			next = min(2*next, time.Second)
			look.Reset(next)
		}
		if w, err = g.engine.Get(context.WithoutCancel(ctx), w.ID); err != nil {
			return nil, fmt.Errorf("issuing through the gateway: %w", err)
		}
	}
}

// pullRecordFor returns the pull record of a token and CSR: the existing
// one (a retried finalize, or a poll of a processing order: the same
// workflow), or a new one with a new workflow ID once pacing allows it.
// An existing record whose workflow failed or was cancelled is replaced
// when a different order finalizes the same CSR: that is a new attempt.
// The record is taken with compare-and-swap, so concurrent finalizes on
// any node agree on one workflow.
func (g *Gateway) pullRecordFor(ctx context.Context, t *storage.Token, p *pull, key string, names []string) (pullRecord, error) {
	for attempt := 0; ; attempt++ {
		old, err := g.store.ACME().Get(ctx, pullsBucket, key)
		if errors.Is(err, storage.ErrNotFound) {
			old, err = nil, nil
		}
		if err != nil {
			return pullRecord{}, fmt.Errorf("issuing through the gateway: reading the pull: %w", err)
		}
		var rec pullRecord
		if old != nil {
			if err := json.Unmarshal(old, &rec); err != nil {
				return pullRecord{}, fmt.Errorf("issuing through the gateway: reading the pull: %w", err)
			}
			if p.workflowID != "" || p.orderID == "" || rec.OrderID == "" || rec.OrderID == p.orderID {
				return rec, nil
			}
			if w, err := g.engine.Get(ctx, rec.WorkflowID); err != nil ||
				(w.State != storage.StateFailed && w.State != storage.StateCancelled) {
				return rec, nil
			}
		}
		limit, window := g.duplicateLimit(ctx, t)
		if wait, err := g.pace(ctx, t.ID, names, limit, window); err != nil {
			return pullRecord{}, err
		} else if wait > 0 {
			p.limited, p.limit, p.window = wait, limit, window
			g.use(ctx, t, "token.refused", map[string]any{"reason": "duplicate-certificate pacing", "identifiers": names,
				"retry_after": wait.String()})
			return pullRecord{}, errLimited
		}
		rec = pullRecord{WorkflowID: storage.NewID("wf"), TokenID: t.ID, Created: g.clock().UTC(), Names: names, OrderID: p.orderID}
		raw, _ := json.Marshal(rec)
		found, swapped, err := g.store.ACME().CompareAndSwap(ctx, pullsBucket, key, old, raw)
		if err != nil {
			return pullRecord{}, fmt.Errorf("issuing through the gateway: recording the pull: %w", err)
		}
		if swapped {
			return rec, nil
		}
		// another finalize recorded the pull meanwhile: take its workflow
		// (the slot taken above errs on the CA's side, like a failed order)
		if found != nil && json.Unmarshal(found, &rec) == nil && (attempt >= 3 || rec.OrderID == p.orderID || old == nil) {
			return rec, nil
		}
		if attempt >= 3 {
			return pullRecord{}, errors.New("issuing through the gateway: too much contention on the pull record")
		}
	}
}

// chainOf returns the issued chain of a gateway workflow, leaf first, and
// links the inventory certificate to the token.
func (g *Gateway) chainOf(ctx context.Context, t *storage.Token, w *storage.Workflow) ([]*x509.Certificate, error) {
	c, err := g.store.Certificates().Get(ctx, w.CertificateID)
	if err != nil {
		return nil, fmt.Errorf("issuing through the gateway: %w", err)
	}
	chain, err := parseChainPEM(c.ChainPEM)
	if err != nil {
		return nil, fmt.Errorf("issuing through the gateway: %w", err)
	}
	// the token's latest certificate, and when it was last pulled
	t.CertificateID, t.LastUsedAt = c.ID, g.clock()
	if err := g.store.Tokens().Update(ctx, t); err != nil && !errors.Is(err, storage.ErrConflict) {
		g.log.Warn("linking the certificate to its token", zap.String("token_id", t.ID), zap.Error(err))
	}
	return chain, nil
}

// duplicateLimit is the token's pacing: the DuplicateLimit setting (per
// DuplicateWindow) when set, else the duplicate-certificate limit the CA
// catalog gives for the token's ACME client's CA, else none (0).
func (g *Gateway) duplicateLimit(ctx context.Context, t *storage.Token) (int, time.Duration) {
	switch {
	case g.opts.DuplicateLimit > 0:
		return g.opts.DuplicateLimit, g.opts.DuplicateWindow
	case g.opts.DuplicateLimit < 0:
		return 0, 0
	}
	iss, err := g.store.Issuers().Get(ctx, t.Spec.IssuerID)
	if err != nil || iss.CatalogID == "" {
		return 0, 0
	}
	e, ok := issuers.LookupCatalog(iss.CatalogID)
	if !ok {
		return 0, 0
	}
	return e.DuplicateLimit.Limit()
}

// paceBucket holds, per token and exact set of names, when its new
// upstream certificates were started: the slots of the duplicate limit.
const paceBucket = "gateway_pacing"

// pace takes a slot for one more new upstream certificate for exactly
// these names under a duplicate-certificate limit of limit per window, per
// token, and returns 0; or, with every slot taken, how long until one
// frees. Slots are taken with compare-and-swap, so concurrent pulls, on
// any node, never exceed the limit.
func (g *Gateway) pace(ctx context.Context, tokenID string, names []string, limit int, window time.Duration) (time.Duration, error) {
	if limit <= 0 || window <= 0 {
		return 0, nil
	}
	key := paceKey(tokenID, names)
	for attempt := 0; ; attempt++ {
		old, err := g.store.ACME().Get(ctx, paceBucket, key)
		if errors.Is(err, storage.ErrNotFound) {
			old, err = nil, nil
		}
		if err != nil {
			return 0, fmt.Errorf("pacing the pull: %w", err)
		}
		var taken []time.Time
		if old != nil && json.Unmarshal(old, &taken) != nil {
			taken = nil
		}
		now := g.clock()
		since := now.Add(-window)
		taken = slices.DeleteFunc(taken, func(at time.Time) bool { return !at.After(since) })
		slices.SortFunc(taken, func(a, b time.Time) int { return a.Compare(b) })
		if len(taken) >= limit {
			// the oldest that must leave the window for one more to fit
			free := taken[len(taken)-limit].Add(window)
			return max(free.Sub(now), time.Second), nil
		}
		raw, _ := json.Marshal(append(taken, now.UTC()))
		_, swapped, err := g.store.ACME().CompareAndSwap(ctx, paceBucket, key, old, raw)
		if err != nil {
			return 0, fmt.Errorf("pacing the pull: %w", err)
		}
		if swapped {
			return 0, nil
		}
		if attempt >= 100 {
			return 0, errors.New("pacing the pull: too much contention on the token's pacing record")
		}
	}
}

// paceKey is the pacing record of a token and exact set of names (sorted).
func paceKey(tokenID string, names []string) string {
	h := sha256.Sum256([]byte(strings.Join(names, "\n")))
	return tokenID + "/" + hex.EncodeToString(h[:])
}

// fresh returns the token's current certificate if the CSR asks for it
// again (same public key, same names, and the same profile when the order
// names one) while it is fresh (in the first third of its lifetime): a
// re-pull costs the upstream CA nothing.
func (g *Gateway) fresh(ctx context.Context, t *storage.Token, csr *x509.CertificateRequest, profile string) []*x509.Certificate {
	if t.CertificateID == "" {
		return nil
	}
	c, err := g.store.Certificates().Get(ctx, t.CertificateID)
	if err != nil || c.Status != storage.CertStatusActive || (profile != "" && c.Profile != profile) {
		return nil
	}
	now := g.clock()
	if now.Before(c.NotBefore) || !now.Before(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore)/3)) {
		return nil
	}
	chain, err := parseChainPEM(c.ChainPEM)
	if err != nil || !bytes.Equal(chain[0].RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo) {
		return nil
	}
	want, err := upstreamIdentifiers(t, csr)
	if err != nil {
		return nil
	}
	have := map[string]bool{}
	for _, n := range chain[0].DNSNames {
		have[strings.ToLower(n)] = true
	}
	for _, ip := range chain[0].IPAddresses {
		have[ip.String()] = true
	}
	if len(have) != len(want) {
		return nil
	}
	for _, id := range want {
		if !have[id.Value] {
			return nil
		}
	}
	return chain
}

func parseChainPEM(chainPEM string) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for rest := []byte(chainPEM); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing the chain: %w", err)
		}
		chain = append(chain, x)
	}
	if len(chain) == 0 {
		return nil, errors.New("the certificate has no chain")
	}
	return chain, nil
}

// upstreamIdentifiers are the CSR's names with the challenge settings of
// the token's entry that covers each (a name under a wildcard takes the
// wildcard's dns-01 settings).
func upstreamIdentifiers(t *storage.Token, csr *x509.CertificateRequest) ([]storage.Identifier, error) {
	var out []storage.Identifier
	add := func(name string) error {
		for _, id := range out {
			if id.Value == name {
				return nil
			}
		}
		var best *storage.Identifier
		for i, id := range t.Spec.Identifiers {
			if id.Value == name {
				best = &t.Spec.Identifiers[i]
				break
			}
			if s, err := NewScope([]string{id.Value}); err == nil && s.Covers(name) && best == nil {
				best = &t.Spec.Identifiers[i]
			}
		}
		if best == nil {
			return fmt.Errorf("issuing through the gateway: %s is outside the scope of token %s", name, t.ID)
		}
		id := *best
		id.Value = name
		if net.ParseIP(name) != nil {
			id.Type = "ip"
		} else {
			id.Type = "dns"
		}
		out = append(out, id)
		return nil
	}
	for _, n := range csr.DNSNames {
		nn, err := NormalizeName(n)
		if err != nil {
			return nil, err
		}
		if err := add(nn); err != nil {
			return nil, err
		}
	}
	for _, ip := range csr.IPAddresses {
		if err := add(ip.String()); err != nil {
			return nil, err
		}
	}
	if cn := strings.TrimSpace(csr.Subject.CommonName); cn != "" {
		nn, err := NormalizeName(cn)
		if err != nil {
			return nil, err
		}
		if err := add(nn); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var _ casapi.CertificateAuthorityService = ra{}
