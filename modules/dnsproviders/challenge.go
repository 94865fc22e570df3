package dnsproviders

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/retry"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Present publishes a TXT record for fqdn with value through the provider
// client providerID, on behalf of workflowID ("" for none). It stores the
// record's identity (zone, name, value) before publishing, so a crash at
// any point leaves a record that CleanUp, CleanUpWorkflow or the Janitor
// can remove. If publishing fails, the returned record is not nil (unless
// nothing was stored) and the caller should still CleanUp it: the provider
// may have kept the record although its answer was lost.
func (s *Service) Present(ctx context.Context, providerID, workflowID, fqdn, value string) (*storage.ChallengeRecord, error) {
	name := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(fqdn)), ".")
	if name == "" || value == "" {
		return nil, inputErr("fqdn", "presenting a challenge record needs a name and a value")
	}
	p, err := s.store.DNSProviders().Get(ctx, providerID)
	if err != nil {
		return nil, err
	}
	zone, origin := zoneFor(p.Zones, name), ""
	if zone == "" && p.Type == TypeDelegated {
		// published under the name's label in the challenge zone, once
		// the name's CNAME is seen pointing there
		d, err := s.delegate(ctx, p, name)
		if err != nil {
			return nil, err
		}
		zone, name, origin = d.Zone, d.Target, d.Record
	}
	if zone == "" {
		return nil, fmt.Errorf("%s is outside the zones of DNS provider %q (%s): %w", name, p.Name, strings.Join(p.Zones, ", "), ErrOutsideZones)
	}
	lp, err := s.live(p)
	if err != nil {
		return nil, err
	}
	rec := &storage.ChallengeRecord{ProviderID: p.ID, WorkflowID: workflowID, Zone: zone, Name: relativeName(name, zone),
		Type: "TXT", Value: value, ProviderRecordID: origin, CreatedAt: s.now()}
	if err := s.store.DNSProviders().PutRecord(ctx, rec); err != nil {
		return nil, fmt.Errorf("storing challenge record %s before publishing it: %w", name, err)
	}
	start := time.Now()
	if _, err := s.appendRecord(ctx, lp, zone, libdns.TXT{Name: rec.Name, TTL: p.TTL, Text: value}); err != nil {
		s.logger.Warn("publishing challenge record failed", zap.String("dns_provider", p.Name), zap.String("fqdn", absoluteName(rec.Name, zone)),
			zap.String("workflow_id", workflowID), zap.Error(err))
		return rec, err
	}
	rec.PublishedAt = s.now()
	if err := s.store.DNSProviders().PutRecord(ctx, rec); err != nil {
		return rec, fmt.Errorf("recording challenge record %s as published: %w", name, err)
	}
	if ce := s.logger.Check(zap.DebugLevel, "challenge record published"); ce != nil {
		ce.Write(zap.String("dns_provider", p.Name), zap.String("fqdn", absoluteName(rec.Name, zone)), zap.String("zone", zone),
			zap.String("workflow_id", workflowID), zap.Duration("duration", time.Since(start)))
	}
	return rec, nil
}

// CleanUp removes the record from DNS and forgets it. Removing a record
// that is already gone is not an error, so CleanUp may be called again
// after a failure or a crash. When removal fails, the record stays stored
// with the failure counted, for a later CleanUp or the Janitor; when ctx
// ends first, it stays uncounted.
func (s *Service) CleanUp(ctx context.Context, rec *storage.ChallengeRecord) error {
	dp := s.store.DNSProviders()
	p, err := dp.Get(ctx, rec.ProviderID)
	if errors.Is(err, storage.ErrNotFound) {
		s.logger.Warn("forgetting a challenge record whose DNS provider is gone",
			zap.String("fqdn", absoluteName(rec.Name, rec.Zone)), zap.String("dns_provider_id", rec.ProviderID))
		return dp.DeleteRecord(ctx, rec.ID)
	}
	if err != nil {
		return err
	}
	lp, err := s.live(p)
	if err == nil {
		err = s.deleteRecord(ctx, lp, rec.Zone, libdns.TXT{Name: rec.Name, Text: rec.Value})
	}
	if err != nil && ctx.Err() != nil {
		// stopped, not failed: the record stays for the next CleanUp or
		// Janitor run, its failure count unchanged
		return err
	}
	if err != nil {
		rec.CleanupAttempts++
		rec.LastError = err.Error()
		if perr := dp.PutRecord(context.WithoutCancel(ctx), rec); perr != nil {
			s.logger.Error("recording a failed challenge record removal", zap.Error(perr))
		}
		return err
	}
	if err := dp.DeleteRecord(ctx, rec.ID); err != nil {
		return fmt.Errorf("forgetting removed challenge record %s: %w", absoluteName(rec.Name, rec.Zone), err)
	}
	if ce := s.logger.Check(zap.DebugLevel, "challenge record removed"); ce != nil {
		ce.Write(zap.String("dns_provider", p.Name), zap.String("fqdn", absoluteName(rec.Name, rec.Zone)),
			zap.String("workflow_id", rec.WorkflowID))
	}
	return nil
}

// CleanUpWorkflow removes every challenge record a workflow left, e.g. when
// the engine resumes or ends it. It tries them all and returns the first
// failure.
func (s *Service) CleanUpWorkflow(ctx context.Context, workflowID string) error {
	recs, err := s.store.DNSProviders().WorkflowRecords(ctx, workflowID)
	if err != nil {
		return err
	}
	var first error
	for _, r := range recs {
		if err := s.CleanUp(ctx, r); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// JanitorResult counts what a Janitor run did.
type JanitorResult struct {
	Removed int `json:"removed"`
	Failed  int `json:"failed"`
}

// Janitor removes the challenge records CertLocker stored more than
// olderThan ago and has not cleaned up (a crash, a lost cleanup, a failed
// removal). It works from the stored records only, removing each exact
// name and value it published, so it never touches a record it did not
// create, even one with the same name.
func (s *Service) Janitor(ctx context.Context, olderThan time.Duration) (JanitorResult, error) {
	var res JanitorResult
	recs, err := s.store.DNSProviders().ListRecords(ctx, "", s.now().Add(-olderThan))
	if err != nil {
		return res, err
	}
	for _, r := range recs {
		if err := s.CleanUp(ctx, r); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Failed++
			s.logger.Warn("removing a stale challenge record failed", zap.String("fqdn", absoluteName(r.Name, r.Zone)),
				zap.String("workflow_id", r.WorkflowID), zap.Int("attempt", r.CleanupAttempts), zap.Error(err))
			continue
		}
		res.Removed++
	}
	if res.Removed > 0 || res.Failed > 0 {
		s.logger.Info("stale challenge records cleaned up", zap.Int("removed", res.Removed), zap.Int("failed", res.Failed))
	}
	return res, nil
}

// RunJanitor runs the Janitor after delay and then every interval until ctx
// ends, removing records older than olderThan; an interval or age of zero
// or less takes DefaultJanitorEvery or DefaultJanitorAge. It blocks, so run
// it in its own goroutine, and stop it by cancelling ctx: it returns as soon
// as it sees ctx done, between runs or within one (a removal in flight is
// abandoned and left to the next run, on this node or another).
func (s *Service) RunJanitor(ctx context.Context, delay, interval, olderThan time.Duration) {
	if interval <= 0 {
		interval = DefaultJanitorEvery // never spin
	}
	if olderThan <= 0 {
		olderThan = DefaultJanitorAge // never race a challenge in flight
	}
	wait := delay
	for {
		if err := retry.Sleep(ctx, wait); err != nil {
			return
		}
		if _, err := s.Janitor(ctx, olderThan); err != nil && ctx.Err() == nil {
			s.logger.Error("challenge record janitor failed", zap.Error(err))
		}
		wait = interval
	}
}
