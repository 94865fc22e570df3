package gateway

import (
	"testing"

	"github.com/smallstep/certificates/acme"
)

// An authorization without challenges is never stored (HAProxy 3.3 fails
// on one): the guard runs before anything else.
func TestAuthorizationWithoutChallengesRefused(t *testing.T) {
	d := &db{}
	err := d.CreateAuthorization(t.Context(), &acme.Authorization{Identifier: acme.Identifier{Type: acme.DNS, Value: "a.example.test"}})
	if err == nil {
		t.Fatal("an authorization without challenges was accepted")
	}
}
