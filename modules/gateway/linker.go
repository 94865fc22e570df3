package gateway

import (
	"context"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"
	"github.com/smallstep/certificates/acme"
	"github.com/smallstep/certificates/api/render"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
)

// Provisioners of the gateway's smallstep authority: one requires EAB (the
// shared directory), the other serves the per-token directories, whose
// URL secret is the credential.
const (
	provEAB   = "acme"
	provToken = "token"
	// eabPrefix is where smallstep's routes for provisioner "acme" are
	// mounted, so that its directory is /rest/acme/directory
	eabPrefix   = "/rest"
	tokenPrefix = "/rest/acme/t"
)

// linker maps smallstep's /{provisionerID}/… routes onto the gateway's
// paths: /rest/acme/… (provisioner "acme", EAB) and /rest/acme/t/{url
// secret}/… (provisioner "token", the secret resolved to its token).
// Links keep the request's Host, since the JWS url must match it.
type linker struct{ g *Gateway }

func (l linker) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		s := stateFrom(ctx)
		param, err := url.PathUnescape(chi.URLParam(r, "provisionerID"))
		if err != nil {
			render.Error(w, r, acme.NewError(acme.ErrorMalformedType, "malformed path"))
			return
		}
		name := provEAB
		if s.urlSecret != "" {
			// resolved by the gateway before smallstep's routes; a path
			// whose secret is not a token's never gets here
			if param != s.urlSecret || s.urlToken == nil {
				render.Error(w, r, acme.NewError(acme.ErrorUnauthorizedType, "unknown directory"))
				return
			}
			name = provToken
		} else if param != provEAB {
			render.Error(w, r, acme.NewError(acme.ErrorMalformedType, "unknown directory"))
			return
		}
		p, err := authority.MustFromContext(ctx).LoadProvisionerByName(name)
		if err != nil {
			render.Error(w, r, err)
			return
		}
		ap, ok := p.(*provisioner.ACME)
		if !ok {
			render.Error(w, r, acme.NewErrorISE("provisioner %s is not ACME", name))
			return
		}
		next.ServeHTTP(w, r.WithContext(acme.NewProvisionerContext(ctx, acme.Provisioner(ap))))
	})
}

func (l linker) GetLink(ctx context.Context, typ acme.LinkType, inputs ...string) string {
	s := stateFrom(ctx)
	prefix, name := eabPrefix, provEAB
	if s.urlSecret != "" {
		prefix, name = tokenPrefix, s.urlSecret
	}
	host := s.host
	if host == "" {
		host = l.g.opts.Host
	}
	u := url.URL{Scheme: "https", Host: host, Path: prefix + acme.GetUnescapedPathSuffix(typ, name, inputs...)}
	return u.String()
}

func (l linker) LinkOrder(ctx context.Context, o *acme.Order) {
	o.AuthorizationURLs = make([]string, len(o.AuthorizationIDs))
	for i, azID := range o.AuthorizationIDs {
		o.AuthorizationURLs[i] = l.GetLink(ctx, acme.AuthzLinkType, azID)
	}
	o.FinalizeURL = l.GetLink(ctx, acme.FinalizeLinkType, o.ID)
	if o.CertificateID != "" {
		o.CertificateURL = l.GetLink(ctx, acme.CertificateLinkType, o.CertificateID)
	}
}

func (l linker) LinkAccount(ctx context.Context, acc *acme.Account) {
	acc.OrdersURL = l.GetLink(ctx, acme.OrdersByAccountLinkType, acc.ID)
}

func (l linker) LinkChallenge(ctx context.Context, ch *acme.Challenge, azID string) {
	ch.URL = l.GetLink(ctx, acme.ChallengeLinkType, azID, ch.ID)
}

func (l linker) LinkAuthorization(ctx context.Context, az *acme.Authorization) {
	for _, ch := range az.Challenges {
		l.LinkChallenge(ctx, ch, az.ID)
	}
}

func (l linker) LinkOrdersByAccountID(ctx context.Context, orders []string) {
	for i, id := range orders {
		orders[i] = l.GetLink(ctx, acme.OrderLinkType, id)
	}
}

var _ acme.Linker = linker{}
