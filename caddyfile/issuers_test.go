package caddyfile_test

import (
	"strings"
	"testing"
)

func TestAdaptIssuerErrors(t *testing.T) {
	wrap := func(body string) string { return "{\n\tcertlocker {\n" + body + "\t}\n}\n" }
	cases := map[string]struct{ in, want, at string }{
		"no name":          {wrap("\t\tissuer {\n\t\t\tcatalog letsencrypt\n\t\t}\n"), "issuer needs a name", "Caddyfile:3"},
		"unknown catalog":  {wrap("\t\tissuer x {\n\t\t\tcatalog acme-corp\n\t\t}\n"), `unknown catalog "acme-corp"`, "Caddyfile:"},
		"no directory":     {wrap("\t\tissuer x {\n\t\t\temail a@example.com\n\t\t}\n"), "needs catalog <id> or directory <url>", "Caddyfile:"},
		"literal mac":      {wrap("\t\tissuer x {\n\t\t\tcatalog google\n\t\t\teab kid c2VjcmV0\n\t\t}\n"), "must be a placeholder", "Caddyfile:5"},
		"eab one arg":      {wrap("\t\tissuer x {\n\t\t\tcatalog google\n\t\t\teab kid\n\t\t}\n"), "eab needs a key ID and a MAC key placeholder", "Caddyfile:5"},
		"bad key type":     {wrap("\t\tissuer x {\n\t\t\tcatalog letsencrypt\n\t\t\tkey_type dsa\n\t\t}\n"), `unsupported key_type "dsa"`, "Caddyfile:5"},
		"unknown subdir":   {wrap("\t\tissuer x {\n\t\t\tcatalog letsencrypt\n\t\t\tcolour blue\n\t\t}\n"), "unrecognized issuer subdirective: colour", "Caddyfile:5"},
		"agree with arg":   {wrap("\t\tissuer x {\n\t\t\tcatalog letsencrypt\n\t\t\tagree_terms yes\n\t\t}\n"), "wrong argument count", "Caddyfile:5"},
		"declared twice":   {wrap("\t\tissuer x {\n\t\t\tcatalog letsencrypt\n\t\t}\n\t\tissuer x {\n\t\t\tcatalog google\n\t\t}\n"), "declared twice", "Caddyfile:"},
		"bad param":        {wrap("\t\tissuer x {\n\t\t\tcatalog harica\n\t\t\tdirectory_param account\n\t\t}\n"), "wrong argument count", "Caddyfile:5"},
		"extra name token": {wrap("\t\tissuer x y {\n\t\t\tcatalog letsencrypt\n\t\t}\n"), "wrong argument count", "Caddyfile:3"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Adapt(t, []byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.at) {
				t.Fatalf("error %v, want it to contain %q and %q", err, c.want, c.at)
			}
			if strings.Contains(err.Error(), "c2VjcmV0") {
				t.Fatal("the error holds the MAC key")
			}
		})
	}
}
