package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/storage"
)

// stepError is why one authorization could not go on: a failure the
// retry policy judges (err), or one that ends the workflow now (final,
// with msg and the CA's problem).
type stepError struct {
	step, identifier string
	err              error
	final            bool
	msg              string
	problem          *acme.Problem
	// retryAfter is the CA's Retry-After on the failed request, if any.
	retryAfter time.Duration
}

func (e *stepError) Error() string {
	if e.final {
		return e.step + ": " + e.msg
	}
	return e.step + ": " + e.err.Error()
}

func (e *stepError) Unwrap() error { return e.err }

func retryable(step, identifier string, err error) error {
	return &stepError{step: step, identifier: identifier, err: err}
}

func final(step, identifier, msg string, p *acme.Problem) error {
	return &stepError{step: step, identifier: identifier, final: true, msg: msg, problem: p}
}

// requestsAtOnce caps the requests one order sends to the CA or the DNS
// provider at the same time; propagation waits (DNS queries to the
// authoritative nameservers) are not capped, so they all overlap.
const requestsAtOnce = 8

// eachAuthz runs fn for the authorizations idx at once, at most limit at
// a time (0: no limit). The first failure stops the others (their context
// is cancelled) and decides the outcome: a persist error is returned as it
// is; a step error fails the workflow or schedules the retry, once, after
// every run has ended.
func (s *session) eachAuthz(ctx context.Context, idx []int, limit int, fn func(ctx context.Context, i int) error) error {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		slots chan struct{}
	)
	if limit > 0 {
		slots = make(chan struct{}, limit)
	}
	for _, i := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if slots != nil {
				select {
				case slots <- struct{}{}:
					defer func() { <-slots }()
				case <-gctx.Done():
					return
				}
			}
			if err := fn(gctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if first == nil {
		return nil
	}
	s.mu.Lock()
	broken := s.broken
	s.mu.Unlock()
	if broken != nil {
		return broken // nothing more may be persisted
	}
	var se *stepError
	if !errors.As(first, &se) {
		return first
	}
	if se.final {
		return s.fail(ctx, se.step, se.identifier, se.msg, se.problem)
	}
	if se.retryAfter > 0 {
		s.ra.set(se.retryAfter)
	}
	return s.failOrRetry(ctx, se.step, se.identifier, se.err)
}

// fetchAuthz reads authorization i from the CA and picks its challenge.
func (s *session) fetchAuthz(ctx context.Context, i int) error {
	a := s.d.Authzs[i]
	authz, err := s.cl.GetAuthorization(ctx, s.acct, a.URL)
	if err != nil {
		return retryable("authorizing", a.Identifier, err)
	}
	name := authz.IdentifierValue()
	switch authz.Status {
	case "valid":
		return s.update(ctx, i, func(a *authzData) { a.Identifier, a.Step = name, StepValid },
			storage.WorkflowEvent{Step: StepValid, Message: "already authorized"})
	case "pending":
	default:
		return final(StepValidating, name, "authorization is "+authz.Status, authzProblem(authz))
	}
	id := s.identifierFor(authz)
	if id == nil {
		return final("authorizing", name, "the CA asked to authorize "+name+", which the workflow does not name", nil)
	}
	want := id.Challenge
	if want == "" {
		want = ChallengeHTTP01
		if authz.Wildcard {
			want = ChallengeDNS01
		}
	}
	var chal *acme.Challenge
	for k := range authz.Challenges {
		if authz.Challenges[k].Type == want {
			chal = &authz.Challenges[k]
		}
	}
	if chal == nil {
		return final("authorizing", name, fmt.Sprintf("the CA offers no %s challenge for %s", want, name), nil)
	}
	s.live[i] = liveAuthz{authz: authz, chal: *chal}
	s.change(i, func(a *authzData) {
		a.Identifier, a.Challenge, a.ChallengeURL, a.Token, a.DNSProviderID = name, want, chal.URL, chal.Token, id.DNSProviderID
		if a.Initiated && chal.Status == "pending" {
			a.Initiated = false // the CA never took up the request: ask again
		}
	})
	return nil
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

// presentAuthz publishes the challenge response of authorization i.
func (s *session) presentAuthz(ctx context.Context, i int) error {
	a, chal := s.d.Authzs[i], s.live[i].chal
	if a.Step == "" {
		if err := s.update(ctx, i, func(a *authzData) { a.Step = StepPresenting },
			storage.WorkflowEvent{Step: StepPresenting, Message: "presenting the " + a.Challenge + " challenge"}); err != nil {
			return err
		}
	}
	start := s.e.opts.Clock()
	rec, err := s.present(ctx, &a, chal)
	if err != nil {
		return retryable(StepPresenting, a.Identifier, err)
	}
	msg := "challenge response published"
	if a.Challenge == ChallengeDNS01 {
		msg = "TXT record " + chal.DNS01TXTRecordName() + " published"
	}
	return s.update(ctx, i, func(a *authzData) {
		a.Step = StepPropagating
		if rec != nil {
			a.RecordID = rec.ID
		}
	}, storage.WorkflowEvent{Step: StepPropagating, Message: msg, Duration: s.e.opts.Clock().Sub(start)})
}

// propagateAuthz waits until authorization i's DNS record is served by
// every authoritative nameserver (at once for http-01).
func (s *session) propagateAuthz(ctx context.Context, i int) error {
	a, chal := s.d.Authzs[i], s.live[i].chal
	msg := "ready for validation"
	var dur time.Duration
	if a.Challenge == ChallengeDNS01 {
		var err error
		if dur, err = s.servedRecord(ctx, i); err != nil {
			return err
		}
		s.e.opts.Metrics.propagated(dur)
		msg = fmt.Sprintf("record %s served by every authoritative nameserver after %s", chal.DNS01TXTRecordName(), dur.Round(time.Millisecond))
	}
	return s.update(ctx, i, func(a *authzData) {
		a.Step = StepValidating
		a.PropagationMS = dur.Milliseconds()
	}, storage.WorkflowEvent{Step: StepValidating, Message: msg, Duration: dur})
}

// servedRecord finds authorization i's stored DNS record (presenting it
// again only if it was lost) and waits until it is served.
func (s *session) servedRecord(ctx context.Context, i int) (time.Duration, error) {
	a, chal := s.d.Authzs[i], s.live[i].chal
	rec, err := s.record(ctx, &a, chal)
	if err != nil {
		return 0, retryable(StepPropagating, a.Identifier, err)
	}
	if rec.ID != a.RecordID {
		s.change(i, func(a *authzData) { a.RecordID = rec.ID })
	}
	dur, err := s.deps.DNS.WaitPropagation(ctx, rec)
	if err != nil {
		return dur, retryable(StepPropagating, a.Identifier, err)
	}
	s.live[i].propagated = true
	return dur, nil
}

// initiateAuthz asks the CA to validate authorization i.
func (s *session) initiateAuthz(ctx context.Context, i int) error {
	a, l := s.d.Authzs[i], s.live[i]
	if l.chal.Status == "pending" {
		if a.Challenge == ChallengeDNS01 && !l.propagated {
			// an earlier run saw the record served, but a retry may come
			// after the janitor removed it: make sure it is still served
			if _, err := s.servedRecord(ctx, i); err != nil {
				return err
			}
		}
		if _, err := s.cl.InitiateChallenge(ctx, s.acct, l.chal); err != nil {
			return retryable(StepValidating, a.Identifier, err)
		}
	}
	return s.update(ctx, i, func(a *authzData) { a.Initiated = true },
		storage.WorkflowEvent{Step: StepValidating, Message: "asked the CA to validate"})
}

// pollAuthzDone waits for the CA's decision on authorization i.
func (s *session) pollAuthzDone(ctx context.Context, i int) error {
	a := s.d.Authzs[i]
	start := s.e.opts.Clock()
	ra := &retryAfterSink{}
	got, err := s.pollAuthz(withSink(ctx, ra), a.URL, ra)
	if err != nil {
		return &stepError{step: StepValidating, identifier: a.Identifier, err: err, retryAfter: ra.get()}
	}
	if got.Status != "valid" {
		return final(StepValidating, a.Identifier, "the CA did not validate "+a.Identifier, authzProblem(got))
	}
	s.unpresent(ctx, &a)
	return s.update(ctx, i, func(a *authzData) { a.Step = StepValid },
		storage.WorkflowEvent{Step: StepValid, Message: "validated by the CA", Duration: s.e.opts.Clock().Sub(start)})
}

// pollAuthz polls until the CA decides: first after 20 ms, doubling up to
// 2 s, or after the CA's Retry-After (read into ra).
func (s *session) pollAuthz(ctx context.Context, url string, ra *retryAfterSink) (acme.Authorization, error) {
	ctx, cancel := context.WithTimeout(ctx, s.e.settings().ValidationTimeout)
	defer cancel()
	var pace pollPacer
	for {
		ra.reset()
		authz, err := s.cl.GetAuthorization(ctx, s.acct, url)
		if err != nil {
			return authz, err
		}
		if authz.Status != "pending" && authz.Status != "processing" {
			return authz, nil
		}
		if err := pace.pause(ctx, ra, "validate"); err != nil {
			return authz, err
		}
	}
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
