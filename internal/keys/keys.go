// Package keys generates and reads the private keys CertLocker makes: ACME
// account keys and certificate keys. Errors never contain key material.
package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Key types.
const (
	P256    = "p256"
	P384    = "p384"
	RSA2048 = "rsa2048"
	RSA3072 = "rsa3072"
	RSA4096 = "rsa4096"
)

// Types lists the supported key types; P256 is the default.
var Types = []string{P256, P384, RSA2048, RSA3072, RSA4096}

// Valid reports whether t names a supported key type.
func Valid(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// Generate makes a new key of type t and returns it with its PKCS #8 PEM.
func Generate(t string) (crypto.Signer, []byte, error) {
	var (
		key crypto.Signer
		err error
	)
	switch t {
	case P256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case P384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	case RSA4096:
		key, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, nil, fmt.Errorf("unsupported key type %q", t)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generating %s key: %w", t, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding %s key: %w", t, err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Parse opens the first PEM block of pemBytes as a private key (see
// ParseBlock).
func Parse(pemBytes []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("decoding private key: no PEM block")
	}
	k, err := ParseBlock(block)
	if err != nil {
		return nil, fmt.Errorf("decoding private key: %w", err)
	}
	return k, nil
}

// IsKeyBlock reports whether a PEM block type holds a private key, readable
// or not (ParseBlock says why not).
func IsKeyBlock(typ string) bool {
	switch typ {
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return true
	}
	return false
}

// ParseBlock reads a private key PEM block in the format its type names:
// "PRIVATE KEY" (PKCS #8), "RSA PRIVATE KEY" (PKCS #1) or "EC PRIVATE KEY"
// (SEC 1). Its errors name the format and what is wrong (an encrypted key,
// a key that does not parse as its format, one that cannot sign), never
// any key material.
func ParseBlock(block *pem.Block) (crypto.Signer, error) {
	if _, encrypted := block.Headers["DEK-Info"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("the private key is encrypted: give it unencrypted (openssl pkey -in key.pem)")
	}
	var (
		k      any
		err    error
		format string
	)
	switch block.Type {
	case "PRIVATE KEY":
		format = "PKCS #8"
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		format = "PKCS #1"
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		format = "SEC 1"
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("a PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, errors.New("the private key cannot be parsed as " + format)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T: not a signing key", k)
	}
	return s, nil
}

// TypeOf names the type of key ("unknown" for others).
func TypeOf(key crypto.Signer) string {
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return P256
		case elliptic.P384():
			return P384
		}
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	}
	return "unknown"
}
