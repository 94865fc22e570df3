package inventory

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/internal/keys"
	"github.com/certlocker/caddy-certlocker/internal/renewal"
)

// MaxChainLength caps the certificates of one PEM chain.
const MaxChainLength = 20

// Metadata is everything the inventory reads out of a certificate and its
// chain; it is stored as the certificate's Meta (JSON) and returned by the
// API as is.
type Metadata struct {
	Subject        string   `json:"subject"`
	CommonName     string   `json:"common_name,omitempty"`
	DNSNames       []string `json:"dns_names,omitempty"`
	IPAddresses    []string `json:"ip_addresses,omitempty"`
	URIs           []string `json:"uris,omitempty"`
	EmailAddresses []string `json:"email_addresses,omitempty"`
	Wildcard       bool     `json:"wildcard"`

	Issuer             string `json:"issuer"`
	IssuerCommonName   string `json:"issuer_common_name,omitempty"`
	IssuerOrganization string `json:"issuer_organization,omitempty"`
	// CatalogID is the CA catalog entry the issuer DN maps to, if any.
	CatalogID string `json:"catalog_id,omitempty"`

	// Serial is the serial number, lowercase hex.
	Serial       string    `json:"serial"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	LifetimeDays float64   `json:"lifetime_days"`

	// KeyType is "RSA", "ECDSA", "Ed25519" or "unknown"; KeyBits its size
	// (the curve size for ECDSA); KeyCurve the ECDSA curve.
	KeyType            string `json:"key_type"`
	KeyBits            int    `json:"key_bits,omitempty"`
	KeyCurve           string `json:"key_curve,omitempty"`
	SignatureAlgorithm string `json:"signature_algorithm"`

	// FingerprintSHA256 is the SHA-256 of the certificate (DER), and
	// SPKISHA256 that of its SubjectPublicKeyInfo, both lowercase hex.
	FingerprintSHA256 string `json:"fingerprint_sha256"`
	SPKISHA256        string `json:"spki_sha256"`
	AuthorityKeyID    string `json:"authority_key_id,omitempty"`
	SubjectKeyID      string `json:"subject_key_id,omitempty"`
	// ARICertID is the certificate's ACME Renewal Information identifier
	// (RFC 9773): base64url(AKI) "." base64url(serial).
	ARICertID string `json:"ari_cert_id,omitempty"`
	// RenewalWindow is the CA's renewal window (ARI) as the workflow
	// engine last read it; renewal.WindowOf reads it from the stored JSON.
	RenewalWindow *renewal.Window `json:"renewal_window,omitempty"`

	CRLURLs      []string `json:"crl_urls,omitempty"`
	OCSPURLs     []string `json:"ocsp_urls,omitempty"`
	CAIssuerURLs []string `json:"ca_issuer_urls,omitempty"`
	// SCTCount is the number of embedded signed certificate timestamps.
	SCTCount   int  `json:"sct_count"`
	MustStaple bool `json:"must_staple"`
	IsCA       bool `json:"is_ca"`
	SelfSigned bool `json:"self_signed"`

	// Chain describes the certificates given after the leaf, in path
	// order, then any that are not on the leaf's path.
	Chain []ChainCert `json:"chain"`
	// Trust is the outcome of verifying the chain.
	Trust Trust `json:"trust"`

	// Source, IssuerID, WorkflowID and Profile say where the certificate
	// came from: an ACME client's workflow under a profile, or an import.
	Source     string `json:"source"`
	IssuerID   string `json:"issuer_id,omitempty"`
	WorkflowID string `json:"workflow_id,omitempty"`
	Profile    string `json:"profile,omitempty"`

	Rating Rating `json:"rating"`
}

// ChainCert describes one certificate of a chain.
type ChainCert struct {
	Subject            string    `json:"subject"`
	Issuer             string    `json:"issuer"`
	Serial             string    `json:"serial"`
	NotBefore          time.Time `json:"not_before"`
	NotAfter           time.Time `json:"not_after"`
	KeyType            string    `json:"key_type"`
	SignatureAlgorithm string    `json:"signature_algorithm"`
	FingerprintSHA256  string    `json:"fingerprint_sha256"`
	IsCA               bool      `json:"is_ca"`
	SelfSigned         bool      `json:"self_signed"`
	// OnPath is false for a certificate that signs nothing else in the
	// chain: a broken or padded bundle.
	OnPath bool `json:"on_path"`
}

// Trust is the outcome of chain verification.
type Trust struct {
	// Verified is true when the leaf verifies to a trusted root through
	// the given chain.
	Verified bool `json:"verified"`
	// TrustedBy is "system" (the system roots) or "acme_client" (the
	// custom roots of the ACME client that issued it).
	TrustedBy string `json:"trusted_by,omitempty"`
	// Path is the verified path, leaf to root, as subjects.
	Path []string `json:"path,omitempty"`
	// Error says why the chain does not verify.
	Error string `json:"error,omitempty"`
	// Expired is true when verification failed because a certificate of
	// the chain is outside its validity.
	Expired   bool      `json:"expired,omitempty"`
	CheckedAt time.Time `json:"checked_at"`
}

// Parsed is a certificate chain (and key, if given) read from PEM.
type Parsed struct {
	// Leaf is the end-entity certificate; Chain the rest, in path order,
	// then any certificates not on the leaf's path.
	Leaf  *x509.Certificate
	Chain []*x509.Certificate
	// Key is the private key if one was given; it matches Leaf.
	Key crypto.Signer
	// KeyPEM is Key as PKCS #8 PEM.
	KeyPEM []byte
	// ChainPEM is Leaf then Chain, re-encoded as plain PEM.
	ChainPEM []byte
	// Broken counts the certificates of Chain that are not on the path.
	Broken int
	Meta   Metadata
}

// InputError is a problem with what a caller gave: a field and a message
// for the operator. It never holds key material.
type InputError struct {
	Field   string
	Message string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Message }

func inputErr(field, format string, args ...any) error {
	return &InputError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Parse reads a PEM certificate chain and, optionally, a private key: the
// key may be in chainPEM or in keyPEM (not both). The leaf is the
// certificate that signs no other in the bundle (the first such); the
// others are put in path order. The key, if any, must match the leaf.
// Errors are *InputError values naming the field ("pem" or "key_pem").
func Parse(chainPEM, keyPEM []byte) (*Parsed, error) {
	certs, key, err := decodePEM(chainPEM, "pem")
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, inputErr("pem", "no certificate found: expected PEM blocks starting with -----BEGIN CERTIFICATE-----")
	}
	if len(bytes.TrimSpace(keyPEM)) > 0 {
		if key != nil {
			return nil, inputErr("key_pem", "the PEM chain already holds a private key: give the key once")
		}
		more, k, err := decodePEM(keyPEM, "key_pem")
		if err != nil {
			return nil, err
		}
		if len(more) > 0 {
			return nil, inputErr("key_pem", "holds a certificate: put certificates in pem and only the key here")
		}
		if k == nil {
			return nil, inputErr("key_pem", "no private key found: expected a PEM block such as -----BEGIN PRIVATE KEY-----")
		}
		key = k
	}

	p := &Parsed{}
	p.Leaf, p.Chain, p.Broken = orderChain(certs)
	if key != nil {
		if !publicKeysEqual(key.Public(), p.Leaf.PublicKey) {
			field := "key_pem"
			if len(bytes.TrimSpace(keyPEM)) == 0 {
				field = "pem"
			}
			return nil, inputErr(field, "the private key does not match the certificate's public key")
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encoding private key: %w", err)
		}
		p.Key = key
		p.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	var buf bytes.Buffer
	for _, c := range append([]*x509.Certificate{p.Leaf}, p.Chain...) {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	p.ChainPEM = buf.Bytes()
	p.Meta = describe(p.Leaf, p.Chain, len(p.Chain)-p.Broken)
	return p, nil
}

// decodePEM reads every PEM block: certificates, and at most one private
// key. Anything else is an error naming field.
func decodePEM(data []byte, field string) ([]*x509.Certificate, crypto.Signer, error) {
	var (
		certs []*x509.Certificate
		key   crypto.Signer
		seen  = map[string]bool{}
	)
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, inputErr(field, "certificate %d cannot be parsed: %v", len(certs)+1, err)
			}
			if seen[string(c.Raw)] {
				continue
			}
			seen[string(c.Raw)] = true
			certs = append(certs, c)
			if len(certs) > MaxChainLength {
				return nil, nil, inputErr(field, "more than %d certificates in one chain", MaxChainLength)
			}
		case keys.IsKeyBlock(block.Type):
			if key != nil {
				return nil, nil, inputErr(field, "holds more than one private key")
			}
			k, err := keys.ParseBlock(block)
			if err != nil {
				return nil, nil, inputErr(field, "%v", err)
			}
			key = k
		default:
			return nil, nil, inputErr(field, "unexpected PEM block %q: give certificates and at most one private key", block.Type)
		}
	}
	if len(certs) == 0 && key == nil && len(bytes.TrimSpace(data)) > 0 {
		return nil, nil, inputErr(field, "not PEM: expected blocks starting with -----BEGIN CERTIFICATE-----")
	}
	return certs, key, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// orderChain picks the leaf and puts the other certificates in path
// order, followed by those not on the path (counted as broken).
func orderChain(certs []*x509.Certificate) (leaf *x509.Certificate, chain []*x509.Certificate, broken int) {
	signs := func(parent, child *x509.Certificate) bool {
		return parent != child && bytes.Equal(child.RawIssuer, parent.RawSubject) && child.CheckSignatureFrom(parent) == nil
	}
	leaf = certs[0]
leafSearch:
	for _, c := range certs {
		for _, other := range certs {
			if signs(c, other) {
				continue leafSearch
			}
		}
		leaf = c
		break
	}
	used := map[*x509.Certificate]bool{leaf: true}
	for cur := leaf; ; {
		var next *x509.Certificate
		for _, c := range certs {
			if !used[c] && signs(c, cur) {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		used[next] = true
		chain = append(chain, next)
		cur = next
	}
	for _, c := range certs {
		if !used[c] {
			chain = append(chain, c)
			broken++
		}
	}
	return leaf, chain, broken
}

var (
	oidSCTList    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 4, 2}
	oidTLSFeature = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}
)

// describe fills the metadata that depends on the certificates alone.
func describe(leaf *x509.Certificate, chain []*x509.Certificate, onPath int) Metadata {
	m := Metadata{
		Subject:            leaf.Subject.String(),
		CommonName:         leaf.Subject.CommonName,
		Issuer:             leaf.Issuer.String(),
		IssuerCommonName:   leaf.Issuer.CommonName,
		Serial:             serialHex(leaf),
		NotBefore:          leaf.NotBefore.UTC(),
		NotAfter:           leaf.NotAfter.UTC(),
		LifetimeDays:       leaf.NotAfter.Sub(leaf.NotBefore).Hours() / 24,
		SignatureAlgorithm: leaf.SignatureAlgorithm.String(),
		FingerprintSHA256:  sha256Hex(leaf.Raw),
		SPKISHA256:         sha256Hex(leaf.RawSubjectPublicKeyInfo),
		AuthorityKeyID:     hex.EncodeToString(leaf.AuthorityKeyId),
		SubjectKeyID:       hex.EncodeToString(leaf.SubjectKeyId),
		CRLURLs:            leaf.CRLDistributionPoints,
		OCSPURLs:           leaf.OCSPServer,
		CAIssuerURLs:       leaf.IssuingCertificateURL,
		EmailAddresses:     leaf.EmailAddresses,
		IsCA:               leaf.IsCA,
		SelfSigned:         selfSigned(leaf),
		Chain:              []ChainCert{},
	}
	if len(leaf.Issuer.Organization) > 0 {
		m.IssuerOrganization = leaf.Issuer.Organization[0]
	}
	for _, n := range leaf.DNSNames {
		n = strings.ToLower(n)
		m.DNSNames = append(m.DNSNames, n)
		if strings.HasPrefix(n, "*.") {
			m.Wildcard = true
		}
	}
	for _, ip := range leaf.IPAddresses {
		m.IPAddresses = append(m.IPAddresses, ip.String())
	}
	for _, u := range leaf.URIs {
		m.URIs = append(m.URIs, u.String())
	}
	m.KeyType, m.KeyBits, m.KeyCurve = keyInfo(leaf.PublicKey)
	if len(leaf.AuthorityKeyId) > 0 {
		if id, err := acme.ARIUniqueIdentifier(leaf); err == nil {
			m.ARICertID = id
		}
	}
	for _, ext := range leaf.Extensions {
		switch {
		case ext.Id.Equal(oidSCTList):
			m.SCTCount = countSCTs(ext.Value)
		case ext.Id.Equal(oidTLSFeature):
			var features []int
			if _, err := asn1.Unmarshal(ext.Value, &features); err == nil {
				for _, f := range features {
					if f == 5 { // status_request
						m.MustStaple = true
					}
				}
			}
		}
	}
	for i, c := range chain {
		kt, bits, curve := keyInfo(c.PublicKey)
		m.Chain = append(m.Chain, ChainCert{
			Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: serialHex(c),
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), KeyType: keyLabel(kt, bits, curve),
			SignatureAlgorithm: c.SignatureAlgorithm.String(), FingerprintSHA256: sha256Hex(c.Raw),
			IsCA: c.IsCA, SelfSigned: selfSigned(c), OnPath: i < onPath,
		})
	}
	return m
}

func serialHex(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// selfSigned reports whether c is signed by its own key (CA or not:
// CheckSignatureFrom would refuse a non-CA parent).
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func keyInfo(pub crypto.PublicKey) (kind string, bits int, curve string) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RSA", k.N.BitLen(), ""
	case *ecdsa.PublicKey:
		return "ECDSA", k.Curve.Params().BitSize, k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519", 256, ""
	}
	return "unknown", 0, ""
}

// keyLabel is the short key description stored in the key_type column:
// "RSA 2048", "ECDSA P-256", "Ed25519".
func keyLabel(kind string, bits int, curve string) string {
	switch kind {
	case "RSA":
		return fmt.Sprintf("RSA %d", bits)
	case "ECDSA":
		return "ECDSA " + curve
	}
	return kind
}

// countSCTs counts the entries of an embedded SignedCertificateTimestampList
// (RFC 6962 section 3.3): an OCTET STRING holding a TLS vector of vectors.
func countSCTs(ext []byte) int {
	var list []byte
	if _, err := asn1.Unmarshal(ext, &list); err != nil || len(list) < 2 {
		return 0
	}
	total := int(list[0])<<8 | int(list[1])
	body := list[2:]
	if total > len(body) {
		return 0
	}
	body = body[:total]
	n := 0
	for len(body) >= 2 {
		l := int(body[0])<<8 | int(body[1])
		if l == 0 || 2+l > len(body) {
			break
		}
		body = body[2+l:]
		n++
	}
	return n
}
