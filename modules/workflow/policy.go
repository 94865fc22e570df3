package workflow

import (
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// Decisions are small pure functions with the clock passed in, so the
// engine's behaviour is tested without running it (cert-manager's style).
// When a certificate renews is internal/renewal's Decide, shared with the
// inventory.

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

func jitter() float64 { return rand.Float64() }
