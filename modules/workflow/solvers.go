package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// HTTP01Bucket is where pending HTTP-01 responses live (ACME state store),
// keyed by token, so every node can answer.
const HTTP01Bucket = "certlocker_http01"

type http01Entry struct {
	Identifier string `json:"identifier"`
	KeyAuth    string `json:"key_authorization"`
	WorkflowID string `json:"workflow_id"`
}

// present publishes the challenge response; for dns-01 it returns the
// stored record. A DNS record an earlier run already published is reused,
// never published twice.
func (s *session) present(ctx context.Context, a *authzData, chal acme.Challenge) (*storage.ChallengeRecord, error) {
	switch a.Challenge {
	case ChallengeHTTP01:
		v, _ := json.Marshal(http01Entry{Identifier: a.Identifier, KeyAuth: chal.KeyAuthorization, WorkflowID: s.w.ID})
		return nil, s.e.opts.Store.ACME().Set(ctx, HTTP01Bucket, chal.Token, v)
	case ChallengeDNS01:
		if s.deps.DNS == nil {
			return nil, errors.New("no DNS provider clients are configured")
		}
		if a.DNSProviderID == "" {
			return nil, fmt.Errorf("identifier %s uses dns-01 but names no DNS provider client", a.Identifier)
		}
		return s.record(ctx, a, chal)
	}
	return nil, fmt.Errorf("unsupported challenge type %q", a.Challenge)
}

// record returns the published DNS record of a, publishing it if it is
// not (the first time, after a crash between storing and publishing it,
// or after the janitor removed it).
func (s *session) record(ctx context.Context, a *authzData, chal acme.Challenge) (*storage.ChallengeRecord, error) {
	value := chal.DNS01KeyAuthorization()
	recs, err := s.e.opts.Store.DNSProviders().WorkflowRecords(ctx, s.w.ID)
	if err != nil {
		return nil, fmt.Errorf("reading the workflow's challenge records: %w", err)
	}
	for _, r := range recs {
		// the record ID once known; before that, the value, which is
		// unique to the challenge (a wildcard and its apex share a name)
		if r.ProviderID != a.DNSProviderID || r.PublishedAt.IsZero() {
			continue
		}
		if (a.RecordID != "" && r.ID == a.RecordID) || (a.RecordID == "" && r.Value == value) {
			return r, nil
		}
	}
	return s.deps.DNS.Present(ctx, a.DNSProviderID, s.w.ID, chal.DNS01TXTRecordName(), value)
}

// unpresent removes one identifier's http-01 response once validated (DNS
// records go when the workflow ends, see cleanup).
func (s *session) unpresent(ctx context.Context, a *authzData) {
	if a.Challenge == ChallengeHTTP01 && a.Token != "" {
		if err := s.e.opts.Store.ACME().Delete(ctx, HTTP01Bucket, a.Token); err != nil {
			s.log.Warn("removing http-01 response", zap.String("identifier", a.Identifier), zap.Error(err))
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
