package issuers

import (
	"crypto"

	"github.com/certlocker/caddy-certlocker/internal/keys"
)

// Account key types.
const (
	KeyP256    = keys.P256
	KeyP384    = keys.P384
	KeyRSA2048 = keys.RSA2048
	KeyRSA3072 = keys.RSA3072
	KeyRSA4096 = keys.RSA4096
)

// DefaultKeyType is the account key type when none is given.
const DefaultKeyType = KeyP256

// KeyTypes lists the supported account key types.
var KeyTypes = keys.Types

// generateKey makes a new account key with its PKCS #8 PEM.
func generateKey(keyType string) (crypto.Signer, []byte, error) { return keys.Generate(keyType) }

// parseKey opens a PEM account key (PKCS #8, SEC 1 or PKCS #1).
func parseKey(pemBytes []byte) (crypto.Signer, error) { return keys.Parse(pemBytes) }

// keyTypeOf names the type of key.
func keyTypeOf(key crypto.Signer) string { return keys.TypeOf(key) }
