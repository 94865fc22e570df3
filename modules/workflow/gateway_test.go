package workflow_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
)

// A gateway workflow finalizes with the edge's CSR: the certificate
// carries the edge's public key, and neither the workflow nor the
// inventory ever holds a private key.
func TestGatewayWorkflowIssuesSuppliedCSR(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	eng, _ := e.engine("node-a", nil)
	name := e.name("edge")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ids := []storage.Identifier{{Value: name}}

	refusals := map[string]workflow.Request{
		"not gateway":   {IssuerID: e.issuer.ID, Identifiers: ids, CSR: csr},
		"garbage":       {IssuerID: e.issuer.ID, Identifiers: ids, CSR: []byte("nope"), Trigger: workflow.TriggerGateway},
		"other names":   {IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: e.name("other")}}, CSR: csr, Trigger: workflow.TriggerGateway},
		"more in order": {IssuerID: e.issuer.ID, Identifiers: []storage.Identifier{{Value: name}, {Value: e.name("x")}}, CSR: csr, Trigger: workflow.TriggerGateway},
	}
	for label, r := range refusals {
		t.Run(label, func(t *testing.T) {
			var ie *workflow.InvalidError
			if _, err := eng.Create(t.Context(), r); !errors.As(err, &ie) || ie.Field != "csr" {
				t.Fatalf("err = %v, want an invalid csr", err)
			}
		})
	}

	w, err := eng.Create(t.Context(), workflow.Request{IssuerID: e.issuer.ID, Identifiers: ids, CSR: csr, Trigger: workflow.TriggerGateway})
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng)
	w = get(t, e.store, w.ID)
	if w.State != storage.StateIssued || !w.PrivateKey.IsZero() {
		t.Fatalf("workflow %s: %s (key held: %v)", w.State, w.Status, !w.PrivateKey.IsZero())
	}
	x := leaf(t, e.store, w.CertificateID)
	if !key.PublicKey.Equal(x.PublicKey) {
		t.Fatal("the certificate does not carry the edge's public key")
	}
	c, err := e.store.Certificates().Get(t.Context(), w.CertificateID)
	if err != nil || !c.PrivateKey.IsZero() {
		t.Fatalf("inventory certificate: %v, key held: %v", err, c != nil && !c.PrivateKey.IsZero())
	}
	events, _ := eng.Events(t.Context(), w.ID, 0, 100)
	for _, ev := range events {
		if ev.Step == "finalizing" && ev.Message != "" && ev.Message[:min(len(ev.Message), 15)] == "certificate key" {
			t.Fatalf("a gateway workflow generated a key: %s", ev.Message)
		}
	}
}
