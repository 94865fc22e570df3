package inventory

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Test fixtures are generated here with crypto/x509: a root, an
// intermediate, and leaves of every key type and shape the inventory must
// handle. Keys of one type are generated once per test binary (RSA is
// slow, above all under -race).

// t0 is the fixtures' "now": the tests' clocks start here.
var t0 = time.Date(2026, 5, 20, 11, 0, 0, 0, time.UTC)

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

var (
	keyOnce sync.Map // kind -> func() crypto.Signer
	serials atomic.Int64
)

// testKey returns the shared key of one kind: "rsa2048", "rsa1024",
// "p256", "p384", "ed25519".
func testKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	v, _ := keyOnce.LoadOrStore(kind, sync.OnceValue(func() crypto.Signer {
		var (
			k   crypto.Signer
			err error
		)
		switch kind {
		case "rsa2048":
			k, err = rsa.GenerateKey(rand.Reader, 2048)
		case "rsa1024":
			k, err = rsa.GenerateKey(rand.Reader, 1024)
		case "p256":
			k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case "p384":
			k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		case "ed25519":
			_, k, err = ed25519.GenerateKey(rand.Reader)
		case "root", "inter", "other":
			k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		default:
			panic("unknown key kind " + kind)
		}
		if err != nil {
			panic(err)
		}
		return k
	}))
	return v.(func() crypto.Signer)()
}

func mustCreate(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func keyPEM(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// newRoot makes a self-signed root CA named cn with the key of kind.
func newRoot(t testing.TB, cn, kind string) *testCA {
	k := testKey(t, kind)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serials.Add(1)), Subject: pkix.Name{CommonName: cn, Organization: []string{"CertLocker Test"}},
		NotBefore: t0.Add(-365 * day), NotAfter: t0.Add(3650 * day), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	c := mustCreate(t, tmpl, tmpl, k.Public(), k)
	return &testCA{cert: c, key: k, pem: pemOf(c)}
}

// newIntermediate makes an intermediate CA under parent.
func newIntermediate(t testing.TB, parent *testCA, cn, kind string) *testCA {
	k := testKey(t, kind)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serials.Add(1)), Subject: pkix.Name{CommonName: cn, Organization: []string{"CertLocker Test"}},
		NotBefore: t0.Add(-300 * day), NotAfter: t0.Add(1000 * day), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	c := mustCreate(t, tmpl, parent.cert, k.Public(), parent.key)
	return &testCA{cert: c, key: k, pem: pemOf(c)}
}

// leafOpts shapes a leaf certificate.
type leafOpts struct {
	key        string // key kind; default p256
	cn         string
	dns        []string
	ips        []string
	notBefore  time.Time // default t0-10d
	lifetime   time.Duration
	scts       int
	mustStaple bool
	crl, ocsp  bool
	sigAlg     x509.SignatureAlgorithm
}

// issue signs a leaf under ca (nil: self-signed).
func issue(t testing.TB, ca *testCA, o leafOpts) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	if o.key == "" {
		o.key = "p256"
	}
	if o.notBefore.IsZero() {
		o.notBefore = t0.Add(-10 * day)
	}
	if o.lifetime == 0 {
		o.lifetime = 90 * day
	}
	k := testKey(t, o.key)
	tmpl := &x509.Certificate{SerialNumber: new(big.Int).Lsh(big.NewInt(serials.Add(1)+0x80), 120), Subject: pkix.Name{CommonName: o.cn},
		DNSNames: o.dns, NotBefore: o.notBefore, NotAfter: o.notBefore.Add(o.lifetime),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		SignatureAlgorithm: o.sigAlg, SubjectKeyId: []byte{0x5c, byte(serials.Load())}}
	for _, ip := range o.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	if o.crl {
		tmpl.CRLDistributionPoints = []string{"http://crl.test/inter.crl"}
	}
	if o.ocsp {
		tmpl.OCSPServer = []string{"http://ocsp.test"}
		tmpl.IssuingCertificateURL = []string{"http://aia.test/inter.der"}
	}
	if o.scts > 0 {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidSCTList, Value: sctList(t, o.scts)})
	}
	if o.mustStaple {
		v, _ := asn1.Marshal([]int{5})
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidTLSFeature, Value: v})
	}
	parent, signer := tmpl, k
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	return mustCreate(t, tmpl, parent, k.Public(), signer), k
}

// sctList encodes n fake SCTs as the embedded SCT list extension value.
func sctList(t testing.TB, n int) []byte {
	var body []byte
	for i := range n {
		sct := bytes.Repeat([]byte{byte(i + 1)}, 47)
		body = append(body, byte(len(sct)>>8), byte(len(sct)))
		body = append(body, sct...)
	}
	list := append([]byte{byte(len(body) >> 8), byte(len(body))}, body...)
	v, err := asn1.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// pki is the fixtures' hierarchy: a root, its intermediate, and an
// unrelated intermediate for broken chains.
type pki struct {
	root, inter, other *testCA
}

func newPKI(t testing.TB) *pki {
	root := newRoot(t, "Test Root R1", "root")
	return &pki{root: root, inter: newIntermediate(t, root, "Test Issuing CA 1", "inter"),
		other: newIntermediate(t, newRoot(t, "Other Root", "other"), "Other Issuing CA", "other")}
}

// roots returns a pool holding the test root.
func (p *pki) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.root.cert)
	return pool
}
