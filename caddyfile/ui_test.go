package caddyfile_test

import (
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth" // basic_auth, for ui.caddyfiletest
)

// TestUsersOption: `user <id> <role> [groups <g>...]` refuses what it
// cannot mean, naming the file and line.
func TestUsersOption(t *testing.T) {
	cases := map[string]string{
		"no role":              "user ops",
		"groups without names": "user ops operator groups",
		"stray argument":       "user ops operator team-a",
	}
	for name, line := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Adapt(t, []byte("{\n\tcertlocker {\n\t\t"+line+"\n\t}\n}\n"))
			if err == nil || !strings.Contains(err.Error(), "usage: user <id>") || !strings.Contains(err.Error(), "Caddyfile:3") {
				t.Fatalf("%q: %v", line, err)
			}
		})
	}
}
