package storage

import (
	"sort"
	"strings"
	"testing"
)

func TestNewIDSortsInCreationOrder(t *testing.T) {
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = NewID("wf")
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("IDs are not in creation order")
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
		if !strings.HasPrefix(id, "wf_") || len(id) != 3+26 {
			t.Fatalf("malformed id %q", id)
		}
	}
}

func TestValidGroup(t *testing.T) {
	for g, want := range map[string]bool{
		"": true, "web": true, "platform-eu.prod_2": true, strings.Repeat("a", 63): true,
		strings.Repeat("a", 64): false, "-web": false, ".hidden": false, "has space": false, "ünï": false,
	} {
		if ValidGroup(g) != want {
			t.Errorf("ValidGroup(%q) = %v, want %v", g, !want, want)
		}
	}
}
