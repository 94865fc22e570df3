package renewal

import (
	"encoding/json"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(90 * 24 * time.Hour)
	day := 24 * time.Hour
	twoThirds := nb.Add(60 * day)
	window := &Window{Start: nb.Add(50 * day), End: nb.Add(52 * day)}
	past := &Window{Start: nb.Add(-time.Hour), End: nb} // a CA pulling the window into the past: renew now
	cases := map[string]struct {
		now   time.Time
		ari   *Window
		renew bool
		at    time.Time
	}{
		"fresh, no ARI":                       {nb.Add(time.Hour), nil, false, twoThirds},
		"just before two thirds":              {twoThirds.Add(-time.Second), nil, false, twoThirds},
		"at two thirds":                       {twoThirds, nil, true, twoThirds},
		"expired":                             {na.Add(time.Second), nil, true, twoThirds},
		"before the ARI window":               {nb.Add(10 * day), window, false, window.Start},
		"inside the ARI window, before 2/3":   {nb.Add(51 * day), window, true, window.Start},
		"after the ARI window":                {nb.Add(55 * day), window, true, window.Start},
		"ARI window in the past":              {nb.Add(time.Hour), past, true, past.Start},
		"ARI window later than two thirds":    {nb.Add(61 * day), &Window{Start: nb.Add(70 * day), End: nb.Add(71 * day)}, false, nb.Add(70 * day)},
		"ARI window after expiry, expired":    {na, &Window{Start: na.Add(day), End: na.Add(2 * day)}, true, na},
		"empty ARI falls back":                {nb.Add(time.Hour), &Window{}, false, twoThirds},
		"ARI ending before it starts: no ARI": {twoThirds, &Window{Start: nb.Add(80 * day), End: nb.Add(79 * day)}, true, twoThirds},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(nb, na, c.ari, c.now)
			if d.Renew != c.renew || !d.At.Equal(c.at) || d.Reason == "" {
				t.Fatalf("got %+v, want renew=%v at %v", d, c.renew, c.at)
			}
		})
	}
}

func TestWindowInMetadata(t *testing.T) {
	w := &Window{Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 2, 2, 0, 0, 0, 0, time.UTC)}
	meta := json.RawMessage(`{"subject":"CN=a","rating":{"grade":"A"}}`)
	with, err := WithWindow(meta, w)
	if err != nil {
		t.Fatal(err)
	}
	got := WindowOf(with)
	if got == nil || !got.Start.Equal(w.Start) || !got.End.Equal(w.End) {
		t.Fatalf("window read back %+v from %s", got, with)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(with, &m); err != nil || string(m["subject"]) != `"CN=a"` || string(m["rating"]) != `{"grade":"A"}` || m[MetaKey] == nil {
		t.Fatalf("the other members did not survive: %s", with)
	}
	without, err := WithWindow(with, nil)
	if err != nil || WindowOf(without) != nil {
		t.Fatalf("removing the window: %s, %v", without, err)
	}
	if WindowOf(nil) != nil || WindowOf(json.RawMessage(`[1]`)) != nil {
		t.Fatal("a window read from no metadata")
	}
	if _, err := WithWindow(json.RawMessage(`[1]`), w); err == nil {
		t.Fatal("metadata that is not an object was rewritten")
	}
}
