package caddyfile_test

import (
	"strings"
	"testing"
)

func TestAdaptInventoryErrors(t *testing.T) {
	wrap := func(body string) string { return "{\n\tcertlocker {\n" + body + "\t}\n}\n" }
	cases := map[string]struct{ in, want, at string }{
		"argument":       {wrap("\t\tinventory admin\n"), "wrong argument count", "Caddyfile:3"},
		"no roles":       {wrap("\t\tinventory {\n\t\t\tkey_export_roles\n\t\t}\n"), "wrong argument count", "Caddyfile:4"},
		"bad role":       {wrap("\t\tinventory {\n\t\t\tkey_export_roles Admin\n\t\t}\n"), `"Admin" is not a role name`, "Caddyfile:4"},
		"flag with arg":  {wrap("\t\tinventory {\n\t\t\tdisable_key_export yes\n\t\t}\n"), "wrong argument count", "Caddyfile:4"},
		"unknown subdir": {wrap("\t\tinventory {\n\t\t\tcolour blue\n\t\t}\n"), "unrecognized inventory subdirective: colour", "Caddyfile:4"},
		"twice":          {wrap("\t\tinventory {\n\t\t}\n\t\tinventory {\n\t\t}\n"), "only once", "Caddyfile:5"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Adapt(t, []byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.at) {
				t.Fatalf("error %v, want it to contain %q and %q", err, c.want, c.at)
			}
		})
	}
}
