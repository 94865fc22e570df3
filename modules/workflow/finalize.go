package workflow

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/internal/keys"
	"github.com/certlocker/caddy-certlocker/storage"
)

// errEnded tells a caller that the step already ended the workflow.
var errEnded = errors.New("workflow ended")

// finalize sends the CSR once the order is ready, or, when the CA already
// has it (a run that stopped after sending it), waits for the CA to issue.
// A CSR is sent once per order: a processing order is polled, never
// finalized again.
func (s *session) finalize(ctx context.Context) error {
	w, d := s.w, s.d
	if w.Trigger == TriggerPreauthorization {
		return s.authorized(ctx) // a pre-authorization never finalizes
	}
	order, err := s.cl.GetOrder(ctx, s.acct, acme.Order{Location: w.OrderURL})
	if err != nil {
		return s.failOrRetry(ctx, "finalizing", "", err)
	}
	order.Location = w.OrderURL
	start := s.e.opts.Clock()
	switch order.Status {
	case "ready":
		csr, err := s.finalCSR(ctx)
		if errors.Is(err, errEnded) {
			return nil // failed and persisted
		}
		if err != nil {
			return err
		}
		// the session's client never polls (see withSinkClient): an order
		// the CA is still issuing comes back processing, with the error
		// of a poll that did not run, and the engine polls it below
		fin := &retryAfterSink{}
		order, err = s.cl.FinalizeOrder(withSink(ctx, fin), s.acct, order, csr)
		if err != nil && order.Status != "processing" {
			return s.failOrRetry(ctx, "finalizing", "", err)
		}
		if order.Status == "processing" {
			d.FinalizeRequested = true
			if err := s.save(ctx, storage.WorkflowEvent{Step: "finalizing",
				Message: "the CA accepted the CSR and is issuing the certificate; polling the order"}); err != nil {
				return err
			}
			if order, err = s.awaitIssuance(ctx, order, fin.get()); err != nil {
				return s.failOrRetry(ctx, "finalizing", "", err)
			}
		}
	case "processing":
		if err := s.save(ctx, storage.WorkflowEvent{Step: "finalizing", Message: "the CA is issuing the certificate; polling the order"}); err != nil {
			return err
		}
		if order, err = s.awaitIssuance(ctx, order, 0); err != nil {
			return s.failOrRetry(ctx, "finalizing", "", err)
		}
	case "valid":
	case "pending":
		w.State = storage.StateAuthorizing
		s.live = nil
		return s.save(ctx, storage.WorkflowEvent{Step: "finalizing", Message: "order still needs authorizations"})
	default:
		return s.fail(ctx, "finalizing", "", "order is "+order.Status, order.Error)
	}
	if order.Status != "valid" || order.Certificate == "" {
		return s.fail(ctx, "finalizing", "", "the CA did not issue: order is "+order.Status, order.Error)
	}
	d.CertURL = order.Certificate
	w.State = storage.StateDownloading
	return s.save(ctx, storage.WorkflowEvent{Step: "finalizing", Message: "certificate issued by the CA", Duration: s.e.opts.Clock().Sub(start)})
}

// awaitIssuance polls a processing order until the CA decides: first
// after 20 ms, doubling up to 2 s, or after the CA's Retry-After (first:
// the one its finalize answer carried, if any).
func (s *session) awaitIssuance(ctx context.Context, order acme.Order, first time.Duration) (acme.Order, error) {
	ctx, cancel := context.WithTimeout(ctx, s.e.settings().ValidationTimeout)
	defer cancel()
	ra := &retryAfterSink{}
	if first > 0 {
		ra.set(first)
	}
	ctx = withSink(ctx, ra)
	var pace pollPacer
	for order.Status == "processing" {
		if err := pace.pause(ctx, ra, "issue"); err != nil {
			return order, err
		}
		ra.reset()
		o, err := s.cl.GetOrder(ctx, s.acct, order)
		if err != nil {
			return order, err
		}
		o.Location = order.Location
		order = o
	}
	return order, nil
}

// certKey returns the workflow's certificate key, generating and storing
// it (sealed) before it is used.
func (s *session) certKey(ctx context.Context) (crypto.Signer, error) {
	if !s.w.PrivateKey.IsZero() {
		k, err := keys.Parse(s.w.PrivateKey.Reveal())
		if err != nil {
			if ferr := s.fail(ctx, "finalizing", "", "the stored certificate key cannot be read: "+err.Error(), nil); ferr != nil {
				return nil, ferr
			}
			return nil, errEnded
		}
		return k, nil
	}
	key, keyPEM, err := keys.Generate(keyTypeName(s.w.KeyType))
	if err != nil {
		return nil, err
	}
	s.w.PrivateKey = storage.NewSecret(keyPEM)
	if err := s.save(ctx, storage.WorkflowEvent{Step: "finalizing", Message: "certificate key generated (" + keyTypeName(s.w.KeyType) + ")"}); err != nil {
		return nil, err
	}
	return key, nil
}

func (s *session) csr(key crypto.Signer) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	for _, id := range s.w.Identifiers {
		switch id.Type {
		case "ip":
			ip := net.ParseIP(id.Value)
			if ip == nil {
				return nil, fmt.Errorf("invalid IP identifier %q", id.Value)
			}
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, id.Value)
		}
	}
	if len(tmpl.DNSNames) > 0 && len(tmpl.DNSNames[0]) <= 64 {
		tmpl.Subject = pkix.Name{CommonName: tmpl.DNSNames[0]}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	return der, nil
}

// download fetches the chain (the ACME client's preferred one among the
// CA's alternates) and hands it to the inventory.
func (s *session) download(ctx context.Context) error {
	w, d := s.w, s.d
	start := s.e.opts.Clock()
	chains, err := s.cl.GetCertificateChain(ctx, s.acct, d.CertURL)
	if err != nil {
		return s.failOrRetry(ctx, "downloading", "", err)
	}
	if len(chains) == 0 {
		return s.failOrRetry(ctx, "downloading", "", errors.New("the CA returned no certificate chain"))
	}
	iss, err := s.issuer(ctx)
	if err != nil {
		return s.failOrRetry(ctx, "downloading", "", err)
	}
	chain, why := preferredChain(chains, iss.PreferredChain)
	d.Alternates = alternatesOf(d, chains, chain)
	if s.deps.Inventory == nil {
		return s.failOrRetry(ctx, "downloading", "", errors.New("no inventory configured"))
	}
	profile := d.Profile
	if profile == "" {
		profile = w.Profile
	}
	// the key may already have moved to the inventory (a run that stopped
	// after adding the certificate): adding the same leaf again returns it
	cert, err := s.deps.Inventory.AddIssued(ctx, chain.ChainPEM, w.PrivateKey.Reveal(), w.IssuerID, w.ID, profile)
	if err != nil {
		return s.failOrRetry(ctx, "downloading", "", err)
	}
	// the inventory holds the key from now on
	w.PrivateKey = storage.Secret{}
	// clean up before the final persist: a crash in between redoes the
	// (idempotent) download and cleanup instead of leaving records behind
	s.e.cleanup(ctx, w, d)
	w.CertificateID = cert.ID
	w.State = storage.StateIssued
	w.Status = "issued: " + cert.ID
	msg := "certificate stored in the inventory as " + cert.ID
	if why != "" {
		msg += "; " + why
	}
	if err := s.save(ctx, storage.WorkflowEvent{Step: "downloading", Message: msg, Duration: s.e.opts.Clock().Sub(start)}); err != nil {
		return err
	}
	s.e.opts.Metrics.issued(w.IssuerID, s.e.opts.Clock().Sub(w.CreatedAt))
	s.e.emit("certlocker.cert_issued", map[string]any{"workflow_id": w.ID, "certificate_id": cert.ID, "issuer_id": w.IssuerID,
		"names": cert.Names, "not_after": cert.NotAfter})
	s.log.Info("certificate obtained", zap.String("certificate_id", cert.ID), zap.String("issuer_id", w.IssuerID),
		zap.Strings("identifiers", cert.Names))
	return nil
}

// preferredChain picks the chain whose root (the issuer of its last
// certificate) has the common name want, else one that names want as the
// subject or issuer of any of its certificates, else the CA's default
// (the first). It says which it took when want was set.
func preferredChain(chains []acme.Certificate, want string) (acme.Certificate, string) {
	if want == "" || len(chains) < 2 {
		return chains[0], "" // download checked that there is one
	}
	var anyMatch = -1
	for i, c := range chains {
		certs := parseChain(c.ChainPEM)
		if len(certs) == 0 {
			continue
		}
		if certs[len(certs)-1].Issuer.CommonName == want {
			return c, fmt.Sprintf("chain to root %q (preferred chain, %d of %d)", want, i+1, len(chains))
		}
		if anyMatch < 0 {
			for _, x := range certs {
				if x.Subject.CommonName == want || x.Issuer.CommonName == want {
					anyMatch = i
					break
				}
			}
		}
	}
	if anyMatch >= 0 {
		return chains[anyMatch], fmt.Sprintf("chain through %q (preferred chain, %d of %d)", want, anyMatch+1, len(chains))
	}
	return chains[0], fmt.Sprintf("no chain of the %d offered names %q; kept the CA's default", len(chains), want)
}

func parseChain(chainPEM []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if x, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, x)
		}
	}
}

// ValidKeyType reports whether t names a supported certificate key type
// ("" means the default, P-256).
func ValidKeyType(t string) bool { return t == "" || keys.Valid(t) }

func keyTypeName(t string) string {
	if t == "" {
		return keys.P256
	}
	return t
}
