package admin

import (
	"errors"
	"net/http"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
)

func init() {
	routeSets = append(routeSets, func(a *API) {
		a.handle("/certlocker/dns-providers/{id}/delegation", methods{http.MethodGet: a.getDelegation})
		a.handle("/certlocker/acme-dns/registrations", methods{http.MethodPost: a.createACMEDNSRegistration})
	})
}

// getDelegation answers GET /certlocker/dns-providers/{id}/delegation?name=
// for a delegated provider client: how name validates (directly in a served
// zone, or through the one CNAME to add, in zone-file form) and whether that
// CNAME is in place now.
func (a *API) getDelegation(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	name := r.URL.Query().Get("name")
	if name == "" {
		return BadRequest("name", "name is required, e.g. ?name=shop.example.com")
	}
	d, err := app.DNS().Delegation(r.Context(), r.PathValue("id"), name)
	if err != nil {
		return dnsError(err)
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// checkDelegation answers 400 naming field when identifier's dns-01
// challenge cannot be answered through the provider client (a delegated
// one whose CNAME is missing), before any order is placed.
func checkDelegation(r *http.Request, app *certlocker.App, field, providerID, identifier string) error {
	err := app.DNS().CheckChallenge(r.Context(), providerID, identifier)
	if errors.Is(err, dnsproviders.ErrDelegationMissing) {
		return BadRequest(field, "%s", err.Error())
	}
	return dnsError(err)
}

// createACMEDNSRegistration answers POST /certlocker/acme-dns/registrations
// with {"zone": "<served challenge zone>", "allowfrom": ["<cidr>", …]}:
// 201 and the registration in acme-dns's shape (username, password,
// fulldomain, subdomain, allowfrom), for acme-dns clients such as
// cert-manager that are given credentials rather than registering
// themselves. The password is shown only here.
func (a *API) createACMEDNSRegistration(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var body struct {
		Zone      string   `json:"zone"`
		AllowFrom []string `json:"allowfrom"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	resp, err := app.RegisterACMEDNS(r.Context(), actor(r), body.Zone, body.AllowFrom)
	var ie *certlocker.InvalidInput
	if errors.As(err, &ie) {
		return BadRequest(ie.Field, "%s", ie.Message)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, resp)
	return nil
}
