package admin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

// certTestAPI provisions the certlocker app (a real SQLite file) with the
// given inventory config and the admin API over it.
func certTestAPI(t *testing.T, inventoryJSON string) (*API, *certlocker.App) {
	t.Helper()
	cfg := `{"storage":{"path":"` + filepath.Join(t.TempDir(), "c.db") + `"},"node_id":"n1"`
	if inventoryJSON != "" {
		cfg += `,"inventory":` + inventoryJSON
	}
	cfg += "}"
	return testAPI(t, cfg)
}

// certCall sends one request through the admin API's route.
func certCall(t *testing.T, api *API, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	return serve(t, api, method, path, body)
}

// certFixture is a leaf (ECDSA, under a fresh root) as PEM, with its root
// chain and key.
type certFixture struct {
	chain, key string
	leaf       *x509.Certificate
}

func newCertFixture(t testing.TB, names []string, notAfter time.Time) certFixture {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Admin Test Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(3650 * 24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(rootDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return certFixture{
		chain: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})),
		key:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
		leaf: leaf,
	}
}

func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type certListResponse struct {
	Items []struct {
		ID            string `json:"id"`
		Rating        string `json:"rating"`
		Expiry        string `json:"expiry"`
		HasPrivateKey bool   `json:"has_private_key"`
		Group         string `json:"group"`
	} `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func TestCertificatesAPI(t *testing.T) {
	api, app := certTestAPI(t, "")
	ctx := t.Context()
	soon := newCertFixture(t, []string{"soon.example.com"}, time.Now().Add(5*24*time.Hour))
	later := newCertFixture(t, []string{"later.example.com", "*.later.example.com"}, time.Now().Add(60*24*time.Hour))

	// garbage is a clear 400 and stores nothing
	badBodies := map[string]struct {
		body, field string
	}{
		"garbage pem":   {jsonBody(t, map[string]string{"pem": "garbage"}), "pem"},
		"no pem":        {`{}`, "pem"},
		"wrong key":     {jsonBody(t, map[string]string{"pem": soon.chain, "key_pem": later.key}), "key_pem"},
		"unknown field": {`{"pem":"x","certificate":"y"}`, "certificate"},
		"bad group":     {jsonBody(t, map[string]string{"pem": soon.chain, "group": "a b"}), "group"},
		"not json":      {`-----BEGIN CERTIFICATE-----`, ""},
	}
	for name, c := range badBodies {
		t.Run("import "+name, func(t *testing.T) {
			rec := certCall(t, api, "POST", "/certlocker/certificates", c.body)
			var e Error
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != http.StatusBadRequest || e.Field != c.field || e.Message == "" {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			if strings.Contains(rec.Body.String(), "PRIVATE KEY") {
				t.Fatal("the error echoes the key")
			}
		})
	}
	if list, _, _ := app.Certificates().List(ctx, storage.CertificateFilter{}, storage.Page{}); len(list) != 0 {
		t.Fatalf("bad imports stored %d certificates", len(list))
	}

	rec := certCall(t, api, "POST", "/certlocker/certificates", jsonBody(t, map[string]string{"pem": soon.chain, "key_pem": soon.key, "group": "web"}))
	if rec.Code != http.StatusCreated || !strings.HasPrefix(rec.Header().Get("Location"), "/certlocker/certificates/crt") {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "PRIVATE KEY") {
		t.Fatal("the import response holds the key")
	}
	var imported struct {
		Created     bool `json:"created"`
		Certificate struct {
			ID            string `json:"id"`
			HasPrivateKey bool   `json:"has_private_key"`
			Metadata      struct {
				Rating struct {
					Grade   string `json:"grade"`
					Factors []any  `json:"factors"`
				} `json:"rating"`
			} `json:"metadata"`
		} `json:"certificate"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &imported)
	id := imported.Certificate.ID
	if !imported.Created || !imported.Certificate.HasPrivateKey || len(imported.Certificate.Metadata.Rating.Factors) != 8 {
		t.Fatalf("import response %s", rec.Body)
	}
	// a duplicate import changes nothing
	rec = certCall(t, api, "POST", "/certlocker/certificates", jsonBody(t, map[string]string{"pem": soon.chain, "group": "other"}))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"created": false`) || !strings.Contains(rec.Body.String(), id) {
		t.Fatalf("duplicate import: %d %s", rec.Code, rec.Body)
	}
	rec = certCall(t, api, "POST", "/certlocker/certificates", jsonBody(t, map[string]string{"pem": later.chain + later.key}))
	if rec.Code != http.StatusCreated {
		t.Fatalf("import with key inline: %d %s", rec.Code, rec.Body)
	}

	listCases := map[string]struct {
		query  string
		status int
		ids    int
		field  string
	}{
		"all":                {"", 200, 2, ""},
		"domain":             {"?domain=Later.Example.com", 200, 1, ""},
		"wildcard":           {"?domain=*.later.example.com", 200, 1, ""},
		"group":              {"?group=web", 200, 1, ""},
		"expiring within 7d": {"?expiring_within=7d", 200, 1, ""},
		"expiry bucket":      {"?expiry=within_7d", 200, 1, ""},
		"bucket ok":          {"?expiry=ok", 200, 1, ""},
		"rating C":           {"?rating=C", 200, 2, ""},
		"status any":         {"?status=any&sort=-name", 200, 2, ""},
		"source":             {"?source=issued", 200, 0, ""},
		"page":               {"?limit=1", 200, 1, ""},
		"bad rating":         {"?rating=Z", 400, 0, "rating"},
		"bad sort":           {"?sort=serial", 400, 0, "sort"},
		"bad window":         {"?expiring_within=soon", 400, 0, "expiring_within"},
		"bad bucket":         {"?expiry=later", 400, 0, "expiry"},
		"bad status":         {"?status=gone", 400, 0, "status"},
		"typo":               {"?isuer=x", 400, 0, "isuer"},
		"bad limit":          {"?limit=0", 400, 0, "limit"},
		"bad cursor":         {"?cursor=nope", 400, 0, "cursor"},
	}
	for name, c := range listCases {
		t.Run("list "+name, func(t *testing.T) {
			rec := certCall(t, api, "GET", "/certlocker/certificates"+c.query, "")
			if rec.Code != c.status {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			if c.status != 200 {
				var e Error
				_ = json.Unmarshal(rec.Body.Bytes(), &e)
				if e.Field != c.field {
					t.Fatalf("error field %q: %s", e.Field, rec.Body)
				}
				return
			}
			var out certListResponse
			_ = json.Unmarshal(rec.Body.Bytes(), &out)
			if len(out.Items) != c.ids {
				t.Fatalf("%d items: %s", len(out.Items), rec.Body)
			}
			if strings.Contains(rec.Body.String(), "PRIVATE KEY") {
				t.Fatal("the list holds a key")
			}
		})
	}
	// the cursor walks the rest of the list
	var first, second certListResponse
	_ = json.Unmarshal(certCall(t, api, "GET", "/certlocker/certificates?limit=1&sort=-expires", "").Body.Bytes(), &first)
	_ = json.Unmarshal(certCall(t, api, "GET", "/certlocker/certificates?limit=1&sort=-expires&cursor="+first.NextCursor, "").Body.Bytes(), &second)
	if len(first.Items) != 1 || len(second.Items) != 1 || second.Items[0].ID != id || second.NextCursor != "" {
		t.Fatalf("pages %+v %+v", first, second)
	}

	t.Run("get", func(t *testing.T) {
		rec := certCall(t, api, "GET", "/certlocker/certificates/"+id, "")
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"fingerprint_sha256"`) || !strings.Contains(rec.Body.String(), `"trust"`) {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if rec := certCall(t, api, "GET", "/certlocker/certificates/crt_missing", ""); rec.Code != 404 {
			t.Fatalf("missing: %d", rec.Code)
		}
	})

	t.Run("exports", func(t *testing.T) {
		cases := map[string]struct {
			method, path, body string
			status             int
			contentType        string
			key                bool
		}{
			"chain":             {"GET", "/pem", "", 200, "application/pem-certificate-chain", false},
			"leaf":              {"GET", "/pem?format=leaf", "", 200, "application/x-pem-file", false},
			"bundle":            {"GET", "/pem?format=bundle", "", 200, "application/x-pem-file", true},
			"pkcs12":            {"POST", "/pkcs12", `{"password":"correct horse"}`, 200, "application/x-pkcs12", true},
			"pkcs12 no body":    {"POST", "/pkcs12", ``, 400, "application/json", false},
			"pkcs12 short":      {"POST", "/pkcs12", `{"password":"x"}`, 400, "application/json", false},
			"pkcs12 via GET":    {"GET", "/pem?format=pkcs12", "", 400, "application/json", false},
			"bad format":        {"GET", "/pem?format=der", "", 400, "application/json", false},
			"unknown param":     {"GET", "/pem?include_key=1", "", 400, "application/json", false},
			"pkcs12 wrong verb": {"GET", "/pkcs12", "", 405, "application/json", false},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				rec := certCall(t, api, c.method, "/certlocker/certificates/"+id+c.path, c.body)
				if rec.Code != c.status || rec.Header().Get("Content-Type") != c.contentType {
					t.Fatalf("got %d %s: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
				}
				if c.status != 200 {
					return
				}
				if rec.Header().Get("Cache-Control") != "no-store" || !strings.HasPrefix(rec.Header().Get("Content-Disposition"), "attachment") {
					t.Fatalf("headers %v", rec.Header())
				}
				if name == "pkcs12" {
					_, cert, _, err := pkcs12.DecodeChain(rec.Body.Bytes(), "correct horse")
					if err != nil || !cert.Equal(soon.leaf) {
						t.Fatalf("PKCS #12: %v", err)
					}
					return
				}
				if bytes.Contains(rec.Body.Bytes(), []byte("PRIVATE KEY")) != c.key {
					t.Fatalf("key included: %v, want %v", !c.key, c.key)
				}
			})
		}
		entries, _, err := app.AuditLog(ctx, storage.AuditFilter{Action: "certificate.export", Target: id}, storage.Page{})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 4 {
			t.Fatalf("%d export audit entries, want 4", len(entries))
		}
		for _, e := range entries {
			if bytes.Contains(e.Details, []byte("correct horse")) || bytes.Contains(e.Details, []byte("PRIVATE")) {
				t.Fatalf("audit entry holds a secret: %s", e.Details)
			}
		}
	})

	t.Run("expiry", func(t *testing.T) {
		rec := certCall(t, api, "GET", "/certlocker/certificates/expiry?days=14&interval=week", "")
		var rep struct {
			Totals struct {
				Within7d int `json:"within_7d"`
				OK       int `json:"ok"`
				Total    int `json:"total"`
			} `json:"totals"`
			ByGroup  []map[string]any `json:"by_group"`
			ByIssuer []map[string]any `json:"by_issuer"`
			Timeline []struct {
				Count int `json:"count"`
			} `json:"timeline"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &rep)
		if rec.Code != 200 || rep.Totals.Within7d != 1 || rep.Totals.OK != 1 || rep.Totals.Total != 2 ||
			len(rep.ByGroup) != 2 || len(rep.ByIssuer) != 1 || len(rep.Timeline) != 2 || rep.Timeline[0].Count != 1 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		for _, q := range []string{"?days=0", "?interval=month", "?days=x", "?sort=bogus"} {
			if rec := certCall(t, api, "GET", "/certlocker/certificates/expiry"+q, ""); rec.Code != 400 {
				t.Fatalf("%s: %d", q, rec.Code)
			}
		}
	})

	t.Run("refresh", func(t *testing.T) {
		rec := certCall(t, api, "POST", "/certlocker/actions/refresh-certificates", "")
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"updated"`) {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if rec := certCall(t, api, "DELETE", "/certlocker/certificates/"+id, ""); rec.Code != http.StatusNoContent {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if rec := certCall(t, api, "GET", "/certlocker/certificates/"+id, ""); rec.Code != 404 {
			t.Fatalf("after delete: %d", rec.Code)
		}
		if rec := certCall(t, api, "DELETE", "/certlocker/certificates/"+id, ""); rec.Code != 404 {
			t.Fatalf("second delete: %d", rec.Code)
		}
		entries, _, _ := app.AuditLog(ctx, storage.AuditFilter{Action: "certificate.delete", Target: id}, storage.Page{})
		if len(entries) != 1 || !strings.HasPrefix(entries[0].Actor, "admin-api@") {
			t.Fatalf("delete audit %+v", entries)
		}
	})
}

// With key export disabled, the admin API gets 403 for formats holding the
// key, chains still export, and the refusal is audited.
func TestCertificatesKeyExportRefused(t *testing.T) {
	cases := map[string]string{
		"disabled":           `{"disable_key_export": true}`,
		"admin not in roles": `{"key_export_roles": ["deployer"]}`,
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			api, app := certTestAPI(t, cfg)
			f := newCertFixture(t, []string{"refuse.example.com"}, time.Now().Add(40*24*time.Hour))
			rec := certCall(t, api, "POST", "/certlocker/certificates", jsonBody(t, map[string]string{"pem": f.chain, "key_pem": f.key}))
			var imp struct {
				Certificate struct {
					ID string `json:"id"`
				} `json:"certificate"`
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &imp)
			id := imp.Certificate.ID
			for _, c := range []struct{ method, path, body string }{
				{"GET", "/pem?format=bundle", ""},
				{"POST", "/pkcs12", `{"password":"correct horse"}`},
			} {
				rec := certCall(t, api, c.method, "/certlocker/certificates/"+id+c.path, c.body)
				if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "not allowed") {
					t.Fatalf("%s: %d %s", c.path, rec.Code, rec.Body)
				}
			}
			if rec := certCall(t, api, "GET", "/certlocker/certificates/"+id+"/pem", ""); rec.Code != 200 {
				t.Fatalf("chain export: %d", rec.Code)
			}
			entries, _, _ := app.AuditLog(t.Context(), storage.AuditFilter{Action: "certificate.export"}, storage.Page{})
			refused := 0
			for _, e := range entries {
				if strings.Contains(string(e.Details), `"allowed":false`) {
					refused++
				}
			}
			if len(entries) != 3 || refused != 2 {
				t.Fatalf("%d export entries, %d refused", len(entries), refused)
			}
		})
	}
}
