package gateway

import "testing"

func TestScopeCovers(t *testing.T) {
	scope, err := NewScope([]string{"Example.COM.", "*.apps.example.com", "bücher.example", "192.0.2.1", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		want bool
	}{
		{"example.com", true},
		{"EXAMPLE.com.", true},
		{"www.example.com", false}, // exact name does not cover below
		{"a.apps.example.com", true},
		{"A.Apps.Example.Com.", true},
		{"*.apps.example.com", true},
		{"apps.example.com", false},     // a wildcard does not cover its base
		{"a.b.apps.example.com", false}, // nor two labels below
		{"*.example.com", false},
		{"*.b.apps.example.com", false},
		{"bücher.example", true},
		{"xn--bcher-kva.example", true},
		{"BÜCHER.example", true},
		{"192.0.2.1", true},
		{"192.0.2.2", false},
		{"2001:0db8:0:0:0:0:0:1", true},
		{"[2001:db8::1]", true},
		{"", false},
		{".", false},
		{"a..apps.example.com", false},
		{"evil-example.com", false},
		{"example.com.evil", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := scope.Covers(c.name); got != c.want {
				t.Fatalf("Covers(%q) = %v, want %v", c.name, got, c.want)
			}
		})
	}
}

func TestScopeIPsOnlyWhenScoped(t *testing.T) {
	scope, err := NewScope([]string{"*.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"192.0.2.1", "::1", "1.example.com"} {
		want := n == "1.example.com"
		if got := scope.Covers(n); got != want {
			t.Errorf("Covers(%q) = %v, want %v", n, got, want)
		}
	}
	empty, _ := NewScope(nil)
	if !empty.Empty() || empty.Covers("example.com") {
		t.Fatal("an empty scope must cover nothing")
	}
}
