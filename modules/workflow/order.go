package workflow

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/keys"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Steps inside the authorizing state, per identifier.
const (
	StepPresenting  = "presenting"
	StepPropagating = "propagating"
	StepValidating  = "validating"
	StepValid       = "valid"
)

// Challenge types.
const (
	ChallengeDNS01  = "dns-01"
	ChallengeHTTP01 = "http-01"
)

// errEnded tells a caller that the step already ended the workflow.
var errEnded = errors.New("workflow ended")

// orderData is the engine's persisted step data (Workflow.Data).
type orderData struct {
	Finalize string      `json:"finalize,omitempty"`
	CertURL  string      `json:"certificate_url,omitempty"`
	Authzs   []authzData `json:"authorizations,omitempty"`
	// Replaces is the ARI certificate ID of the certificate a renewal replaces.
	Replaces string `json:"replaces,omitempty"`
	// Resume is the state a retry_scheduled workflow goes back to.
	Resume string `json:"resume_state,omitempty"`
	// Orders counts orders created at the CA for this workflow.
	Orders int `json:"orders,omitempty"`
	// Problem is the last CA problem, verbatim.
	Problem json.RawMessage `json:"problem,omitempty"`
	// Fallbacks are the ACME clients still to try if this one fails.
	Fallbacks []string `json:"fallback_issuer_ids,omitempty"`
}

type authzData struct {
	URL           string `json:"url"`
	Identifier    string `json:"identifier"`
	Challenge     string `json:"challenge,omitempty"`
	ChallengeURL  string `json:"challenge_url,omitempty"`
	Token         string `json:"token,omitempty"`
	DNSProviderID string `json:"dns_provider_id,omitempty"`
	Step          string `json:"step,omitempty"`
	Initiated     bool   `json:"initiated,omitempty"`
	// PropagationMS is how long the DNS record took to reach every
	// authoritative nameserver.
	PropagationMS int64 `json:"propagation_ms,omitempty"`
}

func decodeData(raw json.RawMessage) (*orderData, error) {
	d := &orderData{}
	if len(raw) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(raw, d); err != nil {
		return d, fmt.Errorf("decoding workflow data: %w", err)
	}
	return d, nil
}

func (d *orderData) encode() (json.RawMessage, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encoding workflow data: %w", err)
	}
	return b, nil
}

// session is one run of a workflow.
type session struct {
	e    *Engine
	w    *storage.Workflow
	d    *orderData
	deps *Deps
	cl   *acme.Client
	acct acme.Account
	ra   *retryAfterSink
	log  *zap.Logger
}

// advance moves w forward until it is terminal, scheduled for retry, or
// an error stops it.
func (e *Engine) advance(ctx context.Context, w *storage.Workflow) error {
	d, err := decodeData(w.Data)
	if err != nil {
		return err
	}
	deps := e.deps.Load()
	if deps == nil || deps.Clients == nil {
		return errors.New("workflow engine has no ACME clients configured")
	}
	s := &session{e: e, w: w, d: d, deps: deps, log: e.log.With(zap.String("workflow_id", w.ID))}
	if w.State == storage.StateRetryScheduled {
		w.State = d.Resume
		if w.State == "" {
			w.State = storage.StateOrdering
		}
		if err := e.persist(ctx, w, d, storage.WorkflowEvent{Step: "resumed", Message: fmt.Sprintf("attempt %d", w.Attempt+1)}); err != nil {
			return err
		}
	}
	if storage.IsTerminal(w.State) {
		return nil
	}
	s.ra = &retryAfterSink{}
	cl, acct, err := deps.Clients.Client(ctx, w.IssuerID)
	if err != nil {
		return s.failOrRetry(ctx, "ordering", "", err)
	}
	s.cl, s.acct = s.withSinkClient(cl), acct
	for !storage.IsTerminal(w.State) && w.State != storage.StateRetryScheduled {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		switch w.State {
		case storage.StatePending:
			w.State = storage.StateOrdering
			err = e.persist(ctx, w, d, storage.WorkflowEvent{Step: "started", Message: "workflow started"})
		case storage.StateOrdering:
			err = s.order(ctx)
		case storage.StateAuthorizing:
			err = s.authorize(ctx)
		case storage.StateFinalizing:
			err = s.finalize(ctx)
		case storage.StateDownloading:
			err = s.download(ctx)
		default:
			return s.fail(ctx, w.State, "", fmt.Sprintf("unknown state %q", w.State), nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// order creates the order, or resumes the stored one.
func (s *session) order(ctx context.Context) error {
	w, d := s.w, s.d
	var order acme.Order
	if w.OrderURL != "" {
		o, err := s.cl.GetOrder(ctx, s.acct, acme.Order{Location: w.OrderURL})
		if err != nil {
			return s.failOrRetry(ctx, "ordering", "", err)
		}
		order = o
		order.Location = w.OrderURL
		if order.Status == "invalid" || (!order.Expires.IsZero() && order.Expires.Before(s.e.opts.Clock())) {
			// the stored order is unusable: start a new one
			w.OrderURL, d.Authzs, d.Finalize, d.CertURL = "", nil, "", ""
			return s.e.persist(ctx, w, d, storage.WorkflowEvent{Step: "ordering", Message: "the stored order is " + order.Status + "; placing a new order",
				Problem: problemJSON(order.Error)})
		}
	} else {
		o := acme.Order{Profile: w.Profile, Replaces: d.Replaces}
		for _, id := range w.Identifiers {
			o.Identifiers = append(o.Identifiers, acme.Identifier{Type: id.Type, Value: id.Value})
		}
		start := s.e.opts.Clock()
		created, err := s.cl.NewOrder(ctx, s.acct, o)
		var p acme.Problem
		if err != nil && d.Replaces != "" && errors.As(err, &p) && strings.HasSuffix(p.Type, ":alreadyReplaced") {
			// an earlier successor already replaced that certificate at the
			// CA: order without the ARI link
			d.Replaces = ""
			return s.e.persist(ctx, w, d, storage.WorkflowEvent{Step: "ordering", Problem: problemJSON(&p),
				Message: "the CA says the certificate was already replaced; ordering without replaces"})
		}
		if err != nil {
			return s.failOrRetry(ctx, "ordering", "", err)
		}
		order = created
		w.OrderURL = created.Location
		d.Orders++
		d.Authzs = nil
		for _, u := range created.Authorizations {
			d.Authzs = append(d.Authzs, authzData{URL: u})
		}
		d.Finalize = created.Finalize
		if err := s.e.persist(ctx, w, d, storage.WorkflowEvent{Step: "ordering", Message: "order created at the CA: " + created.Status,
			Duration: s.e.opts.Clock().Sub(start)}); err != nil {
			return err
		}
	}
	d.Finalize = order.Finalize
	switch order.Status {
	case "pending":
		w.State = storage.StateAuthorizing
	case "ready", "processing":
		w.State = storage.StateFinalizing
	case "valid":
		d.CertURL = order.Certificate
		w.State = storage.StateDownloading
	default:
		return s.fail(ctx, "ordering", "", fmt.Sprintf("the CA returned the order in status %q", order.Status), order.Error)
	}
	return s.e.persist(ctx, w, d, storage.WorkflowEvent{Step: "ordering", Message: "order " + order.Status})
}

// authorize satisfies every authorization of the order, one identifier
// at a time through presenting → propagating → validating → valid.
func (s *session) authorize(ctx context.Context) error {
	for i := range s.d.Authzs {
		if s.d.Authzs[i].Step == StepValid {
			continue
		}
		if err := s.authorizeOne(ctx, &s.d.Authzs[i]); err != nil {
			return err
		}
		if s.w.State != storage.StateAuthorizing {
			return nil // failed or scheduled for retry
		}
	}
	s.w.State = storage.StateFinalizing
	return s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: "authorizing", Message: "all identifiers authorized"})
}

func (s *session) authorizeOne(ctx context.Context, a *authzData) error {
	authz, err := s.cl.GetAuthorization(ctx, s.acct, a.URL)
	if err != nil {
		return s.failOrRetry(ctx, "authorizing", a.Identifier, err)
	}
	a.Identifier = authz.IdentifierValue()
	switch authz.Status {
	case "valid":
		a.Step = StepValid
		return s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: StepValid, Identifier: a.Identifier, Message: "already authorized"})
	case "pending":
	default:
		return s.fail(ctx, StepValidating, a.Identifier, "authorization is "+authz.Status, authzProblem(authz))
	}
	id := s.identifierFor(authz)
	if id == nil {
		return s.fail(ctx, "authorizing", a.Identifier, "the CA asked to authorize "+a.Identifier+", which the workflow does not name", nil)
	}
	want := id.Challenge
	if want == "" {
		want = ChallengeHTTP01
		if authz.Wildcard {
			want = ChallengeDNS01
		}
	}
	var chal *acme.Challenge
	for i := range authz.Challenges {
		if authz.Challenges[i].Type == want {
			chal = &authz.Challenges[i]
		}
	}
	if chal == nil {
		return s.fail(ctx, "authorizing", a.Identifier, fmt.Sprintf("the CA offers no %s challenge for %s", want, a.Identifier), nil)
	}
	a.Challenge, a.ChallengeURL, a.Token, a.DNSProviderID = want, chal.URL, chal.Token, id.DNSProviderID

	if a.Step == "" || a.Step == StepPresenting {
		a.Step = StepPresenting
		if err := s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: StepPresenting, Identifier: a.Identifier, Message: "presenting the " + want + " challenge"}); err != nil {
			return err
		}
		start := s.e.opts.Clock()
		if err := s.present(ctx, a, *chal); err != nil {
			return s.failOrRetry(ctx, StepPresenting, a.Identifier, err)
		}
		a.Step = StepPropagating
		msg := "challenge response published"
		if want == ChallengeDNS01 {
			msg = "TXT record " + chal.DNS01TXTRecordName() + " published"
		}
		if err := s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: StepPropagating, Identifier: a.Identifier, Message: msg, Duration: s.e.opts.Clock().Sub(start)}); err != nil {
			return err
		}
	}
	if a.Step == StepPropagating {
		var dur time.Duration
		if want == ChallengeDNS01 {
			rec, err := s.record(ctx, a, *chal)
			if err != nil {
				return s.failOrRetry(ctx, StepPropagating, a.Identifier, err)
			}
			if dur, err = s.deps.DNS.WaitPropagation(ctx, rec); err != nil {
				return s.failOrRetry(ctx, StepPropagating, a.Identifier, err)
			}
			a.PropagationMS = dur.Milliseconds()
			s.e.opts.Metrics.propagated(dur)
		}
		a.Step = StepValidating
		msg := "ready for validation"
		if want == ChallengeDNS01 {
			msg = fmt.Sprintf("record served by every authoritative nameserver after %s", dur.Round(time.Millisecond))
		}
		if err := s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: StepValidating, Identifier: a.Identifier, Message: msg, Duration: dur}); err != nil {
			return err
		}
	}
	start := s.e.opts.Clock()
	if !a.Initiated && chal.Status == "pending" {
		if want == ChallengeDNS01 {
			// a retry may come after the janitor removed a stale record:
			// make sure it is (still, or again) published and served
			rec, err := s.record(ctx, a, *chal)
			if err != nil {
				return s.failOrRetry(ctx, StepPropagating, a.Identifier, err)
			}
			if _, err := s.deps.DNS.WaitPropagation(ctx, rec); err != nil {
				return s.failOrRetry(ctx, StepPropagating, a.Identifier, err)
			}
		}
		if _, err := s.cl.InitiateChallenge(ctx, s.acct, *chal); err != nil {
			return s.failOrRetry(ctx, StepValidating, a.Identifier, err)
		}
		a.Initiated = true
		if err := s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: StepValidating, Identifier: a.Identifier, Message: "asked the CA to validate"}); err != nil {
			return err
		}
	}
	final, err := s.pollAuthz(ctx, a.URL)
	if err != nil {
		return s.failOrRetry(ctx, StepValidating, a.Identifier, err)
	}
	if final.Status != "valid" {
		return s.fail(ctx, StepValidating, a.Identifier, "the CA did not validate "+a.Identifier, authzProblem(final))
	}
	a.Step = StepValid
	s.unpresent(ctx, a)
	return s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: StepValid, Identifier: a.Identifier,
		Message: "validated by the CA", Duration: s.e.opts.Clock().Sub(start)})
}

func (s *session) identifierFor(authz acme.Authorization) *storage.Identifier {
	name := authz.IdentifierValue() // "*.example.com" for wildcard authorizations
	for i, id := range s.w.Identifiers {
		if strings.EqualFold(id.Value, name) {
			return &s.w.Identifiers[i]
		}
	}
	return nil
}

// pollAuthz polls until the CA decides: first after 20 ms, doubling up to
// 2 s, or after the CA's Retry-After.
func (s *session) pollAuthz(ctx context.Context, url string) (acme.Authorization, error) {
	ctx, cancel := context.WithTimeout(ctx, s.e.settings().ValidationTimeout)
	defer cancel()
	wait := 20 * time.Millisecond
	for {
		s.ra.reset()
		authz, err := s.cl.GetAuthorization(ctx, s.acct, url)
		if err != nil {
			return authz, err
		}
		if authz.Status != "pending" && authz.Status != "processing" {
			return authz, nil
		}
		next := wait
		if ra := s.ra.get(); ra > 0 {
			next = ra
		}
		select {
		case <-ctx.Done():
			return authz, fmt.Errorf("waiting for the CA to validate: %w", ctx.Err())
		case <-time.After(next): // the CA's pace, not a fixed sleep
		}
		if wait *= 2; wait > 2*time.Second {
			wait = 2 * time.Second
		}
	}
}

// present publishes the challenge response.
func (s *session) present(ctx context.Context, a *authzData, chal acme.Challenge) error {
	switch a.Challenge {
	case ChallengeHTTP01:
		v, _ := json.Marshal(http01Entry{Identifier: a.Identifier, KeyAuth: chal.KeyAuthorization, WorkflowID: s.w.ID})
		return s.e.opts.Store.ACME().Set(ctx, HTTP01Bucket, chal.Token, v)
	case ChallengeDNS01:
		if s.deps.DNS == nil {
			return errors.New("no DNS provider clients are configured")
		}
		if a.DNSProviderID == "" {
			return fmt.Errorf("identifier %s uses dns-01 but names no DNS provider client", a.Identifier)
		}
		_, err := s.deps.DNS.Present(ctx, a.DNSProviderID, s.w.ID, chal.DNS01TXTRecordName(), chal.DNS01KeyAuthorization())
		return err
	}
	return fmt.Errorf("unsupported challenge type %q", a.Challenge)
}

// record finds the DNS record presented for a, presenting it again if a
// crash lost it between storing and publishing.
func (s *session) record(ctx context.Context, a *authzData, chal acme.Challenge) (*storage.ChallengeRecord, error) {
	fqdn, value := chal.DNS01TXTRecordName(), chal.DNS01KeyAuthorization()
	recs, err := s.e.opts.Store.DNSProviders().WorkflowRecords(ctx, s.w.ID)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.ProviderID == a.DNSProviderID && r.Value == value && strings.EqualFold(strings.TrimSuffix(r.Name, "."), strings.TrimSuffix(fqdn, ".")) {
			return r, nil
		}
	}
	return s.deps.DNS.Present(ctx, a.DNSProviderID, s.w.ID, fqdn, value)
}

// unpresent removes one identifier's challenge response once validated.
func (s *session) unpresent(ctx context.Context, a *authzData) {
	if a.Challenge == ChallengeHTTP01 && a.Token != "" {
		if err := s.e.opts.Store.ACME().Delete(ctx, HTTP01Bucket, a.Token); err != nil {
			s.log.Warn("removing http-01 response", zap.Error(err))
		}
	}
}

// cleanup removes everything the workflow published: its DNS records (of
// every provider it used) and its HTTP-01 responses. It is idempotent.
func (e *Engine) cleanup(ctx context.Context, w *storage.Workflow, d *orderData) {
	if deps := e.deps.Load(); deps != nil && deps.DNS != nil {
		if err := deps.DNS.CleanUpWorkflow(ctx, w.ID); err != nil {
			e.log.Warn("removing challenge records", zap.String("workflow_id", w.ID), zap.Error(err))
		}
	}
	if d != nil {
		for _, a := range d.Authzs {
			if a.Challenge == ChallengeHTTP01 && a.Token != "" {
				_ = e.opts.Store.ACME().Delete(ctx, HTTP01Bucket, a.Token)
			}
		}
	}
}

// finalize sends the CSR once the order is ready.
func (s *session) finalize(ctx context.Context) error {
	w, d := s.w, s.d
	order, err := s.cl.GetOrder(ctx, s.acct, acme.Order{Location: w.OrderURL})
	if err != nil {
		return s.failOrRetry(ctx, "finalizing", "", err)
	}
	order.Location = w.OrderURL
	start := s.e.opts.Clock()
	switch order.Status {
	case "ready":
		key, err := s.certKey(ctx)
		if errors.Is(err, errEnded) {
			return nil // failed and persisted
		}
		if err != nil {
			return err
		}
		csr, err := s.csr(key)
		if err != nil {
			return s.fail(ctx, "finalizing", "", err.Error(), nil)
		}
		if order, err = s.cl.FinalizeOrder(ctx, s.acct, order, csr); err != nil {
			return s.failOrRetry(ctx, "finalizing", "", err)
		}
	case "processing", "valid":
		if order.Status == "processing" {
			if order, err = s.cl.FinalizeOrder(ctx, s.acct, order, nil); err != nil && order.Status != "valid" {
				return s.failOrRetry(ctx, "finalizing", "", err)
			}
		}
	case "pending":
		w.State = storage.StateAuthorizing
		return s.e.persist(ctx, w, d, storage.WorkflowEvent{Step: "finalizing", Message: "order still needs authorizations"})
	default:
		return s.fail(ctx, "finalizing", "", "order is "+order.Status, order.Error)
	}
	if order.Status != "valid" || order.Certificate == "" {
		return s.fail(ctx, "finalizing", "", "the CA did not issue: order is "+order.Status, order.Error)
	}
	d.CertURL = order.Certificate
	w.State = storage.StateDownloading
	return s.e.persist(ctx, w, d, storage.WorkflowEvent{Step: "finalizing", Message: "certificate issued by the CA", Duration: s.e.opts.Clock().Sub(start)})
}

// certKey returns the workflow's certificate key, generating and storing
// it (sealed) before it is used.
func (s *session) certKey(ctx context.Context) (crypto.Signer, error) {
	if !s.w.PrivateKey.IsZero() {
		k, err := keys.Parse(s.w.PrivateKey.Reveal())
		if err != nil {
			if ferr := s.fail(ctx, "finalizing", "", "the stored certificate key cannot be read: "+err.Error(), nil); ferr != nil {
				return nil, ferr
			}
			return nil, errEnded
		}
		return k, nil
	}
	key, keyPEM, err := keys.Generate(keyTypeName(s.w.KeyType))
	if err != nil {
		return nil, err
	}
	s.w.PrivateKey = storage.NewSecret(keyPEM)
	if err := s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: "finalizing", Message: "certificate key generated (" + keyTypeName(s.w.KeyType) + ")"}); err != nil {
		return nil, err
	}
	return key, nil
}

func (s *session) csr(key crypto.Signer) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	for _, id := range s.w.Identifiers {
		switch id.Type {
		case "ip":
			ip := net.ParseIP(id.Value)
			if ip == nil {
				return nil, fmt.Errorf("invalid IP identifier %q", id.Value)
			}
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, id.Value)
		}
	}
	if len(tmpl.DNSNames) > 0 && len(tmpl.DNSNames[0]) <= 64 {
		tmpl.Subject = pkix.Name{CommonName: tmpl.DNSNames[0]}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	return der, nil
}

// download fetches the chain and hands it to the inventory.
func (s *session) download(ctx context.Context) error {
	w, d := s.w, s.d
	start := s.e.opts.Clock()
	chains, err := s.cl.GetCertificateChain(ctx, s.acct, d.CertURL)
	if err != nil {
		return s.failOrRetry(ctx, "downloading", "", err)
	}
	if len(chains) == 0 {
		return s.failOrRetry(ctx, "downloading", "", errors.New("the CA returned no certificate chain"))
	}
	chain := chains[0].ChainPEM
	if s.deps.Inventory == nil {
		return s.failOrRetry(ctx, "downloading", "", errors.New("no inventory configured"))
	}
	cert, err := s.deps.Inventory.AddIssued(ctx, chain, s.w.PrivateKey.Reveal(), w.IssuerID, w.ID, w.Profile)
	if err != nil {
		return s.failOrRetry(ctx, "downloading", "", err)
	}
	// clean up before the final persist: a crash in between redoes the
	// (idempotent) download and cleanup instead of leaving records behind
	s.e.cleanup(ctx, w, d)
	w.CertificateID = cert.ID
	w.State = storage.StateIssued
	w.Status = "issued: " + cert.ID
	if err := s.e.persist(ctx, w, d, storage.WorkflowEvent{Step: "downloading", Message: "certificate stored in the inventory as " + cert.ID,
		Duration: s.e.opts.Clock().Sub(start)}); err != nil {
		return err
	}
	s.e.opts.Metrics.issued(w.IssuerID, s.e.opts.Clock().Sub(w.CreatedAt))
	s.e.emit("certlocker.cert_issued", map[string]any{"workflow_id": w.ID, "certificate_id": cert.ID, "issuer_id": w.IssuerID,
		"names": cert.Names, "not_after": cert.NotAfter})
	s.log.Info("certificate obtained", zap.String("certificate_id", cert.ID), zap.Strings("identifier", cert.Names))
	return nil
}

// fail ends the workflow with the CA's problem, or moves it to the next
// fallback ACME client if its policy names one.
func (s *session) fail(ctx context.Context, step, identifier, msg string, p *acme.Problem) error {
	if len(s.d.Fallbacks) > 0 {
		return s.fallBack(ctx, step, identifier, msg, p)
	}
	s.w.State = storage.StateFailed
	s.w.Status = msg
	if p != nil && p.Detail != "" {
		s.w.Status = msg + ": " + p.Detail
	}
	s.d.Problem = problemJSON(p)
	if p != nil {
		s.e.opts.Metrics.caError(p.Type)
	}
	s.e.cleanup(ctx, s.w, s.d) // before the terminal persist, as in download
	if err := s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: step, Identifier: identifier, Message: s.w.Status, Problem: problemJSON(p)}); err != nil {
		return err
	}
	s.e.emit("certlocker.workflow_failed", map[string]any{"workflow_id": s.w.ID, "message": s.w.Status, "issuer_id": s.w.IssuerID})
	s.log.Warn("workflow failed", zap.String("step", step), zap.String("identifier", identifier), zap.String("message", s.w.Status))
	return nil
}

// fallBack starts the order over on the next fallback ACME client.
func (s *session) fallBack(ctx context.Context, step, identifier, msg string, p *acme.Problem) error {
	from := s.w.IssuerID
	s.e.cleanup(ctx, s.w, s.d)
	s.w.IssuerID, s.d.Fallbacks = s.d.Fallbacks[0], s.d.Fallbacks[1:]
	s.w.OrderURL, s.d.Authzs, s.d.Finalize, s.d.CertURL, s.d.Replaces = "", nil, "", "", ""
	s.w.Profile = "" // profiles are per CA
	s.w.Attempt, s.w.State, s.w.NextRunAt = 0, storage.StateRetryScheduled, s.e.opts.Clock()
	s.d.Resume, s.d.Problem = storage.StateOrdering, problemJSON(p)
	s.w.Status = "falling back to ACME client " + s.w.IssuerID + " after: " + msg
	if p != nil && p.Detail != "" {
		s.w.Status += ": " + p.Detail
	}
	if p != nil {
		s.e.opts.Metrics.caError(p.Type)
	}
	s.log.Warn("falling back to another ACME client", zap.String("from", from), zap.String("issuer", s.w.IssuerID), zap.String("step", step))
	return s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: step, Identifier: identifier, Message: s.w.Status, Problem: problemJSON(p)})
}

// failOrRetry schedules a retry for transient errors and fails the
// workflow for permanent ones. Context cancellation is passed up.
func (s *session) failOrRetry(ctx context.Context, step, identifier string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, storage.ErrConflict) {
		return err
	}
	var p acme.Problem
	var pp *acme.Problem
	if errors.As(err, &p) {
		pp = &p
	}
	ptype := ""
	if pp != nil {
		ptype = pp.Type
	}
	s.w.Attempt++
	at, ok := NextRetry(s.e.settings().Retry, s.w.Attempt, ptype, s.ra.get(), s.e.opts.Clock(), jitter())
	if !ok {
		return s.fail(ctx, step, identifier, describe(step, err), pp)
	}
	s.e.opts.Metrics.caError(ptype)
	s.d.Resume = s.w.State
	s.d.Problem = problemJSON(pp)
	s.w.State = storage.StateRetryScheduled
	s.w.NextRunAt = at
	s.w.Status = describe(step, err)
	return s.e.persist(ctx, s.w, s.d, storage.WorkflowEvent{Step: step, Identifier: identifier,
		Message: fmt.Sprintf("%s; retry %d at %s", s.w.Status, s.w.Attempt, at.UTC().Format(time.RFC3339)),
		Problem: problemJSON(pp), RetryAfter: s.ra.get()})
}

func describe(step string, err error) string {
	var p acme.Problem
	if errors.As(err, &p) {
		return fmt.Sprintf("%s: the CA answered %s: %s", step, strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:"), p.Detail)
	}
	return fmt.Sprintf("%s: %v", step, err)
}

func problemJSON(p *acme.Problem) json.RawMessage {
	if p == nil || (p.Type == "" && p.Detail == "") {
		return nil
	}
	b, _ := json.Marshal(p)
	return b
}

// authzProblem finds the CA's reason an authorization failed.
func authzProblem(a acme.Authorization) *acme.Problem {
	for _, c := range a.Challenges {
		if c.Error != nil {
			return c.Error
		}
	}
	return nil
}

// ValidKeyType reports whether t names a supported certificate key type
// ("" means the default, P-256).
func ValidKeyType(t string) bool { return t == "" || keys.Valid(t) }

func keyTypeName(t string) string {
	if t == "" {
		return keys.P256
	}
	return t
}

// HTTP01Bucket is where pending HTTP-01 responses live (ACME state store),
// keyed by token, so every node can answer.
const HTTP01Bucket = "certlocker_http01"

type http01Entry struct {
	Identifier string `json:"identifier"`
	KeyAuth    string `json:"key_authorization"`
	WorkflowID string `json:"workflow_id"`
}
