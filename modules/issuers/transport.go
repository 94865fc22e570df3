// Reaching a CA: HTTP clients with custom roots, the directory, ACME
// clients for a stored issuer.

package issuers

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/storage"
)

// httpClient returns the HTTP client for an issuer: the base client, or one
// whose transport also trusts the issuer's custom roots.
func (s *Service) httpClient(rootsPEM string) (*http.Client, error) {
	if rootsPEM == "" {
		return s.base, nil
	}
	key := sha256.Sum256([]byte(rootsPEM))
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[key]; ok {
		return c, nil
	}
	certs, err := parseRoots(rootsPEM)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	var tr *http.Transport
	switch t := s.base.Transport.(type) {
	case nil:
		tr = defaultCATransport()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("using custom roots: they need an *http.Transport, the HTTP client has a %T", t)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	tr.TLSClientConfig.RootCAs = pool
	c := &http.Client{Transport: tr, Timeout: s.base.Timeout}
	s.clients[key] = c
	return c, nil
}

// directory reads the issuer's directory meta, as an Error on failure.
func (s *Service) directory(ctx context.Context, iss *storage.Issuer) (DirectoryMeta, error) {
	hc, err := s.httpClient(iss.CustomRootsPEM)
	if err != nil {
		return DirectoryMeta{}, err
	}
	m, err := fetchDirectory(ctx, hc, iss.DirectoryURL, s.userAgent)
	if err != nil {
		return m, &Error{Kind: KindUnusable, Field: "directory_url",
			Message: fmt.Sprintf("the directory %s cannot be used: %v%s", iss.DirectoryURL, err, tlsHint(err))}
	}
	return m, nil
}

// acmeClient builds the low-level ACME client of an issuer.
func (s *Service) acmeClient(iss *storage.Issuer) (*acme.Client, error) {
	hc, err := s.httpClient(iss.CustomRootsPEM)
	if err != nil {
		return nil, err
	}
	return &acme.Client{Directory: iss.DirectoryURL, HTTPClient: hc, UserAgent: s.userAgent}, nil
}

// clientFor builds the ACME client and account of a registered issuer.
func (s *Service) clientFor(iss *storage.Issuer) (*acme.Client, acme.Account, error) {
	key, err := parseKey(iss.AccountKey.Reveal())
	if err != nil {
		return nil, acme.Account{}, fmt.Errorf("issuer %s: %w", iss.Name, err)
	}
	client, err := s.acmeClient(iss)
	if err != nil {
		return nil, acme.Account{}, err
	}
	return client, acme.Account{Status: acme.StatusValid, Contact: iss.Contacts, Location: iss.AccountURL, PrivateKey: key}, nil
}
