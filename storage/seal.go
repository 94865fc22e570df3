package storage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the size of an encryption key: AES-256.
const KeySize = 32

// sealVersion is the first byte of every sealed value.
const sealVersion = 1

// ErrUnknownKey means a sealed value names a key the Sealer does not hold.
var ErrUnknownKey = errors.New("sealed with an encryption key that is not configured")

// Sealer encrypts secrets with AES-256-GCM. It holds one current key, used
// for new values, and any number of previous keys, used only to open values
// sealed before a rotation. A sealed value records the ID of its key, so
// keys can be rotated without downtime: add the new key as current, keep
// the old one as previous, run Store.Rekey, then drop the old key.
//
// Each value is bound to where it is stored (its associated data, e.g.
// "issuers.eab_mac_key/iss_123"), so a sealed value copied into another
// row or column does not open.
type Sealer struct {
	current string
	aeads   map[string]cipher.AEAD
}

// NewSealer returns a Sealer sealing with current and opening with current
// and previous keys. Every key must be KeySize bytes.
func NewSealer(current []byte, previous ...[]byte) (*Sealer, error) {
	s := &Sealer{aeads: make(map[string]cipher.AEAD)}
	id, err := s.add(current)
	if err != nil {
		return nil, fmt.Errorf("current encryption key: %w", err)
	}
	s.current = id
	for i, k := range previous {
		if _, err := s.add(k); err != nil {
			return nil, fmt.Errorf("previous encryption key %d: %w", i+1, err)
		}
	}
	return s, nil
}

func (s *Sealer) add(key []byte) (string, error) {
	if len(key) != KeySize {
		return "", fmt.Errorf("key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	id := KeyID(key)
	s.aeads[id] = aead
	return id, nil
}

// KeyID returns the public identifier of a key: "k" and the first 8 bytes
// of its SHA-256, hex. It reveals nothing usable about the key.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("certlocker key id\x00"), key...))
	return "k" + hex.EncodeToString(sum[:8])
}

// CurrentKeyID is the ID of the key new values are sealed with.
func (s *Sealer) CurrentKeyID() string { return s.current }

// Seal encrypts plaintext bound to ad. An empty plaintext seals to nil.
// Layout: version byte, key ID length, key ID, 12-byte nonce, ciphertext+tag.
func (s *Sealer) Seal(plaintext []byte, ad string) ([]byte, error) {
	if len(plaintext) == 0 {
		return nil, nil
	}
	aead := s.aeads[s.current]
	out := make([]byte, 0, 2+len(s.current)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, sealVersion, byte(len(s.current)))
	out = append(out, s.current...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generating nonce: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, []byte(ad)), nil
}

// Open decrypts a value sealed for ad. A nil or empty value opens to nil.
func (s *Sealer) Open(sealed []byte, ad string) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, nil
	}
	id, rest, err := splitSealed(sealed)
	if err != nil {
		return nil, err
	}
	aead, ok := s.aeads[id]
	if !ok {
		return nil, fmt.Errorf("opening %s: key %s: %w", ad, id, ErrUnknownKey)
	}
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("opening %s: sealed value is truncated", ad)
	}
	pt, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(ad))
	if err != nil {
		return nil, fmt.Errorf("opening %s: sealed value does not authenticate (wrong key, corrupted, or moved from another row)", ad)
	}
	return pt, nil
}

// SealedKeyID returns the ID of the key a value was sealed with.
func SealedKeyID(sealed []byte) (string, error) {
	id, _, err := splitSealed(sealed)
	return id, err
}

func splitSealed(sealed []byte) (string, []byte, error) {
	if len(sealed) < 2 || sealed[0] != sealVersion || len(sealed) < 2+int(sealed[1]) {
		return "", nil, errors.New("not a sealed value")
	}
	n := int(sealed[1])
	return string(sealed[2 : 2+n]), sealed[2+n:], nil
}

// ParseKey decodes an encryption key given as 64 hex characters or as
// standard or URL-safe base64 (padded or not) of 32 bytes. Errors never
// contain the input.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("encryption key is empty")
	}
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("encryption key (redacted) decodes to %d bytes, want %d", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("encryption key (redacted) is neither 64 hex characters nor base64 of %d bytes", KeySize)
}

// NewKey generates a random encryption key.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generating encryption key: %w", err)
	}
	return k, nil
}
