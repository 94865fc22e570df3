package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/mholt/acmez/v3/acme"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	routeSets = append(routeSets, func(a *API) {
		a.handle("/certlocker/catalog", methods{http.MethodGet: a.listCatalog})
		a.handle("/certlocker/catalog/{id}", methods{http.MethodGet: a.getCatalog})
		a.handle("/certlocker/issuers", methods{http.MethodGet: a.listIssuers, http.MethodPost: a.createIssuer})
		a.handle("/certlocker/issuers/{id}", methods{http.MethodGet: a.getIssuer, http.MethodPatch: a.patchIssuer,
			http.MethodDelete: a.deleteIssuer})
		a.handle("/certlocker/issuers/{id}/actions/{action}", methods{http.MethodPost: a.issuerAction})
	})
}

// listCatalog answers GET /certlocker/catalog: the built-in CAs.
func (a *API) listCatalog(w http.ResponseWriter, _ *http.Request, _ *certlocker.App) error {
	writeJSON(w, http.StatusOK, map[string]any{"items": issuers.Catalog()})
	return nil
}

// getCatalog answers GET /certlocker/catalog/{id}.
func (a *API) getCatalog(w http.ResponseWriter, r *http.Request, _ *certlocker.App) error {
	e, ok := issuers.LookupCatalog(r.PathValue("id"))
	if !ok {
		return &Error{Status: http.StatusNotFound, Message: "no catalog entry " + r.PathValue("id")}
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

// createIssuerRequest is the body of POST /certlocker/issuers. The EAB MAC
// key is write-only: no response ever contains it.
type createIssuerRequest struct {
	Name            string            `json:"name"`
	CatalogID       string            `json:"catalog_id"`
	DirectoryURL    string            `json:"directory_url"`
	DirectoryParams map[string]string `json:"directory_params"`
	Contacts        []string          `json:"contacts"`
	EABKeyID        string            `json:"eab_key_id"`
	EABMACKey       string            `json:"eab_mac_key"`
	AccountKeyType  string            `json:"account_key_type"`
	Profile         string            `json:"profile"`
	PreferredChain  string            `json:"preferred_chain"`
	CustomRootsPEM  string            `json:"custom_roots_pem"`
	Group           string            `json:"group"`
	AgreeTerms      bool              `json:"agree_terms"`
}

// createIssuer answers POST /certlocker/issuers: register the account at
// the CA, then store the issuer (201 with the issuer).
func (a *API) createIssuer(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var req createIssuerRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	iss, err := app.IssuerRegistry().Create(r.Context(), actor(r), issuers.Spec{
		Name: req.Name, CatalogID: req.CatalogID, DirectoryURL: req.DirectoryURL, DirectoryParams: req.DirectoryParams,
		Contacts: req.Contacts, EABKeyID: req.EABKeyID, EABMACKey: storage.NewSecret([]byte(req.EABMACKey)),
		AccountKeyType: req.AccountKeyType, Profile: req.Profile, PreferredChain: req.PreferredChain,
		CustomRootsPEM: req.CustomRootsPEM, Group: req.Group, AgreeTerms: req.AgreeTerms,
	})
	if err != nil {
		return issuerError(w, err)
	}
	w.Header().Set("Location", "/certlocker/issuers/"+iss.ID)
	writeJSON(w, http.StatusCreated, issuers.NewView(iss))
	return nil
}

// listIssuers answers GET /certlocker/issuers?group=&managed_by=&cursor=&limit=
// with a page of issuers by name and the next page's cursor.
func (a *API) listIssuers(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	q := r.URL.Query()
	f := storage.IssuerFilter{Group: q.Get("group"), ManagedBy: q.Get("managed_by")}
	if f.ManagedBy != "" && f.ManagedBy != storage.ManagedByAPI && f.ManagedBy != storage.ManagedByConfig {
		return BadRequest("managed_by", "managed_by must be %q or %q", storage.ManagedByAPI, storage.ManagedByConfig)
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	list, next, err := app.IssuerRegistry().ListPage(r.Context(), f, p)
	if err != nil {
		return err
	}
	items := make([]issuers.View, 0, len(list))
	for _, iss := range list {
		items = append(items, issuers.NewView(iss))
	}
	writeJSON(w, http.StatusOK, struct {
		Items      []issuers.View `json:"items"`
		NextCursor string         `json:"next_cursor,omitempty"`
	}{items, next})
	return nil
}

// getIssuer answers GET /certlocker/issuers/{id}.
func (a *API) getIssuer(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	iss, err := app.IssuerRegistry().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, issuers.NewView(iss))
	return nil
}

// patchIssuerRequest is the body of PATCH /certlocker/issuers/{id}: the
// fields to change. Account-bound fields are listed only to explain that
// they cannot change.
type patchIssuerRequest struct {
	Name           *string   `json:"name"`
	Contacts       *[]string `json:"contacts"`
	Profile        *string   `json:"profile"`
	PreferredChain *string   `json:"preferred_chain"`
	Group          *string   `json:"group"`
	CustomRootsPEM *string   `json:"custom_roots_pem"`
	Version        int64     `json:"version"`

	CatalogID       json.RawMessage `json:"catalog_id"`
	DirectoryURL    json.RawMessage `json:"directory_url"`
	DirectoryParams json.RawMessage `json:"directory_params"`
	EABKeyID        json.RawMessage `json:"eab_key_id"`
	EABMACKey       json.RawMessage `json:"eab_mac_key"`
	AccountKeyType  json.RawMessage `json:"account_key_type"`
}

// patchIssuer answers PATCH /certlocker/issuers/{id}.
func (a *API) patchIssuer(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var req patchIssuerRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	for field, v := range map[string]json.RawMessage{"catalog_id": req.CatalogID, "directory_url": req.DirectoryURL,
		"directory_params": req.DirectoryParams, "eab_key_id": req.EABKeyID, "eab_mac_key": req.EABMACKey} {
		if v != nil {
			return BadRequest(field, "%s belongs to the ACME account and cannot be changed: create a new issuer for a new account", field)
		}
	}
	if req.AccountKeyType != nil {
		return BadRequest("account_key_type", "account_key_type changes with a key rollover: POST /certlocker/issuers/{id}/actions/rollover with {\"account_key_type\": \"...\"}")
	}
	iss, err := app.IssuerRegistry().Update(r.Context(), actor(r), r.PathValue("id"), issuers.Patch{
		Name: req.Name, Contacts: req.Contacts, Profile: req.Profile, PreferredChain: req.PreferredChain,
		Group: req.Group, CustomRootsPEM: req.CustomRootsPEM, Version: req.Version,
	})
	if err != nil {
		return issuerError(w, err)
	}
	writeJSON(w, http.StatusOK, issuers.NewView(iss))
	return nil
}

// deleteIssuer answers DELETE /certlocker/issuers/{id} (204); refused
// while workflows use the issuer.
func (a *API) deleteIssuer(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	if err := app.IssuerRegistry().Delete(r.Context(), actor(r), r.PathValue("id")); err != nil {
		return issuerError(w, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// issuerAction answers POST /certlocker/issuers/{id}/actions/{refresh|rollover|deactivate|test}.
func (a *API) issuerAction(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	reg, id := app.IssuerRegistry(), r.PathValue("id")
	switch action := r.PathValue("action"); action {
	case "refresh":
		iss, meta, err := reg.Refresh(r.Context(), actor(r), id)
		if err != nil {
			return issuerError(w, err)
		}
		writeJSON(w, http.StatusOK, map[string]any{"issuer": issuers.NewView(iss), "meta": meta})
	case "rollover":
		var req struct {
			AccountKeyType string `json:"account_key_type"`
		}
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, &req); err != nil {
				return err
			}
		}
		iss, err := reg.Rollover(r.Context(), actor(r), id, req.AccountKeyType)
		if err != nil {
			return issuerError(w, err)
		}
		writeJSON(w, http.StatusOK, issuers.NewView(iss))
	case "deactivate":
		iss, err := reg.Deactivate(r.Context(), actor(r), id)
		if err != nil {
			return issuerError(w, err)
		}
		writeJSON(w, http.StatusOK, issuers.NewView(iss))
	case "test":
		res, err := reg.Test(r.Context(), actor(r), id)
		if err != nil {
			return issuerError(w, err)
		}
		writeJSON(w, http.StatusOK, struct {
			issuers.TestResult
			Issuer issuers.View `json:"issuer"`
		}{res, issuers.NewView(res.Issuer)})
	default:
		return &Error{Status: http.StatusNotFound, Message: "no issuer action " + strings.ReplaceAll(action, "\n", "") + ": use refresh, rollover, deactivate or test"}
	}
	return nil
}

// issuerProblem is the response when the CA refused: the CA's problem
// document, verbatim, beside the usual error and field.
type issuerProblem struct {
	Error   string        `json:"error"`
	Field   string        `json:"field,omitempty"`
	Problem *acme.Problem `json:"problem"`
}

// issuerError maps the registry's errors to responses: bad input 400, a
// clash with stored state or a read-only issuer 409, a CA that cannot be
// used or refused 422 (with its problem document). Others go to
// writeError.
func issuerError(w http.ResponseWriter, err error) error {
	var e *issuers.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Kind {
	case issuers.KindInvalid:
		return &Error{Status: http.StatusBadRequest, Message: e.Message, Field: e.Field}
	case issuers.KindConflict, issuers.KindReadOnly, issuers.KindState:
		return &Error{Status: http.StatusConflict, Message: e.Message, Field: e.Field}
	case issuers.KindRefused:
		writeJSON(w, http.StatusUnprocessableEntity, issuerProblem{Error: e.Message, Field: e.Field, Problem: e.Problem})
		return nil
	}
	return &Error{Status: http.StatusUnprocessableEntity, Message: e.Message, Field: e.Field}
}
