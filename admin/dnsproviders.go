package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
)

func init() {
	routeSets = append(routeSets, func(a *API) {
		a.handle("/certlocker/dns-providers", methods{http.MethodGet: a.listDNSProviders, http.MethodPost: a.createDNSProvider})
		a.handle("/certlocker/dns-providers/{id}", methods{http.MethodGet: a.getDNSProvider,
			http.MethodPatch: a.updateDNSProvider, http.MethodDelete: a.deleteDNSProvider})
		a.handle("/certlocker/dns-providers/{id}/actions/verify", methods{http.MethodPost: a.verifyDNSProvider})
		a.handle("/certlocker/dns-providers/{id}/records", methods{http.MethodGet: a.listChallengeRecords})
		a.handle("/certlocker/dns-providers/actions/cleanup", methods{http.MethodPost: a.cleanupChallengeRecords})
	})
}

// dnsError maps the DNS provider store's errors to API errors.
func dnsError(err error) error {
	var ie *dnsproviders.InputError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ie):
		return BadRequest(ie.Field, "%s", ie.Message)
	case errors.Is(err, dnsproviders.ErrManagedByConfig):
		return &Error{Status: http.StatusConflict, Message: err.Error()}
	}
	return err
}

// listDNSProviders answers GET /certlocker/dns-providers?group=&cursor=&limit=
// with a page of provider clients by name and the next page's cursor.
func (a *API) listDNSProviders(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	p, err := page(r)
	if err != nil {
		return err
	}
	list, next, err := app.DNS().ListPage(r.Context(), r.URL.Query().Get("group"), p)
	if err != nil {
		return err
	}
	out := struct {
		Items      []dnsproviders.View `json:"items"`
		NextCursor string              `json:"next_cursor,omitempty"`
	}{Items: []dnsproviders.View{}, NextCursor: next}
	for _, p := range list {
		out.Items = append(out.Items, dnsproviders.NewView(p))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// createDNSProvider answers POST /certlocker/dns-providers with a
// dnsproviders.Config body: 201 and the provider client, without its
// credentials.
func (a *API) createDNSProvider(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var c dnsproviders.Config
	if err := decodeJSON(w, r, &c); err != nil {
		return err
	}
	p, err := app.DNS().Create(r.Context(), actor(r), c)
	if err != nil {
		return dnsError(err)
	}
	w.Header().Set("Location", "/certlocker/dns-providers/"+p.ID)
	writeJSON(w, http.StatusCreated, dnsproviders.NewView(p))
	return nil
}

// getDNSProvider answers GET /certlocker/dns-providers/{id} (ID or name).
func (a *API) getDNSProvider(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	p, err := app.DNS().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dnsproviders.NewView(p))
	return nil
}

// updateDNSProvider answers PATCH /certlocker/dns-providers/{id} with a
// dnsproviders.Patch body: only the fields given change.
func (a *API) updateDNSProvider(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var patch dnsproviders.Patch
	if err := decodeJSON(w, r, &patch); err != nil {
		return err
	}
	cur, err := app.DNS().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	p, err := app.DNS().Update(r.Context(), actor(r), cur.ID, patch)
	if err != nil {
		return dnsError(err)
	}
	writeJSON(w, http.StatusOK, dnsproviders.NewView(p))
	return nil
}

// deleteDNSProvider answers DELETE /certlocker/dns-providers/{id}: 204, or
// 409 while it has challenge records to clean up or is declared in the
// config.
func (a *API) deleteDNSProvider(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	cur, err := app.DNS().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := app.DNS().Delete(r.Context(), actor(r), cur.ID); err != nil {
		return dnsError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// verifyDNSProvider answers POST /certlocker/dns-providers/{id}/actions/verify:
// 200 with the verification, check by check, and the provider client's
// new status; a failed verification is a 200 with "ok": false.
func (a *API) verifyDNSProvider(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	v, p, err := app.DNS().Verify(r.Context(), actor(r), r.PathValue("id"))
	if err != nil {
		return dnsError(err)
	}
	writeJSON(w, http.StatusOK, struct {
		*dnsproviders.Verification
		Provider dnsproviders.View `json:"provider"`
	}{v, dnsproviders.NewView(p)})
	return nil
}

type challengeRecord struct {
	ID              string     `json:"id"`
	WorkflowID      string     `json:"workflow_id,omitempty"`
	Zone            string     `json:"zone"`
	Name            string     `json:"name"`
	Type            string     `json:"type"`
	CreatedAt       time.Time  `json:"created_at"`
	PublishedAt     *time.Time `json:"published_at,omitempty"`
	CleanupAttempts int        `json:"cleanup_attempts,omitempty"`
	LastError       string     `json:"last_error,omitempty"`
}

// listChallengeRecords answers GET /certlocker/dns-providers/{id}/records:
// the challenge records it published that are not cleaned up yet (names,
// not values).
func (a *API) listChallengeRecords(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	p, err := app.DNS().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	recs, err := app.DNS().Records(r.Context(), p.ID)
	if err != nil {
		return err
	}
	out := struct {
		Items []challengeRecord `json:"items"`
	}{Items: []challengeRecord{}}
	for _, rec := range recs {
		c := challengeRecord{ID: rec.ID, WorkflowID: rec.WorkflowID, Zone: rec.Zone, Name: rec.Name, Type: rec.Type,
			CreatedAt: rec.CreatedAt, CleanupAttempts: rec.CleanupAttempts, LastError: rec.LastError}
		if !rec.PublishedAt.IsZero() {
			t := rec.PublishedAt
			c.PublishedAt = &t
		}
		out.Items = append(out.Items, c)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// cleanupChallengeRecords answers POST /certlocker/dns-providers/actions/cleanup
// with an optional body {"older_than": "10m"} (default 1h): it runs the
// janitor now and reports what it removed.
func (a *API) cleanupChallengeRecords(w http.ResponseWriter, r *http.Request, app *certlocker.App) error {
	var body struct {
		OlderThan caddy.Duration `json:"older_than,omitempty"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &body); err != nil {
			return err
		}
	}
	age := time.Duration(body.OlderThan)
	if age < 0 {
		return BadRequest("older_than", "older_than must not be negative")
	}
	if age == 0 {
		age = dnsproviders.DefaultJanitorAge
	}
	res, err := app.DNS().Janitor(r.Context(), age)
	if err != nil {
		return err
	}
	details, _ := json.Marshal(map[string]any{"older_than": age.String(), "removed": res.Removed, "failed": res.Failed})
	if err := app.Audit(r.Context(), actor(r), "dns_provider.cleanup", "", details); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
