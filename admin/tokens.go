package admin

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

func init() {
	routeSets = append(routeSets, func(a *API) {
		a.handle("/certlocker/tokens", methods{http.MethodGet: a.listTokens, http.MethodPost: a.createToken})
		a.handle("/certlocker/tokens/{id}", methods{http.MethodGet: a.getToken, http.MethodPatch: a.updateToken,
			http.MethodDelete: a.deleteToken})
		a.handle("/certlocker/tokens/{id}/actions/{action}", methods{http.MethodPost: a.tokenAction})
		a.handle("/certlocker/tokens/{id}/accounts", methods{http.MethodGet: a.tokenAccounts})
	})
}

// tokenError maps the token service's errors to API errors.
func tokenError(err error) error {
	var ie *gateway.InputError
	if errors.As(err, &ie) {
		return BadRequest(ie.Field, "%s", ie.Message)
	}
	return err
}

// gatewayBase is the public base URL the client recipes use: ?base_url=
// (scheme and host), else a placeholder for the operator to replace.
func gatewayBase(r *http.Request) string {
	if b := r.URL.Query().Get("base_url"); b != "" {
		return b
	}
	return "https://certlocker.example.com"
}

// listTokens answers GET /certlocker/tokens?certificate_id=&group=&state=&sort=&cursor=&limit=
// with a page of tokens, oldest first (sort=-created: newest first), and
// the next page's cursor.
func (a *API) listTokens(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	q := r.URL.Query()
	for k := range q {
		if !slices.Contains([]string{"certificate_id", "group", "state", "sort", "cursor", "limit", "base_url"}, k) {
			return BadRequest(k, "unknown query parameter %q: use certificate_id, group, state, sort, cursor, limit", k)
		}
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	list, next, err := app.Tokens().ListPage(r.Context(), gateway.ListFilter{CertificateID: q.Get("certificate_id"), Group: q.Get("group"),
		State: q.Get("state")}, q.Get("sort"), p)
	if err != nil {
		return tokenError(err)
	}
	out := struct {
		Items      []gateway.View `json:"items"`
		NextCursor string         `json:"next_cursor,omitempty"`
	}{Items: []gateway.View{}, NextCursor: next}
	now := time.Now()
	for _, t := range list {
		out.Items = append(out.Items, gateway.NewView(t, nil, gatewayBase(r), now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// createToken answers POST /certlocker/tokens with {"certificate_id":
// "crt_…"} or names + issuer_id + challenge settings: 201 and the token
// with its secrets, the only response that carries them.
func (a *API) createToken(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var req gateway.CreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	t, creds, err := app.Tokens().Create(r.Context(), actor(r), req)
	if err != nil {
		return tokenError(err)
	}
	w.Header().Set("Location", "/certlocker/tokens/"+t.ID)
	writeJSON(w, http.StatusCreated, gateway.NewView(t, creds, gatewayBase(r), time.Now()))
	return nil
}

// getToken answers GET /certlocker/tokens/{id}.
func (a *API) getToken(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	t, err := app.Tokens().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, gateway.NewView(t, nil, gatewayBase(r), time.Now()))
	return nil
}

// updateToken answers PATCH /certlocker/tokens/{id} with a
// gateway.UpdateRequest body.
func (a *API) updateToken(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var req gateway.UpdateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	t, err := app.Tokens().Update(r.Context(), actor(r), r.PathValue("id"), req)
	if err != nil {
		return tokenError(err)
	}
	writeJSON(w, http.StatusOK, gateway.NewView(t, nil, gatewayBase(r), time.Now()))
	return nil
}

// deleteToken answers DELETE /certlocker/tokens/{id}: 204.
func (a *API) deleteToken(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	if err := app.Tokens().Delete(r.Context(), actor(r), r.PathValue("id")); err != nil {
		return tokenError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// tokenAction answers POST /certlocker/tokens/{id}/actions/rotate
// (optional body {"grace": "24h"}: how long the old secrets stay valid;
// the new secrets are in the response, once) and .../actions/revoke.
func (a *API) tokenAction(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	id := r.PathValue("id")
	switch r.PathValue("action") {
	case "rotate":
		var req struct {
			Grace *caddy.Duration `json:"grace,omitempty"`
		}
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, &req); err != nil {
				return err
			}
		}
		grace := gateway.DefaultGrace
		if req.Grace != nil {
			grace = time.Duration(*req.Grace)
		}
		t, creds, err := app.Tokens().Rotate(r.Context(), actor(r), id, grace)
		if err != nil {
			return tokenError(err)
		}
		writeJSON(w, http.StatusOK, gateway.NewView(t, creds, gatewayBase(r), time.Now()))
	case "revoke":
		t, err := app.Tokens().Revoke(r.Context(), actor(r), id)
		if err != nil {
			return tokenError(err)
		}
		writeJSON(w, http.StatusOK, gateway.NewView(t, nil, gatewayBase(r), time.Now()))
	default:
		return &Error{Status: http.StatusNotFound, Message: "no such action " + strings.TrimSpace(r.PathValue("action")) + ": use rotate or revoke"}
	}
	return nil
}

// tokenAccounts answers GET /certlocker/tokens/{id}/accounts: the ACME
// accounts bound to the token.
func (a *API) tokenAccounts(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	accts, err := app.Tokens().Accounts(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	type account struct {
		AccountID string    `json:"account_id"`
		BoundAt   time.Time `json:"bound_at"`
	}
	out := struct {
		Items []account `json:"items"`
	}{Items: []account{}}
	for _, a := range accts {
		out.Items = append(out.Items, account{AccountID: a.AccountID, BoundAt: a.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
