package inventory

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Grades, best first. A certificate's grade is the worst grade among its
// applicable factors (see docs/inventory.md for the rubric).
var Grades = []string{"A+", "A", "B", "C", "D", "F"}

// Rating is a certificate's security rating with its per-factor breakdown.
type Rating struct {
	Grade   string    `json:"grade"`
	Factors []Factor  `json:"factors"`
	RatedAt time.Time `json:"rated_at"`
}

// Factor is one line of the rating breakdown. Grade is "" when the factor
// does not apply to the certificate (the detail says why).
type Factor struct {
	Name   string `json:"name"`
	Grade  string `json:"grade"`
	Detail string `json:"detail"`
}

// Factor names, in the order they are reported.
const (
	FactorKeyStrength  = "key_strength"
	FactorSignature    = "signature_algorithm"
	FactorLifetime     = "lifetime"
	FactorChain        = "chain"
	FactorCT           = "certificate_transparency"
	FactorRevocation   = "revocation_info"
	FactorWildcard     = "wildcard"
	FactorTimeLeft     = "time_left"
	day                = 24 * time.Hour
	shortLivedLifetime = 10 * day
)

// Rate rates the certificate described by m at time now. It reads m's
// key, signature, lifetime, chain trust, SCTs, revocation URLs, names and
// validity; Trust must already be filled in.
func Rate(m *Metadata, now time.Time) Rating {
	factors := []Factor{
		rateKey(m),
		rateSignature(m),
		rateLifetime(m),
		rateChain(m),
		rateCT(m),
		rateRevocation(m),
		rateWildcard(m),
		rateTimeLeft(m, now),
	}
	worst := 0
	for _, f := range factors {
		if r := gradeRank(f.Grade); r > worst {
			worst = r
		}
	}
	return Rating{Grade: Grades[worst], Factors: factors, RatedAt: now.UTC()}
}

// gradeRank is the index of g in Grades; "" (not applicable) ranks best.
func gradeRank(g string) int {
	for i, x := range Grades {
		if x == g {
			return i
		}
	}
	return 0
}

func rateKey(m *Metadata) Factor {
	f := Factor{Name: FactorKeyStrength}
	label := keyLabel(m.KeyType, m.KeyBits, m.KeyCurve)
	switch {
	case m.KeyType == "Ed25519", m.KeyType == "ECDSA" && m.KeyBits >= 256:
		f.Grade, f.Detail = "A+", label
	case m.KeyType == "RSA" && m.KeyBits >= 3072:
		f.Grade, f.Detail = "A+", label
	case m.KeyType == "RSA" && m.KeyBits >= 2048:
		f.Grade, f.Detail = "A", label+": the minimum; prefer ECDSA P-256 or RSA 3072+"
	case m.KeyType == "RSA", m.KeyType == "ECDSA":
		f.Grade, f.Detail = "F", label+": too weak"
	default:
		f.Grade, f.Detail = "C", "unrecognised public key type"
	}
	return f
}

func rateSignature(m *Metadata) Factor {
	f := Factor{Name: FactorSignature, Detail: m.SignatureAlgorithm}
	switch m.SignatureAlgorithm {
	case x509.SHA256WithRSA.String(), x509.SHA384WithRSA.String(), x509.SHA512WithRSA.String(),
		x509.SHA256WithRSAPSS.String(), x509.SHA384WithRSAPSS.String(), x509.SHA512WithRSAPSS.String(),
		x509.ECDSAWithSHA256.String(), x509.ECDSAWithSHA384.String(), x509.ECDSAWithSHA512.String(),
		x509.PureEd25519.String():
		f.Grade = "A+"
	case x509.SHA1WithRSA.String(), x509.ECDSAWithSHA1.String(), x509.MD5WithRSA.String(), x509.MD2WithRSA.String(),
		x509.DSAWithSHA1.String(), x509.DSAWithSHA256.String():
		f.Grade, f.Detail = "F", m.SignatureAlgorithm+": broken or deprecated hash"
	default:
		f.Grade, f.Detail = "C", m.SignatureAlgorithm+": unrecognised signature algorithm"
	}
	return f
}

func rateLifetime(m *Metadata) Factor {
	f := Factor{Name: FactorLifetime, Detail: fmt.Sprintf("%.0f days", m.LifetimeDays)}
	switch d := m.LifetimeDays; {
	case d <= 100:
		f.Grade = "A+"
	case d <= 200:
		f.Grade = "A"
	case d <= 398:
		f.Grade, f.Detail = "B", f.Detail+": public CAs issue at most 200 days from March 2026"
	default:
		f.Grade, f.Detail = "C", f.Detail+": longer than the 398 days browsers accept from public CAs"
	}
	return f
}

func rateChain(m *Metadata) Factor {
	f := Factor{Name: FactorChain}
	broken := 0
	for _, c := range m.Chain {
		if !c.OnPath {
			broken++
		}
	}
	t := m.Trust
	switch {
	case t.Verified && broken == 0:
		f.Grade, f.Detail = "A+", "verifies to a trusted root ("+trustLabel(t.TrustedBy)+")"
	case t.Verified:
		f.Grade, f.Detail = "B", fmt.Sprintf("verifies, but the bundle holds %d certificate(s) not on the path", broken)
	case t.Expired:
		f.Grade, f.Detail = "F", "a certificate of the chain is outside its validity: "+t.Error
	case broken > 0:
		f.Grade, f.Detail = "F", fmt.Sprintf("broken: %d certificate(s) of the bundle do not sign the one before; %s", broken, t.Error)
	case m.SelfSigned:
		f.Grade, f.Detail = "C", "self-signed: trusted only where it is pinned"
	default:
		f.Grade, f.Detail = "C", "does not verify to a trusted root: "+t.Error
	}
	return f
}

func trustLabel(by string) string {
	if by == "acme_client" {
		return "the ACME client's custom roots"
	}
	return "system roots"
}

func rateCT(m *Metadata) Factor {
	f := Factor{Name: FactorCT}
	if !m.Trust.Verified || m.Trust.TrustedBy != "system" {
		f.Detail = "not applicable: not publicly trusted, CT logging not required"
		return f
	}
	switch {
	case m.SCTCount >= 2:
		f.Grade, f.Detail = "A+", fmt.Sprintf("%d embedded SCTs", m.SCTCount)
	case m.SCTCount == 1:
		f.Grade, f.Detail = "C", "1 embedded SCT: browsers require at least 2"
	default:
		f.Grade, f.Detail = "D", "no embedded SCTs: browsers require at least 2"
	}
	return f
}

func rateRevocation(m *Metadata) Factor {
	f := Factor{Name: FactorRevocation}
	switch {
	case m.SelfSigned:
		f.Detail = "not applicable: self-signed"
	case len(m.CRLURLs) > 0 || len(m.OCSPURLs) > 0:
		f.Grade = "A+"
		f.Detail = fmt.Sprintf("%d CRL and %d OCSP URL(s)", len(m.CRLURLs), len(m.OCSPURLs))
		if m.MustStaple {
			f.Detail += ", must-staple"
		}
	case m.LifetimeDays*float64(day) <= float64(shortLivedLifetime):
		f.Grade, f.Detail = "A+", "short-lived: no revocation information needed"
	default:
		f.Grade, f.Detail = "B", "no CRL or OCSP URL: relying parties cannot check revocation"
	}
	return f
}

func rateWildcard(m *Metadata) Factor {
	if m.Wildcard {
		return Factor{Name: FactorWildcard, Grade: "A", Detail: "wildcard: one key serves every name under the domain"}
	}
	return Factor{Name: FactorWildcard, Grade: "A+", Detail: "no wildcard names"}
}

func rateTimeLeft(m *Metadata, now time.Time) Factor {
	f := Factor{Name: FactorTimeLeft}
	left := m.NotAfter.Sub(now)
	life := m.NotAfter.Sub(m.NotBefore)
	switch {
	case now.Before(m.NotBefore):
		f.Grade, f.Detail = "F", "not yet valid"
	case left <= 0:
		f.Grade, f.Detail = "F", "expired"
	case left <= min(7*day, life/10):
		f.Grade, f.Detail = "C", fmt.Sprintf("%s left: renew now", humanDuration(left))
	case left <= life/3:
		f.Grade, f.Detail = "B", fmt.Sprintf("%s left: renewal due", humanDuration(left))
	default:
		f.Grade, f.Detail = "A+", fmt.Sprintf("%s left", humanDuration(left))
	}
	return f
}

// humanDuration renders d in days, or hours below two days.
func humanDuration(d time.Duration) string {
	if d < 2*day {
		return fmt.Sprintf("%.0f hours", d.Hours())
	}
	return fmt.Sprintf("%.0f days", d.Hours()/24)
}
