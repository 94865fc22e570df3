package admin

// Inventory import (paste or upload) and key export.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/inventory"
)

type importData struct {
	Groups   []string
	Form     url.Values
	ErrField string
}

func (u *UI) importPage(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData, form url.Values, status int) error {
	if form == nil {
		form = url.Values{}
	}
	field := form.Get("_field")
	form.Del("_field")
	d.Title, d.Nav = "Import certificates", "inventory"
	d.Data = importData{Groups: formGroups(r, app, d.Session), Form: form, ErrField: field}
	u.pages.render(w, status, "import", d)
	return nil
}

// maxImportFile caps each uploaded PEM file.
const maxImportFile = 256 << 10

// importForm imports a pasted or uploaded PEM chain (with its key, in the
// chain or apart) through POST /certificates, then opens it in the
// inventory's drawer. The key is never shown again, not even when the
// import fails.
func (u *UI) importForm(w http.ResponseWriter, r *http.Request, app *certlocker.App, d pageData) error {
	if err := r.ParseMultipartForm(MaxBodyBytes); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return BadRequest("", "reading the form: %v", err)
	}
	pemText, keyText := r.PostFormValue("pem"), r.PostFormValue("key_pem")
	keep := url.Values{"group": {r.PostFormValue("group")}}
	fail := func(status int, field, msg string) error {
		d.Error = msg
		keep.Set("_field", field)
		if !strings.Contains(pemText, "PRIVATE KEY") {
			keep.Set("pem", pemText)
		}
		return u.importPage(w, r, app, d, keep, status)
	}
	for field, dst := range map[string]*string{"pem_file": &pemText, "key_file": &keyText} {
		b, err := formFile(r, field)
		if err != nil {
			return fail(http.StatusBadRequest, field, err.Error())
		}
		if b != nil {
			*dst = string(b)
		}
	}
	if strings.TrimSpace(pemText) == "" {
		return fail(http.StatusBadRequest, "pem", "paste the certificate and its chain (PEM), or choose a file")
	}
	b, _ := json.Marshal(importCertificateRequest{PEM: pemText, KeyPEM: keyText, Group: r.PostFormValue("group")})
	rec := u.callAPI(r, http.MethodPost, "certificates", string(b))
	if rec.Code != http.StatusCreated && rec.Code != http.StatusOK {
		res := resultOf(rec.Code, rec.Body.Bytes())
		field := res.Field
		if field == "pem" && r.MultipartForm != nil && len(r.MultipartForm.File["pem_file"]) > 0 {
			field = "pem_file"
		}
		return fail(rec.Code, field, importMessage(res))
	}
	var out struct {
		Created     bool           `json:"created"`
		Certificate inventory.View `json:"certificate"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	c := out.Certificate
	msg := "certificate imported"
	if !out.Created {
		msg = "this certificate was already in the inventory: nothing changed"
	}
	switch {
	case c.Expiry == "expired":
		msg += fmt.Sprintf(" — warning: it EXPIRED on %s and must be replaced", c.NotAfter.UTC().Format("2006-01-02"))
	case time.Now().Before(c.NotBefore):
		msg += fmt.Sprintf(" — note: it is not valid before %s", c.NotBefore.UTC().Format("2006-01-02 15:04Z"))
	}
	if !c.HasPrivateKey {
		msg += " (no private key: it can be tracked and exported, not served)"
	}
	http.Redirect(w, r, "/inventory?cert="+url.QueryEscape(c.ID)+"&flash="+url.QueryEscape(msg), http.StatusSeeOther)
	return nil
}

// importMessage turns the inventory's refusal into the form's message.
func importMessage(res apiResult) string {
	m := res.Message
	switch res.Field {
	case "pem":
		m = "Certificate chain: " + strings.TrimPrefix(m, "pem: ")
	case "key_pem":
		m = strings.TrimPrefix(m, "key_pem: ")
		if strings.HasPrefix(m, "not PEM") {
			// the parser's words are about chains; this field holds a key
			m = "not PEM: expected a block starting with -----BEGIN PRIVATE KEY----- (or EC/RSA PRIVATE KEY)"
		}
		m = "Private key: " + m
	}
	return m
}

// formFile reads an uploaded file field (nil when none was chosen).
func formFile(r *http.Request, field string) ([]byte, error) {
	if r.MultipartForm == nil || len(r.MultipartForm.File[field]) == 0 {
		return nil, nil
	}
	fh := r.MultipartForm.File[field][0]
	if fh.Size == 0 {
		return nil, nil
	}
	if fh.Size > maxImportFile {
		return nil, fmt.Errorf("%s is larger than %d KiB: a PEM chain is a few KiB", fh.Filename, maxImportFile>>10)
	}
	f, err := fh.Open()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v", fh.Filename, err)
	}
	defer func(f multipart.File) { _ = f.Close() }(f)
	return io.ReadAll(io.LimitReader(f, maxImportFile))
}

// exportForm exports a certificate with its private key (PEM bundle or
// PKCS #12) through the admin API's export, which applies the key export
// policy and audits every attempt. Chain and leaf downloads are plain
// links to /api/certificates/{id}/pem.
func (u *UI) exportForm(w http.ResponseWriter, r *http.Request, id string) error {
	if err := r.ParseForm(); err != nil {
		return BadRequest("", "reading the form: %v", err)
	}
	var rec *httptest.ResponseRecorder
	switch f := r.PostForm.Get("format"); f {
	case inventory.FormatBundle:
		rec = u.callAPI(r, http.MethodGet, "certificates/"+url.PathEscape(id)+"/pem?format=bundle", "")
	case inventory.FormatPKCS12:
		b, _ := json.Marshal(map[string]string{"password": r.PostForm.Get("password")})
		rec = u.callAPI(r, http.MethodPost, "certificates/"+url.PathEscape(id)+"/pkcs12", string(b))
	default:
		return BadRequest("format", "format must be bundle or pkcs12 (chain and leaf are plain downloads)")
	}
	body := rec.Body.Bytes()
	if rec.Code != http.StatusOK {
		return &Error{Status: rec.Code, Message: resultOf(rec.Code, body).Message}
	}
	for _, h := range []string{"Content-Type", "Content-Disposition", "Content-Length"} {
		w.Header().Set(h, rec.Header().Get(h))
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}
