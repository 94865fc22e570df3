package workflow

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/storage"
)

// A gateway workflow (trigger TriggerGateway) finalizes with the CSR an
// edge sent to CertLocker's ACME gateway: the edge keeps its private key,
// the workflow generates none, and the inventory certificate it makes
// holds no key.

// checkSuppliedCSR validates a request's CSR: only for trigger gateway,
// well-formed, correctly signed, naming exactly the request's identifiers.
func checkSuppliedCSR(r *Request) error {
	if len(r.CSR) == 0 {
		return nil
	}
	if r.Trigger != TriggerGateway {
		return invalid("csr", "a CSR is supplied only by the gateway (trigger %q)", TriggerGateway)
	}
	csr, err := x509.ParseCertificateRequest(r.CSR)
	if err != nil {
		return invalid("csr", "parsing the CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return invalid("csr", "checking the CSR's signature: %v", err)
	}
	var names []string
	for _, n := range csr.DNSNames {
		names = append(names, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	if cn := strings.ToLower(csr.Subject.CommonName); cn != "" && !slices.Contains(names, cn) {
		if ip := net.ParseIP(cn); ip == nil || !slices.Contains(names, ip.String()) {
			names = append(names, cn)
		}
	}
	want := make([]string, 0, len(r.Identifiers))
	for _, id := range r.Identifiers {
		want = append(want, id.Value)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		return invalid("csr", "the CSR names %s, the order %s", strings.Join(names, ", "), strings.Join(want, ", "))
	}
	return nil
}

// finalCSR returns the CSR to finalize with: the supplied one of a gateway
// workflow, else one for the workflow's own key (generated and stored
// first). errEnded means it failed the workflow and persisted that.
func (s *session) finalCSR(ctx context.Context) ([]byte, error) {
	if len(s.d.CSR) > 0 {
		return s.d.CSR, nil
	}
	key, err := s.certKey(ctx)
	if err != nil {
		return nil, err
	}
	csr, err := s.csr(key)
	if err != nil {
		if ferr := s.fail(ctx, "finalizing", "", err.Error(), nil); ferr != nil {
			return nil, ferr
		}
		return nil, fmt.Errorf("%w: %v", errEnded, err)
	}
	return csr, nil
}

// alternatesOf returns, for a gateway workflow, the CA's chains other
// than the one taken, so that the gateway can offer them to the edge.
func alternatesOf(d *orderData, chains []acme.Certificate, taken acme.Certificate) []string {
	if len(d.CSR) == 0 {
		return nil
	}
	var out []string
	for _, c := range chains {
		if !bytes.Equal(c.ChainPEM, taken.ChainPEM) {
			out = append(out, string(c.ChainPEM))
		}
	}
	return out
}

// AlternateChains returns the CA's other chains (PEM, leaf first) for the
// certificate of a gateway workflow: the edge may download them.
func AlternateChains(w *storage.Workflow) []string {
	if len(w.Data) == 0 {
		return nil
	}
	var d struct {
		Alternates []string `json:"alternate_chains"`
	}
	if json.Unmarshal(w.Data, &d) != nil {
		return nil
	}
	return d.Alternates
}
