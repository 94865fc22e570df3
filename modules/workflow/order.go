package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"

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

// orderData is the engine's persisted step data (Workflow.Data).
type orderData struct {
	Finalize string `json:"finalize,omitempty"`
	// FinalizeRequested is set once the CA accepted the CSR: from then on
	// the order is polled, never finalized again.
	FinalizeRequested bool        `json:"finalize_requested,omitempty"`
	CertURL           string      `json:"certificate_url,omitempty"`
	Authzs            []authzData `json:"authorizations,omitempty"`
	// Profile is the certificate profile the current order was placed
	// with: the workflow's own, or else its ACME client's.
	Profile string `json:"profile,omitempty"`
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
	// CSR is the edge's own CSR (DER) of a gateway workflow: it is sent
	// as is and no key is generated.
	CSR []byte `json:"csr,omitempty"`
	// AuthorizedUntil is when the first authorization of a finished
	// pre-authorization workflow expires at the CA.
	AuthorizedUntil time.Time `json:"authorized_until,omitzero"`
	// Alternates are the CA's other chains (PEM) for a gateway workflow's
	// certificate, which the gateway offers as Link rel="alternate".
	Alternates []string `json:"alternate_chains,omitempty"`
}

// authzData is one authorization of the order and how far it got.
type authzData struct {
	URL           string `json:"url"`
	Identifier    string `json:"identifier"`
	Challenge     string `json:"challenge,omitempty"`
	ChallengeURL  string `json:"challenge_url,omitempty"`
	Token         string `json:"token,omitempty"`
	DNSProviderID string `json:"dns_provider_id,omitempty"`
	// RecordID is the stored DNS challenge record presented for it.
	RecordID  string `json:"record_id,omitempty"`
	Step      string `json:"step,omitempty"`
	Initiated bool   `json:"initiated,omitempty"`
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

// resetOrder forgets the current order, so the next step places a new one.
func (d *orderData) resetOrder(w *storage.Workflow) {
	w.OrderURL = ""
	d.Authzs, d.Finalize, d.FinalizeRequested, d.CertURL, d.Profile = nil, "", false, "", ""
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
			d.resetOrder(w)
			return s.save(ctx, storage.WorkflowEvent{Step: "ordering", Message: "the stored order is " + order.Status + "; placing a new order",
				Problem: problemJSON(order.Error)})
		}
	} else {
		profile, err := s.profile(ctx)
		if err != nil {
			return s.failOrRetry(ctx, "ordering", "", err)
		}
		o := acme.Order{Profile: profile, Replaces: d.Replaces}
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
			return s.save(ctx, storage.WorkflowEvent{Step: "ordering", Problem: problemJSON(&p),
				Message: "the CA says the certificate was already replaced; ordering without replaces"})
		}
		if err != nil {
			return s.failOrRetry(ctx, "ordering", "", err)
		}
		order = created
		d.resetOrder(w)
		w.OrderURL = created.Location
		d.Orders++
		d.Profile = profile
		for _, u := range created.Authorizations {
			d.Authzs = append(d.Authzs, authzData{URL: u})
		}
		msg := "order created at the CA: " + created.Status
		if profile != "" {
			msg += " (profile " + profile + ")"
		}
		if err := s.save(ctx, storage.WorkflowEvent{Step: "ordering", Message: msg,
			Duration: s.e.opts.Clock().Sub(start)}); err != nil {
			return err
		}
	}
	d.Finalize = order.Finalize
	switch order.Status {
	case "pending":
		w.State = storage.StateAuthorizing
	case "ready", "processing":
		if w.Trigger == TriggerPreauthorization {
			w.State = storage.StateAuthorizing // records the authorizations' expiry, never finalizes
			break
		}
		w.State = storage.StateFinalizing
	case "valid":
		d.CertURL = order.Certificate
		w.State = storage.StateDownloading
	default:
		return s.fail(ctx, "ordering", "", fmt.Sprintf("the CA returned the order in status %q", order.Status), order.Error)
	}
	return s.save(ctx, storage.WorkflowEvent{Step: "ordering", Message: "order " + order.Status})
}

// profile is the certificate profile to order: the workflow's own, or
// else its ACME client's.
func (s *session) profile(ctx context.Context) (string, error) {
	if s.w.Profile != "" {
		return s.w.Profile, nil
	}
	iss, err := s.issuer(ctx)
	if err != nil {
		return "", err
	}
	return iss.Profile, nil
}

// issuer reads the workflow's ACME client record, once per session.
func (s *session) issuer(ctx context.Context) (*storage.Issuer, error) {
	if s.iss != nil && s.iss.ID == s.w.IssuerID {
		return s.iss, nil
	}
	iss, err := s.e.opts.Store.Issuers().Get(ctx, s.w.IssuerID)
	if err != nil {
		return nil, fmt.Errorf("reading ACME client %s: %w", s.w.IssuerID, err)
	}
	s.iss = iss
	return iss, nil
}
