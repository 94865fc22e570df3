package inventory

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mholt/acmez/v3/acme"
)

func TestParseFixtures(t *testing.T) {
	p := newPKI(t)
	type want struct {
		keyType    string
		names      []string
		wildcard   bool
		selfSigned bool
		chainLen   int
		broken     int
		scts       int
		mustStaple bool
		hasKey     bool
	}
	cases := map[string]struct {
		chain func() ([]byte, []byte) // chain PEM, key PEM
		want  want
	}{
		"rsa with key in the chain": {func() ([]byte, []byte) {
			leaf, k := issue(t, p.inter, leafOpts{key: "rsa2048", cn: "rsa.example.com", dns: []string{"rsa.example.com"}})
			return append(pemOf(leaf, p.inter.cert), keyPEM(t, k)...), nil
		}, want{keyType: "RSA 2048", names: []string{"rsa.example.com"}, chainLen: 1, hasKey: true}},
		"ecdsa with scts and must-staple": {func() ([]byte, []byte) {
			leaf, k := issue(t, p.inter, leafOpts{dns: []string{"Ecdsa.Example.com", "www.example.com"}, scts: 3, mustStaple: true, crl: true, ocsp: true})
			return pemOf(leaf, p.inter.cert), keyPEM(t, k)
		}, want{keyType: "ECDSA P-256", names: []string{"ecdsa.example.com", "www.example.com"}, chainLen: 1, scts: 3, mustStaple: true, hasKey: true}},
		"ecdsa p384": {func() ([]byte, []byte) {
			leaf, _ := issue(t, p.inter, leafOpts{key: "p384", dns: []string{"p384.example.com"}})
			return pemOf(leaf, p.inter.cert), nil
		}, want{keyType: "ECDSA P-384", names: []string{"p384.example.com"}, chainLen: 1}},
		"ed25519": {func() ([]byte, []byte) {
			leaf, k := issue(t, p.inter, leafOpts{key: "ed25519", dns: []string{"ed.example.com"}})
			return pemOf(leaf, p.inter.cert), keyPEM(t, k)
		}, want{keyType: "Ed25519", names: []string{"ed.example.com"}, chainLen: 1, hasKey: true}},
		"wildcard": {func() ([]byte, []byte) {
			leaf, _ := issue(t, p.inter, leafOpts{dns: []string{"*.example.com", "example.com"}})
			return pemOf(leaf, p.inter.cert), nil
		}, want{keyType: "ECDSA P-256", names: []string{"*.example.com", "example.com"}, wildcard: true, chainLen: 1}},
		"ip sans": {func() ([]byte, []byte) {
			leaf, _ := issue(t, p.inter, leafOpts{ips: []string{"192.0.2.10", "2001:db8::1"}})
			return pemOf(leaf, p.inter.cert), nil
		}, want{keyType: "ECDSA P-256", names: []string{"192.0.2.10", "2001:db8::1"}, chainLen: 1}},
		"expired": {func() ([]byte, []byte) {
			leaf, _ := issue(t, p.inter, leafOpts{dns: []string{"old.example.com"}, notBefore: t0.Add(-200 * day)})
			return pemOf(leaf, p.inter.cert), nil
		}, want{keyType: "ECDSA P-256", names: []string{"old.example.com"}, chainLen: 1}},
		"self-signed": {func() ([]byte, []byte) {
			leaf, _ := issue(t, nil, leafOpts{cn: "self.example.com", dns: []string{"self.example.com"}})
			return pemOf(leaf), nil
		}, want{keyType: "ECDSA P-256", names: []string{"self.example.com"}, selfSigned: true}},
		"broken chain": {func() ([]byte, []byte) {
			leaf, _ := issue(t, p.inter, leafOpts{dns: []string{"broken.example.com"}})
			return pemOf(leaf, p.other.cert), nil
		}, want{keyType: "ECDSA P-256", names: []string{"broken.example.com"}, chainLen: 1, broken: 1}},
		"root first, leaf last": {func() ([]byte, []byte) {
			leaf, _ := issue(t, p.inter, leafOpts{dns: []string{"order.example.com"}})
			return pemOf(p.root.cert, p.inter.cert, leaf), nil
		}, want{keyType: "ECDSA P-256", names: []string{"order.example.com"}, chainLen: 2}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			chainPEM, kp := c.chain()
			got, err := Parse(chainPEM, kp)
			if err != nil {
				t.Fatal(err)
			}
			m := got.Meta
			names := append(slices.Clone(m.DNSNames), m.IPAddresses...)
			if keyLabel(m.KeyType, m.KeyBits, m.KeyCurve) != c.want.keyType || !slices.Equal(names, c.want.names) ||
				m.Wildcard != c.want.wildcard || m.SelfSigned != c.want.selfSigned || len(got.Chain) != c.want.chainLen ||
				got.Broken != c.want.broken || m.SCTCount != c.want.scts || m.MustStaple != c.want.mustStaple ||
				(got.Key != nil) != c.want.hasKey {
				t.Fatalf("metadata %+v (chain %d, broken %d, key %v), want %+v", m, len(got.Chain), got.Broken, got.Key != nil, c.want)
			}
			if m.FingerprintSHA256 != sha256Hex(got.Leaf.Raw) || len(m.FingerprintSHA256) != 64 || len(m.SPKISHA256) != 64 {
				t.Fatal("fingerprints wrong")
			}
			if m.Serial != got.Leaf.SerialNumber.Text(16) || m.Issuer != got.Leaf.Issuer.String() {
				t.Fatalf("serial %q issuer %q", m.Serial, m.Issuer)
			}
			if !c.want.selfSigned {
				ari, err := acme.ARIUniqueIdentifier(got.Leaf)
				if err != nil || m.ARICertID != ari || m.AuthorityKeyID == "" {
					t.Fatalf("ARI ID %q (acmez: %q), AKI %q", m.ARICertID, ari, m.AuthorityKeyID)
				}
			}
			// the stored chain is plain PEM, leaf first, and parses to the same
			again, err := Parse(got.ChainPEM, nil)
			if err != nil || again.Meta.FingerprintSHA256 != m.FingerprintSHA256 || len(again.Chain) != len(got.Chain) {
				t.Fatalf("re-parsing the normalised chain: %v", err)
			}
			if got.Key != nil && !bytes.HasPrefix(got.KeyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
				t.Fatal("key not normalised to PKCS #8")
			}
		})
	}
}

func TestParseURLs(t *testing.T) {
	p := newPKI(t)
	leaf, _ := issue(t, p.inter, leafOpts{dns: []string{"urls.example.com"}, crl: true, ocsp: true})
	got, err := Parse(pemOf(leaf, p.inter.cert), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := got.Meta
	if !slices.Equal(m.CRLURLs, []string{"http://crl.test/inter.crl"}) || !slices.Equal(m.OCSPURLs, []string{"http://ocsp.test"}) ||
		!slices.Equal(m.CAIssuerURLs, []string{"http://aia.test/inter.der"}) || len(m.SubjectKeyID) != 4 {
		t.Fatalf("URLs: crl %v ocsp %v aia %v", m.CRLURLs, m.OCSPURLs, m.CAIssuerURLs)
	}
	if m.Chain[0].Subject != p.inter.cert.Subject.String() || !m.Chain[0].IsCA || !m.Chain[0].OnPath {
		t.Fatalf("chain entry %+v", m.Chain[0])
	}
}

func TestParseRejectsBadInput(t *testing.T) {
	p := newPKI(t)
	leaf, k := issue(t, p.inter, leafOpts{dns: []string{"bad.example.com"}})
	_, otherKey := issue(t, p.inter, leafOpts{key: "p384", dns: []string{"x.example.com"}})
	good := pemOf(leaf, p.inter.cert)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte{1, 2}})
	var many []byte
	for range MaxChainLength + 1 {
		c, _ := issue(t, p.inter, leafOpts{dns: []string{"many.example.com"}})
		many = append(many, pemOf(c)...)
	}
	secretish := keyPEM(t, k)
	cases := map[string]struct {
		chain, key []byte
		field      string
		msg        string
	}{
		"empty":                 {nil, nil, "pem", "no certificate found"},
		"text":                  {[]byte("hello, this is not a certificate"), nil, "pem", "not PEM"},
		"bad base64":            {[]byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), nil, "pem", "not PEM"},
		"garbage DER":           {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}), nil, "pem", "certificate 1 cannot be parsed"},
		"csr":                   {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}}), nil, "pem", "unexpected PEM block"},
		"key only":              {secretish, nil, "pem", "no certificate found"},
		"mismatched key":        {good, keyPEM(t, otherKey), "key_pem", "does not match"},
		"mismatched key inline": {append(slices.Clone(good), keyPEM(t, otherKey)...), nil, "pem", "does not match"},
		"two keys":              {append(append(slices.Clone(good), secretish...), secretish...), nil, "pem", "more than one private key"},
		"key twice":             {append(slices.Clone(good), secretish...), secretish, "key_pem", "give the key once"},
		"encrypted key":         {good, encrypted, "key_pem", "encrypted"},
		"garbage key":           {good, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")}), "key_pem", "cannot be parsed"},
		"cert in key field":     {good, pemOf(leaf), "key_pem", "holds a certificate"},
		"no key in key field":   {good, []byte("just words"), "key_pem", "not PEM"},
		"too many":              {many, nil, "pem", "more than 20"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(c.chain, c.key)
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v is not an InputError", err)
			}
			if ie.Field != c.field || !strings.Contains(ie.Message, c.msg) {
				t.Fatalf("got field %q message %q; want field %q containing %q", ie.Field, ie.Message, c.field, c.msg)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(secretish[30:60])) {
				t.Fatal("the error echoes key material")
			}
		})
	}
}

func TestVerify(t *testing.T) {
	p := newPKI(t)
	leaf, _ := issue(t, p.inter, leafOpts{dns: []string{"v.example.com"}})
	// the same intermediate (subject and key), re-signed with a validity
	// that ended yesterday
	tmpl := *p.inter.cert
	tmpl.NotBefore, tmpl.NotAfter = t0.Add(-300*day), t0.Add(-day)
	shortInter := mustCreate(t, &tmpl, p.root.cert, testKey(t, "inter").Public(), p.root.key)
	cases := map[string]struct {
		chain     []*x509.Certificate
		system    *x509.CertPool
		extra     *x509.CertPool
		verified  bool
		trustedBy string
		expired   bool
	}{
		"system root":      {[]*x509.Certificate{p.inter.cert}, p.roots(), nil, true, "system", false},
		"acme client root": {[]*x509.Certificate{p.inter.cert}, x509.NewCertPool(), p.roots(), true, "acme_client", false},
		"unknown root":     {[]*x509.Certificate{p.inter.cert}, x509.NewCertPool(), nil, false, "", false},
		"incomplete":       {nil, p.roots(), nil, false, "", false},
		"expired inter":    {[]*x509.Certificate{shortInter}, p.roots(), nil, false, "", true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			tr := verify(leaf, c.chain, c.system, c.extra, t0)
			if tr.Verified != c.verified || tr.TrustedBy != c.trustedBy || tr.Expired != c.expired {
				t.Fatalf("trust %+v", tr)
			}
			if c.verified && (len(tr.Path) != 3 || tr.Error != "") {
				t.Fatalf("path %v error %q", tr.Path, tr.Error)
			}
			if !c.verified && tr.Error == "" {
				t.Fatal("no error for an unverified chain")
			}
		})
	}
}
