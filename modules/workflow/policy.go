package workflow

import (
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// Decisions are small pure functions with the clock passed in, so the
// engine's behaviour is tested without running it (cert-manager's style).

// RetryPolicy bounds retries of a workflow.
type RetryPolicy struct {
	// MaxAttempts is how many times a workflow may be tried in all.
	// Default: 6.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BaseDelay is the first back-off. Default: 30s.
	BaseDelay time.Duration `json:"base_delay,omitempty"`
	// MaxDelay caps the back-off. Default: 1h.
	MaxDelay time.Duration `json:"max_delay,omitempty"`
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 6
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 30 * time.Second
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = time.Hour
	}
	return p
}

// Problem types that retrying the same order cannot fix.
var permanentProblems = []string{
	"unauthorized", "rejectedIdentifier", "caa", "dns", "connection", "incorrectResponse", "tls",
	"unsupportedIdentifier", "badCSR", "accountDoesNotExist", "externalAccountRequired", "malformed",
	"unsupportedContact", "invalidContact", "userActionRequired", "badPublicKey", "badSignatureAlgorithm",
	"compound",
}

// Retryable reports whether a failure with this problem type may succeed
// later. Errors without a problem (network, timeouts, 5xx pages) are
// retryable.
func Retryable(problemType string) bool {
	if problemType == "" {
		return true
	}
	short := strings.TrimPrefix(problemType, "urn:ietf:params:acme:error:")
	for _, p := range permanentProblems {
		if short == p {
			return false
		}
	}
	return true
}

// NextRetry decides whether and when to try again after the attempt-th
// failure (1-based). retryAfter is the CA's Retry-After (0 if none); it is
// honoured when longer than the back-off. jitter is in [0,1).
func NextRetry(p RetryPolicy, attempt int, problemType string, retryAfter time.Duration, now time.Time, jitter float64) (time.Time, bool) {
	p = p.withDefaults()
	if attempt >= p.MaxAttempts || !Retryable(problemType) {
		return time.Time{}, false
	}
	d := time.Duration(float64(p.BaseDelay) * math.Pow(2, float64(attempt-1)))
	if d > p.MaxDelay || d <= 0 {
		d = p.MaxDelay
	}
	// up to 25% jitter so retries of many workflows spread out
	d += time.Duration(float64(d) * 0.25 * jitter)
	if retryAfter > d {
		d = retryAfter
	}
	return now.Add(d), true
}

// RenewalDecision says whether a certificate renews now.
type RenewalDecision struct {
	Renew  bool
	Reason string
	// At is when to renew (or look again) if not now.
	At time.Time
}

// ShouldRenew decides renewal from the certificate's validity and the
// CA's ARI window (RFC 9773) if it offered one: inside the window, renew
// at the window's start; without a window, at 2/3 of the lifetime.
func ShouldRenew(notBefore, notAfter time.Time, ari *acme.RenewalInfo, now time.Time) RenewalDecision {
	if !now.Before(notAfter) {
		return RenewalDecision{Renew: true, Reason: "expired", At: now}
	}
	if ari != nil && !ari.SuggestedWindow.Start.IsZero() && ari.SuggestedWindow.End.After(ari.SuggestedWindow.Start) {
		start := ari.SuggestedWindow.Start
		if !now.Before(start) {
			return RenewalDecision{Renew: true, Reason: "inside the CA's renewal window (ARI)", At: now}
		}
		return RenewalDecision{Reason: "waiting for the CA's renewal window (ARI)", At: start}
	}
	at := notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
	if !now.Before(at) {
		return RenewalDecision{Renew: true, Reason: "two thirds of the lifetime passed", At: now}
	}
	return RenewalDecision{Reason: "renews at two thirds of the lifetime", At: at}
}

func jitter() float64 { return rand.Float64() }
