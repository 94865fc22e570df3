package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	routeSets = append(routeSets, func(a *API) {
		a.handle("/certlocker/certificates", methods{http.MethodGet: a.listCertificates, http.MethodPost: a.importCertificate})
		a.handle("/certlocker/certificates/expiry", methods{http.MethodGet: a.certificateExpiry})
		a.handle("/certlocker/certificates/{id}", methods{http.MethodGet: a.getCertificate, http.MethodDelete: a.deleteCertificate})
		a.handle("/certlocker/certificates/{id}/pem", methods{http.MethodGet: a.certificatePEM})
		a.handle("/certlocker/certificates/{id}/pkcs12", methods{http.MethodPost: a.certificatePKCS12})
		a.handle("/certlocker/actions/refresh-certificates", methods{http.MethodPost: a.refreshCertificates})
	})
}

// adminRole is the role the admin API acts as for the key export policy.
const adminRole = inventory.RoleAdmin

// inventoryError maps the inventory's errors to API errors.
func inventoryError(err error) error {
	var ie *inventory.InputError
	switch {
	case errors.As(err, &ie):
		return BadRequest(ie.Field, "%s: %s", ie.Field, ie.Message)
	case errors.Is(err, inventory.ErrKeyExportForbidden):
		return &Error{Status: http.StatusForbidden, Message: err.Error()}
	case errors.Is(err, inventory.ErrNoPrivateKey):
		return &Error{Status: http.StatusConflict, Message: err.Error() + ": import it again with its key to export one"}
	}
	return err
}

// listCertificates answers GET /certlocker/certificates with the filters of
// inventory.FilterFromQuery, sort, limit and cursor.
func (a *API) listCertificates(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	inv := app.Certificates()
	f, err := inv.FilterFromQuery(r.URL.Query(), "limit", "cursor")
	if err != nil {
		return inventoryError(err)
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	certs, next, err := inv.List(r.Context(), f, p)
	if err != nil {
		return err
	}
	out := struct {
		Items      []inventory.View `json:"items"`
		NextCursor string           `json:"next_cursor,omitempty"`
	}{Items: []inventory.View{}, NextCursor: next}
	for _, c := range certs {
		out.Items = append(out.Items, inv.View(c, false))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getCertificate answers GET /certlocker/certificates/{id}: the
// certificate with its full metadata and rating breakdown.
func (a *API) getCertificate(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	c, err := app.Certificates().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, app.Certificates().View(c, true))
	return nil
}

type importCertificateRequest struct {
	// PEM is the certificate chain, optionally with its private key.
	PEM string `json:"pem"`
	// KeyPEM is the private key, when not in pem.
	KeyPEM string `json:"key_pem"`
	Group  string `json:"group"`
}

// importCertificate answers POST /certlocker/certificates: 201 with the
// new certificate, or 200 with the stored one if it was already there.
func (a *API) importCertificate(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var req importCertificateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	c, created, err := app.Certificates().Import(r.Context(),
		inventory.ImportRequest{PEM: req.PEM, KeyPEM: req.KeyPEM, Group: req.Group}, actor(r))
	if err != nil {
		return inventoryError(err)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/certlocker/certificates/"+c.ID)
	}
	writeJSON(w, status, struct {
		Created     bool           `json:"created"`
		Certificate inventory.View `json:"certificate"`
	}{created, app.Certificates().View(c, true)})
	return nil
}

// deleteCertificate answers DELETE /certlocker/certificates/{id}; 409
// while certificate tokens use it.
func (a *API) deleteCertificate(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	if err := app.Certificates().Delete(r.Context(), r.PathValue("id"), actor(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// certificatePEM answers GET /certlocker/certificates/{id}/pem?format=
// chain (default) | leaf | bundle (private key then chain).
func (a *API) certificatePEM(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	for k := range r.URL.Query() {
		if k != "format" {
			return BadRequest(k, "unknown query parameter %q: use format", k)
		}
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = inventory.FormatChain
	}
	if format == inventory.FormatPKCS12 {
		return BadRequest("format", "PKCS #12 needs a password: POST {\"password\": ...} to /certlocker/certificates/%s/pkcs12", r.PathValue("id"))
	}
	return a.export(w, r, app, inventory.ExportRequest{ID: r.PathValue("id"), Format: format})
}

// certificatePKCS12 answers POST /certlocker/certificates/{id}/pkcs12 with
// {"password": "..."}: key, leaf and chain as a PKCS #12 file.
func (a *API) certificatePKCS12(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var req struct {
		Password string `json:"password"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	return a.export(w, r, app, inventory.ExportRequest{ID: r.PathValue("id"), Format: inventory.FormatPKCS12, Password: req.Password})
}

func (a *API) export(w http.ResponseWriter, r *http.Request, app *certlocker.App, req inventory.ExportRequest) error {
	req.Role, req.Actor = adminRole, actor(r)
	if s := sessionOf(r.Context()); s != nil {
		req.Role = inventory.Role(s.User.Role)
	}
	out, err := app.Certificates().Export(r.Context(), req)
	if err != nil {
		return inventoryError(err)
	}
	w.Header().Set("Content-Type", out.ContentType)
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", out.Filename))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(out.Data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.Data)
	return nil
}

// certificateExpiry answers GET /certlocker/certificates/expiry: counts by
// expiry bucket overall, per ACME client and per group, and the timeline of
// upcoming expiries. Query: the list filters (status defaults to active),
// days (timeline horizon, default 90), interval (day or week).
func (a *API) certificateExpiry(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	q := r.URL.Query()
	inv := app.Certificates()
	f, err := inv.FilterFromQuery(q, "days", "interval")
	if err != nil {
		return inventoryError(err)
	}
	if !q.Has("status") {
		f.Status = storage.CertStatusActive
	}
	eq := inventory.ExpiryQuery{Filter: f}
	if s := q.Get("days"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 731 {
			return BadRequest("days", "days must be a number from 1 to 731")
		}
		eq.Horizon = time.Duration(n) * 24 * time.Hour
	}
	switch q.Get("interval") {
	case "", "day":
		eq.Step = 24 * time.Hour
	case "week":
		eq.Step = 7 * 24 * time.Hour
	default:
		return BadRequest("interval", "interval must be day or week")
	}
	rep, err := inv.Expiry(r.Context(), eq)
	if err != nil {
		return inventoryError(err)
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// refreshCertificates answers POST /certlocker/actions/refresh-certificates:
// re-verify and re-rate every certificate now.
func (a *API) refreshCertificates(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	n, err := app.Certificates().Refresh(r.Context())
	if err != nil {
		return err
	}
	d, _ := json.Marshal(map[string]any{"updated": n})
	if err := app.Audit(r.Context(), actor(r), "certificate.refresh", "", d); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"updated": n})
	return nil
}
