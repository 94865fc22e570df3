package workflow

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

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
	iss  *storage.Issuer

	// live holds what the CA said about each authorization in this run,
	// by the index of d.Authzs; nil until the authorizations are fetched.
	live []liveAuthz

	// mu serialises persists and changes to d made while authorizations
	// progress concurrently; broken is the first persist error, after
	// which nothing more is persisted (a crash, a lost lease).
	mu     sync.Mutex
	broken error
}

// liveAuthz is an authorization as the CA last described it in this run.
type liveAuthz struct {
	authz acme.Authorization
	chal  acme.Challenge
	// propagated is set once this run saw the DNS record served by every
	// authoritative nameserver.
	propagated bool
}

// action is what the advance loop does next.
type action int

const (
	actWait       action = iota // terminal or scheduled for a retry: stop
	actStart                    // pending → ordering
	actOrder                    // place the order or resume the stored one
	actFetch                    // read the order's authorizations from the CA
	actPresent                  // publish the challenge responses
	actPropagate                // wait until the DNS records are served
	actInitiate                 // ask the CA to validate
	actPoll                     // wait for the CA's decisions
	actAuthorized               // every authorization is valid → finalizing
	actFinalize                 // send the CSR, or wait for the CA to issue
	actDownload                 // fetch the chain into the inventory
	actUnknown                  // a state this engine does not know
)

var actionNames = [...]string{"wait", "start", "order", "fetch", "present", "propagate", "initiate", "poll",
	"authorized", "finalize", "download", "unknown"}

func (a action) String() string { return actionNames[a] }

// step is the next thing to do: an action and, inside the authorizing
// state, the authorizations (indexes into orderData.Authzs) it applies to.
type step struct {
	act    action
	authzs []int
}

// nextStep decides what comes next from the persisted state alone (and
// whether this run has read the authorizations from the CA yet). Inside
// authorizing, every authorization moves through one phase together: all
// are presented before any propagation wait, all propagation waits run at
// once, then the CA is asked to validate them all and they are polled
// together, so an order takes as long as its slowest identifier rather
// than the sum of them.
func nextStep(state string, d *orderData, fetched bool) step {
	switch state {
	case storage.StatePending:
		return step{act: actStart}
	case storage.StateOrdering:
		return step{act: actOrder}
	case storage.StateAuthorizing:
		return authorizingStep(d, fetched)
	case storage.StateFinalizing:
		return step{act: actFinalize}
	case storage.StateDownloading:
		return step{act: actDownload}
	case storage.StateRetryScheduled:
		return step{act: actWait}
	}
	if storage.IsTerminal(state) {
		return step{act: actWait}
	}
	return step{act: actUnknown}
}

func authorizingStep(d *orderData, fetched bool) step {
	var todo, present, propagate, initiate, poll []int
	for i, a := range d.Authzs {
		switch {
		case a.Step == StepValid:
			continue
		case a.Step == "" || a.Step == StepPresenting:
			present = append(present, i)
		case a.Step == StepPropagating:
			propagate = append(propagate, i)
		case !a.Initiated:
			initiate = append(initiate, i)
		default:
			poll = append(poll, i)
		}
		todo = append(todo, i)
	}
	switch {
	case len(todo) == 0:
		return step{act: actAuthorized}
	case !fetched:
		return step{act: actFetch, authzs: todo}
	case len(present) > 0:
		return step{act: actPresent, authzs: present}
	case len(propagate) > 0:
		return step{act: actPropagate, authzs: propagate}
	case len(initiate) > 0:
		return step{act: actInitiate, authzs: initiate}
	}
	return step{act: actPoll, authzs: poll}
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
		if err := s.save(ctx, storage.WorkflowEvent{Step: "resumed", Message: fmt.Sprintf("attempt %d", w.Attempt+1)}); err != nil {
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
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		next := nextStep(w.State, d, s.live != nil)
		var err error
		switch next.act {
		case actWait:
			return nil
		case actStart:
			w.State = storage.StateOrdering
			err = s.save(ctx, storage.WorkflowEvent{Step: "started", Message: "workflow started"})
		case actOrder:
			s.live = nil
			err = s.order(ctx)
		case actFetch:
			s.live = make([]liveAuthz, len(d.Authzs))
			if err = s.eachAuthz(ctx, next.authzs, requestsAtOnce, s.fetchAuthz); err != nil {
				s.live = nil
			}
		case actPresent:
			err = s.eachAuthz(ctx, next.authzs, requestsAtOnce, s.presentAuthz)
		case actPropagate:
			err = s.eachAuthz(ctx, next.authzs, 0, s.propagateAuthz)
		case actInitiate:
			err = s.eachAuthz(ctx, next.authzs, requestsAtOnce, s.initiateAuthz)
		case actPoll:
			err = s.eachAuthz(ctx, next.authzs, requestsAtOnce, s.pollAuthzDone)
		case actAuthorized:
			if w.Trigger == TriggerPreauthorization {
				err = s.authorized(ctx)
				break
			}
			w.State = storage.StateFinalizing
			err = s.save(ctx, storage.WorkflowEvent{Step: "authorizing", Message: "all identifiers authorized"})
		case actFinalize:
			err = s.finalize(ctx)
		case actDownload:
			err = s.download(ctx)
		default:
			return s.fail(ctx, w.State, "", fmt.Sprintf("unknown state %q", w.State), nil)
		}
		if err != nil {
			return err
		}
	}
}

// save persists the workflow with a timeline event. After a failed
// persist (a crash in tests, a lost lease, a store error) it persists
// nothing more and returns that error again.
func (s *session) save(ctx context.Context, ev storage.WorkflowEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveLocked(ctx, ev)
}

func (s *session) saveLocked(ctx context.Context, ev storage.WorkflowEvent) error {
	if s.broken != nil {
		return s.broken
	}
	if err := ctx.Err(); err != nil {
		// stopped, or a concurrent authorization failed first: what is not
		// persisted is redone (idempotently) when the workflow resumes
		return err
	}
	if err := s.e.persist(ctx, s.w, s.d, ev); err != nil {
		if ctx.Err() == nil {
			s.broken = err
		}
		return err
	}
	return nil
}

// update changes authorization i and persists it with its event, under
// the session lock, so concurrent authorizations never race on the data.
func (s *session) update(ctx context.Context, i int, change func(a *authzData), ev storage.WorkflowEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.d.Authzs[i])
	if ev.Identifier == "" {
		ev.Identifier = s.d.Authzs[i].Identifier
	}
	return s.saveLocked(ctx, ev)
}

// change changes authorization i without persisting it (the next
// persist carries it), under the session lock.
func (s *session) change(i int, change func(a *authzData)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.d.Authzs[i])
}
