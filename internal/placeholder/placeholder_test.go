package placeholder

import "testing"

func TestOnly(t *testing.T) {
	for s, want := range map[string]bool{
		"{env.X}":               true,
		" {env.X} ":             true,
		"{env.A}{file./x/y}":    true,
		"":                      false,
		"secret":                false,
		"s3cr3t{env.X}":         false,
		"{env.X}tail":           false,
		"{env.A} {env.B}":       false,
		"{}":                    false,
		"{env.{nested}}":        false,
		"https://hooks/{env.T}": false,
	} {
		if got := Only(s); got != want {
			t.Errorf("Only(%q) = %v, want %v", s, got, want)
		}
	}
	if !Has("https://hooks/{env.T}") || Has("plain") {
		t.Error("Has is wrong")
	}
	if got := Mask("u:{env.PW}@h", "M"); got != "u:M@h" {
		t.Errorf("Mask = %q", got)
	}
}
