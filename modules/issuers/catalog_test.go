package issuers

import (
	"crypto/x509/pkix"
	"strings"
	"testing"
)

func TestCatalogContents(t *testing.T) {
	all := Catalog()
	if len(all) < 16 {
		t.Fatalf("catalog has %d entries, want at least 16", len(all))
	}
	want := map[string]struct {
		eab, url string
		retired  bool
	}{
		"letsencrypt":         {EABNone, "https://acme-v02.api.letsencrypt.org/directory", false},
		"letsencrypt-staging": {EABNone, "https://acme-staging-v02.api.letsencrypt.org/directory", false},
		"google":              {EABRequired, "https://dv.acme-v02.api.pki.goog/directory", false},
		"google-staging":      {EABRequired, "https://dv.acme-v02.test-api.pki.goog/directory", false},
		"zerossl":             {EABRequired, "https://acme.zerossl.com/v2/DV90", false},
		"sslcom-rsa":          {EABRequired, "https://acme.ssl.com/sslcom-dv-rsa", false},
		"sslcom-ecc":          {EABRequired, "https://acme.ssl.com/sslcom-dv-ecc", false},
		"sectigo-dv":          {EABRequired, "https://acme.sectigo.com/v2/DV", false},
		"sectigo-ov":          {EABRequired, "https://acme.sectigo.com/v2/OV", false},
		"sectigo-ev":          {EABRequired, "https://acme.sectigo.com/v2/EV", false},
		"incommon-rsa-ov":     {EABRequired, "https://acme.sectigo.com/v2/InCommonRSAOV", false},
		"incommon-ecc-ov":     {EABRequired, "https://acme.sectigo.com/v2/InCommonECCOV", false},
		"actalis":             {EABRequired, "https://acme-api.actalis.com/acme/directory", false},
		"digicert":            {EABRequired, "https://acme.digicert.com/v2/acme/directory/", false},
		"digicert-tlm":        {EABRequired, "https://{host}/mpki/api/v1/acme/v2/directory", false},
		"globalsign-atlas":    {EABRequired, "https://emea.acme.atlas.globalsign.com/directory", false},
		"harica":              {EABRequired, "https://acme.harica.gr/{account}/directory", false},
		"entrust":             {EABRequired, "https://www.entrust.net/acme/api/v1/directory", false},
		"buypass":             {EABNone, "https://api.buypass.com/acme/directory", true},
		"custom":              {EABOptional, "", false},
	}
	for id, w := range want {
		t.Run(id, func(t *testing.T) {
			e, ok := LookupCatalog(id)
			if !ok {
				t.Fatal("missing")
			}
			if e.EAB != w.eab || e.DirectoryURL != w.url || e.Retired != w.retired {
				t.Fatalf("got eab %s url %s retired %v", e.EAB, e.DirectoryURL, e.Retired)
			}
			if len(e.Setup) == 0 || e.Notes.Wildcard == "" || len(e.Notes.KeyTypes) == 0 {
				t.Fatal("setup and notes must be filled in")
			}
		})
	}
	if e, _ := LookupCatalog("entrust"); !strings.Contains(e.Warning, "Chrome") {
		t.Error("entrust must carry the browser-distrust warning")
	}
	if e, _ := LookupCatalog("buypass"); !strings.Contains(e.Warning, "October 2025") {
		t.Error("buypass must say when it stopped issuing")
	}
}

func TestParseCatalogRejects(t *testing.T) {
	cases := map[string]string{
		"bad id":       `{"entries":[{"id":"Bad ID","name":"x","setup":["s"],"eab":"none","environment":"production","directory_url":"https://x/"}]}`,
		"duplicate":    `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"none","environment":"production","directory_url":"https://x/"},{"id":"a","name":"y","setup":["s"],"eab":"none","environment":"production","directory_url":"https://x/"}]}`,
		"no setup":     `{"entries":[{"id":"a","name":"x","eab":"none","environment":"production","directory_url":"https://x/"}]}`,
		"bad eab":      `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"maybe","environment":"production","directory_url":"https://x/"}]}`,
		"http url":     `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"none","environment":"production","directory_url":"http://x/"}]}`,
		"no url":       `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"none","environment":"production"}]}`,
		"unknown twin": `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"none","environment":"production","directory_url":"https://x/","staging_id":"b"}]}`,
		"not json":     `{`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := parseCatalog([]byte(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestResolveURL(t *testing.T) {
	harica, _ := LookupCatalog("harica")
	tlm, _ := LookupCatalog("digicert-tlm")
	cases := map[string]struct {
		entry   CatalogEntry
		params  map[string]string
		want    string
		wantErr string
	}{
		"harica account":      {harica, map[string]string{"account": "a1b2"}, "https://acme.harica.gr/a1b2/directory", ""},
		"harica escapes":      {harica, map[string]string{"account": "../x?y"}, "https://acme.harica.gr/..%2Fx%3Fy/directory", ""},
		"harica missing":      {harica, nil, "", "needs directory_params account"},
		"tlm default host":    {tlm, nil, "https://one.digicert.com/mpki/api/v1/acme/v2/directory", ""},
		"tlm regional host":   {tlm, map[string]string{"host": "one.eu.digicert.com"}, "https://one.eu.digicert.com/mpki/api/v1/acme/v2/directory", ""},
		"plain url no params": {CatalogEntry{DirectoryURL: "https://ca/dir"}, nil, "https://ca/dir", ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := c.entry.resolveURL(c.params)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestMatchIssuer(t *testing.T) {
	cases := map[string]struct {
		name pkix.Name
		want string
	}{
		"letsencrypt R11":       {pkix.Name{Organization: []string{"Let's Encrypt"}, CommonName: "R11"}, "letsencrypt"},
		"letsencrypt staging":   {pkix.Name{Organization: []string{"(STAGING) Let's Encrypt"}, CommonName: "(STAGING) Ersatz Edamame E1"}, "letsencrypt-staging"},
		"gts":                   {pkix.Name{Organization: []string{"Google Trust Services"}, CommonName: "WR1"}, "google"},
		"gts llc":               {pkix.Name{Organization: []string{"Google Trust Services LLC"}, CommonName: "GTS CA 1P5"}, "google"},
		"zerossl":               {pkix.Name{Organization: []string{"ZeroSSL"}, CommonName: "ZeroSSL RSA Domain Secure Site CA"}, "zerossl"},
		"sslcom rsa":            {pkix.Name{Organization: []string{"SSL Corporation"}, CommonName: "SSL.com RSA SSL subCA"}, "sslcom-rsa"},
		"sslcom ecc":            {pkix.Name{Organization: []string{"SSL Corporation"}, CommonName: "SSL.com SSL Intermediate CA ECC R2"}, "sslcom-ecc"},
		"sectigo dv":            {pkix.Name{Organization: []string{"Sectigo Limited"}, CommonName: "Sectigo RSA Domain Validation Secure Server CA"}, "sectigo-dv"},
		"sectigo ov":            {pkix.Name{Organization: []string{"Sectigo Limited"}, CommonName: "Sectigo RSA Organization Validation Secure Server CA"}, "sectigo-ov"},
		"sectigo ov r36":        {pkix.Name{Organization: []string{"Sectigo Limited"}, CommonName: "Sectigo Public Server Authentication CA OV R36"}, "sectigo-ov"},
		"sectigo ev":            {pkix.Name{Organization: []string{"Sectigo Limited"}, CommonName: "Sectigo Public Server Authentication CA EV E36"}, "sectigo-ev"},
		"incommon rsa":          {pkix.Name{Organization: []string{"Internet2"}, CommonName: "InCommon RSA Server CA 2"}, "incommon-rsa-ov"},
		"incommon ecc":          {pkix.Name{Organization: []string{"Internet2"}, CommonName: "InCommon ECC Server CA 2"}, "incommon-ecc-ov"},
		"actalis":               {pkix.Name{Organization: []string{"Actalis S.p.A."}, CommonName: "Actalis Domain Validation Server CA G3"}, "actalis"},
		"actalis with number":   {pkix.Name{Organization: []string{"Actalis S.p.A./03358520967"}, CommonName: "Actalis Organization Validated Server CA G3"}, "actalis"},
		"digicert":              {pkix.Name{Organization: []string{"DigiCert Inc"}, CommonName: "DigiCert Global G2 TLS RSA SHA256 2020 CA1"}, "digicert"},
		"globalsign":            {pkix.Name{Organization: []string{"GlobalSign nv-sa"}, CommonName: "GlobalSign Atlas R3 DV TLS CA 2024 Q4"}, "globalsign-atlas"},
		"harica":                {pkix.Name{Organization: []string{"Hellenic Academic and Research Institutions CA"}, CommonName: "HARICA DV TLS RSA"}, "harica"},
		"entrust":               {pkix.Name{Organization: []string{"Entrust, Inc."}, CommonName: "Entrust Certification Authority - L1K"}, "entrust"},
		"buypass":               {pkix.Name{Organization: []string{"Buypass AS-983163327"}, CommonName: "Buypass Class 2 CA 5"}, "buypass"},
		"case insensitive":      {pkix.Name{Organization: []string{"LET'S ENCRYPT"}, CommonName: "E6"}, "letsencrypt"},
		"unknown":               {pkix.Name{Organization: []string{"Example Private CA"}, CommonName: "Issuing CA"}, ""},
		"no organization":       {pkix.Name{CommonName: "R11"}, ""},
		"prefix is not a match": {pkix.Name{Organization: []string{"Let's Encrypt Fans"}}, ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, ok := MatchIssuer(c.name)
			if got != c.want || ok != (c.want != "") {
				t.Fatalf("MatchIssuer = %q, %v; want %q", got, ok, c.want)
			}
		})
	}
}

// Every CA in the catalog says what it documents about duplicate
// certificates (certificates for exactly the same names): a limit with its
// source, or explicitly none, with a note on what was checked. Nothing is
// invented: only Let's Encrypt publishes one (production and staging).
func TestCatalogDuplicateLimits(t *testing.T) {
	documented := map[string][2]any{"letsencrypt": {5, "168h"}, "letsencrypt-staging": {30000, "168h"}}
	for _, e := range Catalog() {
		if e.ID == CustomCatalogID {
			if e.DuplicateLimit != nil {
				t.Errorf("custom: a custom directory has no catalog limit")
			}
			continue
		}
		l := e.DuplicateLimit
		if l == nil {
			t.Errorf("%s: no duplicate_certificate_limit (give the limit, or none with a note)", e.ID)
			continue
		}
		if w, ok := documented[e.ID]; ok {
			if l.None || l.Count != w[0] || l.Window != w[1] || !strings.HasPrefix(l.Source, "https://") {
				t.Errorf("%s: duplicate limit %+v, want %v per %v with its source", e.ID, *l, w[0], w[1])
			}
			continue
		}
		if !l.None || l.Count != 0 || l.Window != "" || l.Note == "" {
			t.Errorf("%s: duplicate limit %+v, want none documented, with a note", e.ID, *l)
		}
		if n, _ := l.Limit(); n != 0 {
			t.Errorf("%s: a CA that documents no limit must not pace", e.ID)
		}
	}
}

func TestCatalogDuplicateLimitChecked(t *testing.T) {
	for name, doc := range map[string]string{
		"none with count": `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"none","environment":"production","directory_url":"https://x/","duplicate_certificate_limit":{"none":true,"count":5,"window":"1h","note":"n"}}]}`,
		"none no note":    `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"none","environment":"production","directory_url":"https://x/","duplicate_certificate_limit":{"none":true}}]}`,
		"no count":        `{"entries":[{"id":"a","name":"x","setup":["s"],"eab":"none","environment":"production","directory_url":"https://x/","duplicate_certificate_limit":{"window":"1h"}}]}`,
	} {
		if _, err := parseCatalog([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
