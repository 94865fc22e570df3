package inventory

import (
	"time"

	"github.com/certlocker/caddy-certlocker/internal/renewal"
	"github.com/certlocker/caddy-certlocker/storage"
)

// Renewal statuses.
const (
	RenewalOK          = "ok"            // not due yet; RenewAt says when
	RenewalDue         = "due"           // inside the renewal window
	RenewalExpired     = "expired"       // past NotAfter and not renewed
	RenewalNotYetValid = "not_yet_valid" // before NotBefore
	RenewalRenewed     = "renewed"       // replaced by a newer certificate
	RenewalRevoked     = "revoked"
)

// Renewal is a certificate's renewal status at some time.
type Renewal struct {
	Status string `json:"status"`
	// RenewAt is when renewal is (or was) due.
	RenewAt time.Time `json:"renew_at"`
	// ReplacedBy is the certificate that renewed this one.
	ReplacedBy string `json:"replaced_by,omitempty"`
	// Managed is true when an ACME client issued it, so CertLocker can
	// renew it; imported certificates are renewed outside CertLocker.
	Managed bool   `json:"managed"`
	Message string `json:"message"`
}

// renewalPolicy is one rule of the renewal status: it returns a status
// and message and true when it decides, or false to pass to the next rule.
type renewalPolicy func(c *storage.Certificate, due renewal.Decision, now time.Time) (status, message string, decided bool)

// renewalPolicies are applied in order; the first that decides wins. When
// renewal is due is renewal.Decide's answer, the rule the engine renews by.
var renewalPolicies = []renewalPolicy{
	func(c *storage.Certificate, _ renewal.Decision, _ time.Time) (string, string, bool) {
		return RenewalRevoked, "revoked", c.Status == storage.CertStatusRevoked
	},
	func(c *storage.Certificate, _ renewal.Decision, _ time.Time) (string, string, bool) {
		return RenewalRenewed, "renewed by " + c.ReplacedBy, c.Status == storage.CertStatusRenewed || c.ReplacedBy != ""
	},
	func(c *storage.Certificate, _ renewal.Decision, now time.Time) (string, string, bool) {
		return RenewalExpired, "expired on " + c.NotAfter.Format(time.DateOnly), !now.Before(c.NotAfter)
	},
	func(c *storage.Certificate, _ renewal.Decision, now time.Time) (string, string, bool) {
		return RenewalNotYetValid, "valid from " + c.NotBefore.Format(time.RFC3339), now.Before(c.NotBefore)
	},
	func(c *storage.Certificate, due renewal.Decision, _ time.Time) (string, string, bool) {
		if !due.Renew {
			return "", "", false
		}
		if c.IssuerID == "" {
			return RenewalDue, "renewal due (" + due.Reason + "): imported, renew it outside CertLocker or order it through an ACME client", true
		}
		return RenewalDue, "renewal due (" + due.Reason + ")", true
	},
	func(_ *storage.Certificate, due renewal.Decision, _ time.Time) (string, string, bool) {
		return RenewalOK, "renews from " + due.At.Format(time.DateOnly) + " (" + due.Reason + ")", true
	},
}

// RenewalStatus says where c stands on renewal at now. Renewal is due by
// the engine's own rule (renewal.Decide): inside the CA's renewal window
// the engine last recorded on the certificate, else at two thirds of its
// lifetime.
func RenewalStatus(c *storage.Certificate, now time.Time) Renewal {
	due := renewal.Decide(c.NotBefore, c.NotAfter, renewal.WindowOf(c.Meta), now)
	r := Renewal{RenewAt: due.At.UTC(), ReplacedBy: c.ReplacedBy, Managed: c.IssuerID != ""}
	for _, p := range renewalPolicies {
		if status, msg, ok := p(c, due, now); ok {
			r.Status, r.Message = status, msg
			break
		}
	}
	return r
}

// Expiry buckets, as reported by ExpiryReport and the list's expiry
// field.
const (
	BucketExpired   = "expired"
	BucketWithin7d  = "within_7d"
	BucketWithin30d = "within_30d"
	BucketOK        = "ok"
)

// ExpiryBucket says which expiry bucket a certificate expiring at notAfter
// is in at now.
func ExpiryBucket(notAfter, now time.Time) string {
	switch left := notAfter.Sub(now); {
	case left <= 0:
		return BucketExpired
	case left <= 7*day:
		return BucketWithin7d
	case left <= 30*day:
		return BucketWithin30d
	}
	return BucketOK
}
