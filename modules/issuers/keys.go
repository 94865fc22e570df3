package issuers

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

// Account key types.
const (
	KeyP256    = "p256"
	KeyP384    = "p384"
	KeyRSA2048 = "rsa2048"
	KeyRSA3072 = "rsa3072"
	KeyRSA4096 = "rsa4096"
)

// DefaultKeyType is the account key type when none is given.
const DefaultKeyType = KeyP256

// KeyTypes lists the supported account key types.
var KeyTypes = []string{KeyP256, KeyP384, KeyRSA2048, KeyRSA3072, KeyRSA4096}

// generateKey makes a new account key of the given type and returns it with
// its PKCS #8 PEM encoding.
func generateKey(keyType string) (crypto.Signer, []byte, error) {
	var (
		key crypto.Signer
		err error
	)
	switch keyType {
	case KeyP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	case KeyRSA4096:
		key, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, nil, fmt.Errorf("unsupported account key type %q", keyType)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generating %s account key: %w", keyType, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding account key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseKey opens a PEM account key (PKCS #8, SEC 1 or PKCS #1). Its errors
// never include key material.
func parseKey(pemBytes []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("decoding account key: no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("decoding account key: not a signing key")
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("decoding account key: unsupported key encoding")
}

// keyTypeOf names the type of key.
func keyTypeOf(key crypto.Signer) string {
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyP256
		case elliptic.P384():
			return KeyP384
		}
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	}
	return "unknown"
}
