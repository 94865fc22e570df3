package caddyfile_test

import (
	"strings"
	"testing"
)

func TestAdaptGatewayErrors(t *testing.T) {
	cases := map[string]struct{ in, want, at string }{
		"unknown subdirective": {"a.example.com {\n\tcertlocker_acme {\n\t\tcolour blue\n\t}\n}\n", "unrecognized subdirective: colour", "Caddyfile:3"},
		"bad wait":             {"a.example.com {\n\tcertlocker_acme {\n\t\tfinalize_wait soon\n\t}\n}\n", "finalize_wait", "Caddyfile:3"},
		"bad limit":            {"a.example.com {\n\tcertlocker_acme {\n\t\tduplicate_limit 0\n\t}\n}\n", "duplicate_limit must be a positive number", "Caddyfile:3"},
		"argument":             {"a.example.com {\n\tcertlocker_acme now\n}\n", "wrong argument count", "Caddyfile:2"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Adapt(t, []byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.at) {
				t.Fatalf("error %v, want it to contain %q %q", err, c.want, c.at)
			}
		})
	}
}
