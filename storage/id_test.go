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
