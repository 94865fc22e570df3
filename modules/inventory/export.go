package inventory

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"

	"go.uber.org/zap"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Export formats.
const (
	// FormatChain is the leaf and its chain, PEM.
	FormatChain = "chain"
	// FormatLeaf is the leaf alone, PEM.
	FormatLeaf = "leaf"
	// FormatBundle is the private key followed by the chain, PEM.
	FormatBundle = "bundle"
	// FormatPKCS12 is key, leaf and chain in a password-protected PKCS #12
	// file (AES-256-CBC, PBKDF2-HMAC-SHA-256, HMAC-SHA-256 MAC).
	FormatPKCS12 = "pkcs12"
)

// ExportRequest asks for one certificate in one format.
type ExportRequest struct {
	ID     string
	Format string
	// Password protects a PKCS #12 file; required for FormatPKCS12.
	Password string
	// Role decides whether the key may leave (Config.KeyExportRoles);
	// Actor is recorded in the audit log.
	Role  Role
	Actor string
}

// Exported is an exported certificate, ready to serve.
type Exported struct {
	Data        []byte
	ContentType string
	Filename    string
	KeyIncluded bool
}

// MinPKCS12Password is the shortest password accepted for a PKCS #12 export.
const MinPKCS12Password = 8

// Export returns a certificate in the requested format. Formats holding
// the private key are refused with ErrKeyExportForbidden for roles the
// policy does not allow. Every export, allowed or refused, is audited as
// certificate.export with the format and whether the key was included.
func (s *Service) Export(ctx context.Context, req ExportRequest) (*Exported, error) {
	withKey := false
	switch req.Format {
	case FormatChain, FormatLeaf:
	case FormatBundle:
		withKey = true
	case FormatPKCS12:
		withKey = true
		if len(req.Password) < MinPKCS12Password {
			return nil, inputErr("password", "a PKCS #12 export needs a password of at least %d characters", MinPKCS12Password)
		}
	default:
		return nil, inputErr("format", "unknown format %q: use chain, leaf, bundle or pkcs12", req.Format)
	}
	c, err := s.Get(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	record := func(allowed bool, reason string) error {
		d, _ := json.Marshal(map[string]any{"format": req.Format, "key_included": withKey && allowed,
			"allowed": allowed, "role": req.Role, "reason": reason})
		result := storage.AuditOK
		if !allowed {
			result = storage.AuditRefused
		}
		if err := s.audit(ctx, s.store, req.Actor, "certificate.export", c, result, d); err != nil {
			return fmt.Errorf("auditing certificate export: %w", err)
		}
		return nil
	}
	if withKey && !s.keyRoles[req.Role] {
		if err := record(false, "role may not export keys"); err != nil {
			return nil, err
		}
		s.logger.Warn("private key export refused", zap.String("certificate_id", c.ID), zap.String("role", string(req.Role)),
			zap.String("actor", req.Actor))
		return nil, fmt.Errorf("%w: role %q (allowed: inventory.key_export_roles)", ErrKeyExportForbidden, req.Role)
	}
	if withKey && c.PrivateKey.IsZero() {
		if err := record(false, "no private key stored"); err != nil {
			return nil, err
		}
		return nil, ErrNoPrivateKey
	}

	out := &Exported{KeyIncluded: withKey, Filename: fileName(c.CommonName, c.ID)}
	switch req.Format {
	case FormatChain:
		out.Data, out.ContentType = []byte(c.ChainPEM), "application/pem-certificate-chain"
		out.Filename += ".pem"
	case FormatLeaf:
		block, _ := pem.Decode([]byte(c.ChainPEM))
		if block == nil {
			return nil, fmt.Errorf("exporting certificate %s: stored chain holds no PEM", c.ID)
		}
		out.Data, out.ContentType = pem.EncodeToMemory(block), "application/x-pem-file"
		out.Filename += ".crt.pem"
	case FormatBundle:
		var b bytes.Buffer
		b.Write(c.PrivateKey.Reveal())
		b.WriteString(c.ChainPEM)
		out.Data, out.ContentType = b.Bytes(), "application/x-pem-file"
		out.Filename += ".bundle.pem"
	case FormatPKCS12:
		p, err := Parse([]byte(c.ChainPEM), c.PrivateKey.Reveal())
		if err != nil {
			return nil, fmt.Errorf("exporting certificate %s: reading stored chain and key: %w", c.ID, err)
		}
		var chain []*x509.Certificate
		for i, cc := range p.Chain {
			if i < len(p.Chain)-p.Broken {
				chain = append(chain, cc)
			}
		}
		out.Data, err = pkcs12.Modern.Encode(p.Key, p.Leaf, chain, req.Password)
		if err != nil {
			return nil, fmt.Errorf("exporting certificate %s as PKCS #12: %w", c.ID, err)
		}
		out.ContentType = "application/x-pkcs12"
		out.Filename += ".p12"
	}
	if err := record(true, ""); err != nil {
		return nil, err
	}
	if withKey {
		s.logger.Info("private key exported", zap.String("certificate_id", c.ID), zap.String("format", req.Format),
			zap.String("role", string(req.Role)), zap.String("actor", req.Actor))
	}
	return out, nil
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// fileName makes a download name from the common name (a wildcard's "*"
// becomes "wildcard").
func fileName(cn, id string) string {
	cn = strings.ReplaceAll(cn, "*", "wildcard")
	cn = strings.Trim(unsafeFileChars.ReplaceAllString(cn, "_"), "._")
	if cn == "" {
		return id
	}
	return cn
}
