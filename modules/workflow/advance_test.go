package workflow

import (
	"slices"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
)

func TestNextStep(t *testing.T) {
	az := func(steps ...string) *orderData {
		d := &orderData{}
		for _, s := range steps {
			a := authzData{Step: s}
			if s == "validating+" {
				a.Step, a.Initiated = StepValidating, true
			}
			d.Authzs = append(d.Authzs, a)
		}
		return d
	}
	cases := []struct {
		name    string
		state   string
		d       *orderData
		fetched bool
		want    step
	}{
		{"pending starts", storage.StatePending, az(), false, step{act: actStart}},
		{"ordering orders", storage.StateOrdering, az(), false, step{act: actOrder}},
		{"authorizing reads the authorizations first", storage.StateAuthorizing, az("", StepValid, StepPropagating), false,
			step{act: actFetch, authzs: []int{0, 2}}},
		{"every unpresented authorization is presented together", storage.StateAuthorizing, az("", StepPresenting, StepPropagating, ""), true,
			step{act: actPresent, authzs: []int{0, 1, 3}}},
		{"propagation waits run together once all are presented", storage.StateAuthorizing, az(StepPropagating, StepValid, StepPropagating, StepValidating), true,
			step{act: actPropagate, authzs: []int{0, 2}}},
		{"the CA is asked for all once all propagated", storage.StateAuthorizing, az(StepValidating, "validating+", StepValidating), true,
			step{act: actInitiate, authzs: []int{0, 2}}},
		{"all initiated are polled together", storage.StateAuthorizing, az("validating+", StepValid, "validating+"), true,
			step{act: actPoll, authzs: []int{0, 2}}},
		{"all valid", storage.StateAuthorizing, az(StepValid, StepValid), true, step{act: actAuthorized}},
		{"all valid needs no fetch", storage.StateAuthorizing, az(StepValid), false, step{act: actAuthorized}},
		{"finalizing", storage.StateFinalizing, az(StepValid), true, step{act: actFinalize}},
		{"downloading", storage.StateDownloading, az(), false, step{act: actDownload}},
		{"a scheduled retry waits", storage.StateRetryScheduled, az(""), false, step{act: actWait}},
		{"issued", storage.StateIssued, az(), false, step{act: actWait}},
		{"failed", storage.StateFailed, az(), false, step{act: actWait}},
		{"cancelled", storage.StateCancelled, az(), false, step{act: actWait}},
		{"unknown", "sideways", az(), false, step{act: actUnknown}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := nextStep(c.state, c.d, c.fetched)
			if got.act != c.want.act || !slices.Equal(got.authzs, c.want.authzs) {
				t.Fatalf("nextStep = %s %v, want %s %v", got.act, got.authzs, c.want.act, c.want.authzs)
			}
		})
	}
}
