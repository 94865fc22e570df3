package inventory

import (
	"crypto/x509"
	"testing"
	"time"
)

// good is a metadata that rates A+ on every factor at t0.
func good() Metadata {
	return Metadata{
		KeyType: "ECDSA", KeyBits: 256, KeyCurve: "P-256", SignatureAlgorithm: x509.ECDSAWithSHA256.String(),
		NotBefore: t0.Add(-10 * day), NotAfter: t0.Add(80 * day), LifetimeDays: 90,
		Trust: Trust{Verified: true, TrustedBy: "system"}, SCTCount: 2, CRLURLs: []string{"http://crl.test/1.crl"},
		Chain: []ChainCert{{OnPath: true}},
	}
}

func TestRate(t *testing.T) {
	cases := map[string]struct {
		edit   func(m *Metadata)
		now    time.Time
		factor string
		grade  string // the factor's grade
		want   string // overall
	}{
		"all good":           {func(m *Metadata) {}, t0, FactorKeyStrength, "A+", "A+"},
		"rsa 2048":           {func(m *Metadata) { m.KeyType, m.KeyBits, m.KeyCurve = "RSA", 2048, "" }, t0, FactorKeyStrength, "A", "A"},
		"rsa 3072":           {func(m *Metadata) { m.KeyType, m.KeyBits, m.KeyCurve = "RSA", 3072, "" }, t0, FactorKeyStrength, "A+", "A+"},
		"rsa 1024":           {func(m *Metadata) { m.KeyType, m.KeyBits, m.KeyCurve = "RSA", 1024, "" }, t0, FactorKeyStrength, "F", "F"},
		"ed25519":            {func(m *Metadata) { m.KeyType, m.KeyBits, m.KeyCurve = "Ed25519", 256, "" }, t0, FactorKeyStrength, "A+", "A+"},
		"unknown key":        {func(m *Metadata) { m.KeyType, m.KeyBits = "unknown", 0 }, t0, FactorKeyStrength, "C", "C"},
		"sha1":               {func(m *Metadata) { m.SignatureAlgorithm = x509.SHA1WithRSA.String() }, t0, FactorSignature, "F", "F"},
		"rsa-pss":            {func(m *Metadata) { m.SignatureAlgorithm = x509.SHA256WithRSAPSS.String() }, t0, FactorSignature, "A+", "A+"},
		"ed25519 signature":  {func(m *Metadata) { m.SignatureAlgorithm = x509.PureEd25519.String() }, t0, FactorSignature, "A+", "A+"},
		"lifetime 180d":      {func(m *Metadata) { m.LifetimeDays = 180 }, t0, FactorLifetime, "A", "A"},
		"lifetime 1y":        {func(m *Metadata) { m.LifetimeDays = 365 }, t0, FactorLifetime, "B", "B"},
		"lifetime 2y":        {func(m *Metadata) { m.LifetimeDays = 730 }, t0, FactorLifetime, "C", "C"},
		"acme client root":   {func(m *Metadata) { m.Trust.TrustedBy, m.SCTCount = "acme_client", 0 }, t0, FactorCT, "", "A+"},
		"unknown root":       {func(m *Metadata) { m.Trust = Trust{Error: "x509: unknown authority"} }, t0, FactorChain, "C", "C"},
		"self-signed":        {func(m *Metadata) { m.Trust, m.SelfSigned, m.Chain = Trust{Error: "x"}, true, nil }, t0, FactorChain, "C", "C"},
		"broken chain":       {func(m *Metadata) { m.Trust, m.Chain[0].OnPath = Trust{Error: "x"}, false }, t0, FactorChain, "F", "F"},
		"padded but valid":   {func(m *Metadata) { m.Chain = append(m.Chain, ChainCert{}) }, t0, FactorChain, "B", "B"},
		"expired chain":      {func(m *Metadata) { m.Trust = Trust{Error: "expired", Expired: true} }, t0, FactorChain, "F", "F"},
		"one sct":            {func(m *Metadata) { m.SCTCount = 1 }, t0, FactorCT, "C", "C"},
		"no sct":             {func(m *Metadata) { m.SCTCount = 0 }, t0, FactorCT, "D", "D"},
		"no revocation":      {func(m *Metadata) { m.CRLURLs = nil }, t0, FactorRevocation, "B", "B"},
		"ocsp only":          {func(m *Metadata) { m.CRLURLs, m.OCSPURLs = nil, []string{"http://o"} }, t0, FactorRevocation, "A+", "A+"},
		"short-lived no crl": {func(m *Metadata) { m.CRLURLs, m.LifetimeDays, m.NotAfter = nil, 6, t0.Add(5*day) }, t0.Add(-day), FactorRevocation, "A+", "A+"},
		"wildcard":           {func(m *Metadata) { m.Wildcard = true }, t0, FactorWildcard, "A", "A"},
		"renewal due":        {func(m *Metadata) {}, t0.Add(60 * day), FactorTimeLeft, "B", "B"},
		"about to expire":    {func(m *Metadata) {}, t0.Add(75 * day), FactorTimeLeft, "C", "C"},
		"expired":            {func(m *Metadata) {}, t0.Add(81 * day), FactorTimeLeft, "F", "F"},
		"not yet valid":      {func(m *Metadata) {}, t0.Add(-11 * day), FactorTimeLeft, "F", "F"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m := good()
			c.edit(&m)
			r := Rate(&m, c.now)
			if r.Grade != c.want {
				t.Errorf("grade %s, want %s: %+v", r.Grade, c.want, r.Factors)
			}
			if len(r.Factors) != 8 {
				t.Fatalf("%d factors", len(r.Factors))
			}
			for _, f := range r.Factors {
				if f.Detail == "" {
					t.Errorf("factor %s has no detail", f.Name)
				}
				if f.Name == c.factor && f.Grade != c.grade {
					t.Errorf("factor %s graded %q (%s), want %q", f.Name, f.Grade, f.Detail, c.grade)
				}
			}
		})
	}
}
