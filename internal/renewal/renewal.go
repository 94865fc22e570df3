// Package renewal is the one rule for when a certificate renews. The
// workflow engine renews by it and the inventory reports by it, so the
// inventory never says "ok" while the engine renews.
//
// The rule: inside the CA's ARI renewal window (RFC 9773) when the CA gave
// one, else once two thirds of the lifetime passed; always once expired.
// The engine asks the CA for the window and records it on the certificate
// (its metadata, under MetaKey), where the inventory reads it.
package renewal

import (
	"encoding/json"
	"fmt"
	"time"
)

// Fraction is the part of a certificate's lifetime after which it renews
// when the CA suggests no window: two thirds, as certmagic does.
const Fraction = 2.0 / 3

// Window is the CA's suggested renewal window (ARI).
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Usable reports whether w is a window at all: a start, and an end after
// it. Decide ignores a window that is not.
func (w *Window) Usable() bool {
	return w != nil && !w.Start.IsZero() && w.End.After(w.Start)
}

// Equal reports whether w and o are the same window (or both none).
func (w *Window) Equal(o *Window) bool {
	if w == nil || o == nil {
		return w == o
	}
	return w.Start.Equal(o.Start) && w.End.Equal(o.End)
}

// Decision says whether a certificate renews now.
type Decision struct {
	Renew  bool
	Reason string
	// At is when renewal is (or was) due.
	At time.Time
}

// Decide applies the rule to a certificate valid from notBefore to
// notAfter, with the CA's window (nil if it gave none), at now.
func Decide(notBefore, notAfter time.Time, ari *Window, now time.Time) Decision {
	if ari.Usable() {
		if !now.Before(ari.Start) {
			return Decision{Renew: true, Reason: "inside the CA's renewal window (ARI)", At: ari.Start}
		}
		if !now.Before(notAfter) {
			return Decision{Renew: true, Reason: "expired", At: notAfter}
		}
		return Decision{Reason: "waiting for the CA's renewal window (ARI)", At: ari.Start}
	}
	at := notBefore.Add(time.Duration(float64(notAfter.Sub(notBefore)) * Fraction))
	if !now.Before(notAfter) {
		return Decision{Renew: true, Reason: "expired", At: at}
	}
	if !now.Before(at) {
		return Decision{Renew: true, Reason: "two thirds of the lifetime passed", At: at}
	}
	return Decision{Reason: "renews at two thirds of the lifetime", At: at}
}

// MetaKey is the member of a certificate's metadata (storage.Certificate's
// Meta, a JSON object) that holds the CA's last renewal window.
const MetaKey = "renewal_window"

// WindowOf reads the renewal window recorded in a certificate's metadata;
// nil if none is (or the metadata is not an object).
func WindowOf(meta json.RawMessage) *Window {
	if len(meta) == 0 {
		return nil
	}
	var m struct {
		W *Window `json:"renewal_window"`
	}
	if json.Unmarshal(meta, &m) != nil || !m.W.Usable() {
		return nil
	}
	return m.W
}

// WithWindow returns meta with the window recorded (nil removes it),
// keeping every other member.
func WithWindow(meta json.RawMessage, w *Window) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(meta) > 0 {
		if err := json.Unmarshal(meta, &m); err != nil {
			return nil, fmt.Errorf("reading certificate metadata: %w", err)
		}
	}
	if w == nil {
		delete(m, MetaKey)
	} else {
		b, err := json.Marshal(Window{Start: w.Start.UTC(), End: w.End.UTC()})
		if err != nil {
			return nil, err
		}
		m[MetaKey] = b
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("writing certificate metadata: %w", err)
	}
	return out, nil
}
