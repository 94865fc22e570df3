package issuers

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/mholt/acmez/v3/acme"
)

// Kind classifies an Error for callers that map it to a response.
type Kind int

// Error kinds.
const (
	// KindInvalid: the input is wrong (a field is missing or malformed).
	KindInvalid Kind = iota + 1
	// KindConflict: the input clashes with stored state (a taken name).
	KindConflict
	// KindUnusable: the directory cannot be used (unreachable, not an
	// ACME directory, untrusted TLS certificate).
	KindUnusable
	// KindRefused: the CA answered with a problem document, in Problem.
	KindRefused
	// KindReadOnly: the issuer is declared in the config and can only be
	// changed there.
	KindReadOnly
	// KindState: the issuer's state does not allow the operation (a
	// deactivated account).
	KindState
)

// Error is an error an operator can act on: it names the input field at
// fault, if any, and carries the CA's problem document verbatim when the
// CA refused. Messages never contain secrets.
type Error struct {
	Kind    Kind
	Field   string
	Message string
	// Problem is the CA's problem document when Kind is KindRefused.
	Problem *acme.Problem
}

func (e *Error) Error() string { return e.Message }

func invalid(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// caError turns an error from the ACME client into an Error: a problem
// document becomes KindRefused, anything else KindUnusable.
func caError(what string, err error) *Error {
	var p acme.Problem
	if errors.As(err, &p) {
		detail := p.Detail
		if detail == "" {
			detail = p.Type
		}
		return &Error{Kind: KindRefused, Message: fmt.Sprintf("the CA refused %s: %s", what, detail), Problem: &p}
	}
	return &Error{Kind: KindUnusable, Message: fmt.Sprintf("%s: %v%s", what, err, tlsHint(err))}
}

// tlsHint suggests custom roots when the CA's TLS certificate is not
// trusted.
func tlsHint(err error) string {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return " (if the CA uses a private root, add it as custom_roots_pem)"
	}
	return ""
}

// problemMessage is the one-line form of a CA problem kept as an issuer's
// last message.
func problemMessage(p *acme.Problem) string {
	if p == nil {
		return ""
	}
	if p.Detail != "" {
		return p.Type + ": " + p.Detail
	}
	return p.Type
}
