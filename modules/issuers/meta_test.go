package issuers

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The fixtures in testdata/directories follow the directory documents the
// real CAs publish (shapes and field spellings), including their quirks.
func TestParseDirectoryFixtures(t *testing.T) {
	cases := map[string]struct {
		eab       bool
		ari       bool
		profiles  []string
		caa       []string
		terms     string
		preauth   bool
		keyChange bool
		wantErr   string
	}{
		"letsencrypt": {ari: true, keyChange: true, profiles: []string{"classic", "shortlived", "tlsserver"}, caa: []string{"letsencrypt.org"},
			terms: "https://letsencrypt.org/documents/LE-SA-v1.5-February-24-2025.pdf"},
		"google":           {eab: true, ari: true, keyChange: true, preauth: true, caa: []string{"pki.goog"}, terms: "https://pki.goog/GTS-SA.pdf"},
		"zerossl":          {eab: true, keyChange: true, caa: []string{"sectigo.com", "trust-provider.com", "usertrust.com", "comodoca.com", "comodo.com"}, terms: "https://secure.trust-provider.com/repository/docs/Legacy/20221001_Certificate_Subscriber_Agreement_v_2_5_click.pdf"},
		"sectigo-ov":       {eab: true, keyChange: true, caa: []string{"sectigo.com", "trust-provider.com", "usertrust.com", "comodoca.com", "comodo.com"}, terms: "https://secure.trust-provider.com/repository/docs/Legacy/20221001_Certificate_Subscriber_Agreement_v_2_5_click.pdf"},
		"digicert":         {eab: true, keyChange: true, caa: []string{"digicert.com", "www.digicert.com"}, terms: "https://www.digicert.com/content/dam/digicert/pdfs/legal/digicert-master-services-agreement-en.pdf"},
		"buypass":          {keyChange: true, caa: []string{"buypass.com", "buypass.no"}, terms: "https://api.buypass.com/acme/terms/1193"},
		"actalis":          {eab: true, keyChange: true, caa: []string{"actalis.it"}, terms: "https://www.actalis.com/documents/ssl-terms.pdf"},
		"sslcom":           {eab: true, keyChange: true, caa: []string{"ssl.com"}, terms: "https://www.ssl.com/legal"},
		"globalsign-atlas": {eab: true, keyChange: true, caa: []string{"globalsign.com"}, terms: "https://www.globalsign.com/en/repository"},
		"harica":           {eab: true, keyChange: true, caa: []string{"harica.gr"}, terms: "https://repo.harica.gr/documents/CPS.pdf"},
		"entrust":          {eab: true, keyChange: true, terms: "https://www.entrust.net/cps"},
		"profiles-objects": {ari: true, keyChange: true, profiles: []string{"long", "short"}},
		"no-meta":          {keyChange: true},
		"not-acme":         {wantErr: "not an ACME directory: it has no newAccount, newNonce, newOrder"},
	}
	files, _ := filepath.Glob("testdata/directories/*.json")
	if len(files) != len(cases) {
		t.Fatalf("%d fixtures, %d cases: keep them in step", len(files), len(cases))
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "directories", name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseDirectory(b)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case m.ExternalAccountRequired != c.eab:
				t.Errorf("external account required = %v", m.ExternalAccountRequired)
			case m.ARI != c.ari || m.PreAuthorization != c.preauth || m.KeyChange != c.keyChange:
				t.Errorf("ari %v preauth %v keychange %v", m.ARI, m.PreAuthorization, m.KeyChange)
			case !slices.Equal(m.ProfileNames(), c.profiles):
				t.Errorf("profiles = %v", m.ProfileNames())
			case !slices.Equal(m.CAAIdentities, c.caa):
				t.Errorf("caa = %v", m.CAAIdentities)
			case m.TermsOfService != c.terms:
				t.Errorf("terms = %q", m.TermsOfService)
			}
		})
	}
	m, _ := ParseDirectory([]byte(`{"newNonce":"a","newAccount":"b","newOrder":"c","meta":{"profiles":{"short":{"description":"7-day certificates"}}}}`))
	if m.Profiles["short"] != "7-day certificates" {
		t.Errorf("profile description from an object = %q", m.Profiles["short"])
	}
}

func TestParseDirectoryMalformed(t *testing.T) {
	cases := map[string]string{
		"not json":       `<html>login</html>`,
		"array":          `[1,2]`,
		"meta not obj":   `{"newNonce":"a","newAccount":"b","newOrder":"c","meta":"x"}`,
		"missing nonces": `{"newAccount":"b","newOrder":"c"}`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseDirectory([]byte(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
