package workflow

import (
	"encoding/json"
	"sync"

	"github.com/certlocker/caddy-certlocker/storage"
)

// watchers wake readers of a workflow's timeline (the API's Server-Sent
// Events) when this node persists a step of it. Steps persisted by other
// nodes are found by the readers' own periodic look at the store.
type watchers struct {
	mu sync.Mutex
	m  map[string]map[chan struct{}]struct{}
}

// Watch returns a channel that receives a value whenever this node
// persists a change to the workflow, and a function to stop watching.
func (e *Engine) Watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	e.watch.mu.Lock()
	if e.watch.m == nil {
		e.watch.m = map[string]map[chan struct{}]struct{}{}
	}
	if e.watch.m[id] == nil {
		e.watch.m[id] = map[chan struct{}]struct{}{}
	}
	e.watch.m[id][ch] = struct{}{}
	e.watch.mu.Unlock()
	return ch, func() {
		e.watch.mu.Lock()
		delete(e.watch.m[id], ch)
		if len(e.watch.m[id]) == 0 {
			delete(e.watch.m, id)
		}
		e.watch.mu.Unlock()
	}
}

func (e *Engine) notifyWatchers(id string) {
	e.watch.mu.Lock()
	defer e.watch.mu.Unlock()
	for ch := range e.watch.m[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// AuthorizationView is one identifier's progress, for the API.
type AuthorizationView struct {
	Identifier    string `json:"identifier"`
	Challenge     string `json:"challenge,omitempty"`
	Step          string `json:"step,omitempty"`
	PropagationMS int64  `json:"propagation_ms,omitempty"`
	URL           string `json:"url"`
}

// Progress is what the engine's step data says about a workflow.
type Progress struct {
	Authorizations []AuthorizationView `json:"authorizations"`
	// Orders is how many orders were placed at the CA.
	Orders int `json:"orders"`
	// Problem is the CA's last problem document, verbatim.
	Problem json.RawMessage `json:"problem,omitempty"`
	// ResumeState is where a retry-scheduled workflow resumes.
	ResumeState string `json:"resume_state,omitempty"`
}

// ProgressOf decodes a workflow's step data.
func ProgressOf(w *storage.Workflow) Progress {
	d, _ := decodeData(w.Data)
	p := Progress{Authorizations: []AuthorizationView{}, Orders: d.Orders, Problem: d.Problem, ResumeState: d.Resume}
	for _, a := range d.Authzs {
		p.Authorizations = append(p.Authorizations, AuthorizationView{Identifier: a.Identifier, Challenge: a.Challenge,
			Step: a.Step, PropagationMS: a.PropagationMS, URL: a.URL})
	}
	return p
}

// RenewalRequest asks for a new workflow for the same names, issuer and
// challenges as an issued workflow, linked to it and to its certificate
// (replaces is the certificate's ARI ID, if the CA supports ARI).
func RenewalRequest(w *storage.Workflow, replaces string) Request {
	return Request{IssuerID: w.IssuerID, Identifiers: append([]storage.Identifier(nil), w.Identifiers...), KeyType: w.KeyType,
		Profile: w.Profile, Trigger: TriggerRenewal, Group: w.Group, PreviousCertificateID: w.CertificateID,
		Replaces: replaces, ParentID: w.ID}
}
