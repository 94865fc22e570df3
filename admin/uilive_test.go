package admin

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestUILiveListSharesOneFeed: the live workflows lists of one scope share
// one look at the store, each user's stream carries only their groups'
// rows, a change reaches every stream, and the feed stops with its last
// stream.
func TestUILiveListSharesOneFeed(t *testing.T) {
	f := newUIFixture(t)
	f.ui.live.every = 20 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repl := caddy.NewReplacer()
		repl.Set("http.auth.user.id", r.Header.Get("X-Test-User"))
		_ = f.ui.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)), nil)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	type stream struct {
		lines chan string
		stop  context.CancelFunc
	}
	open := func(user string) stream {
		sctx, stop := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(sctx, http.MethodGet, srv.URL+"/live/workflows", nil)
		req.Header.Set("X-Test-User", user)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream as %s: %v %v", user, resp, err)
		}
		lines := make(chan string, 100)
		go func() {
			defer resp.Body.Close()
			defer close(lines)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		return stream{lines, stop}
	}
	// until reads a stream's lines until each of wants has been in one,
	// and returns them
	until := func(s stream, wants ...string) string {
		t.Helper()
		var seen []string
		for {
			missing := 0
			for _, w := range wants {
				if !strings.Contains(strings.Join(seen, "\n"), w) {
					missing++
				}
			}
			if missing == 0 {
				return strings.Join(seen, "\n")
			}
			select {
			case l, ok := <-s.lines:
				if !ok {
					t.Fatalf("the stream ended before %q; it sent %v", wants, seen)
				}
				seen = append(seen, l)
			case <-ctx.Done():
				t.Fatalf("no %q on the stream; it sent %v", wants, seen)
			}
		}
	}
	root1, root2, alice := open("root"), open("root"), open("alice")
	for _, s := range []stream{root1, root2} {
		got := until(s, ": ready")
		for _, g := range []string{"A", "B"} {
			if !strings.Contains(got, f.ids[g]["workflow"]) {
				t.Fatalf("root's stream lacks group %s's workflow:\n%s", g, got)
			}
		}
	}
	if got := until(alice, ": ready"); !strings.Contains(got, f.ids["A"]["workflow"]) || strings.Contains(got, f.ids["B"]["workflow"]) {
		t.Fatalf("alice (group A) got:\n%s", got)
	}
	if n := f.ui.live.feedCount(); n != 2 {
		t.Fatalf("%d feeds for three streams in two scopes, want 2", n)
	}

	if _, err := f.app.Workflows().Cancel(ctx, f.ids["B"]["workflow"], "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.app.Workflows().Cancel(ctx, f.ids["A"]["workflow"], "test"); err != nil {
		t.Fatal(err)
	}
	cancelled := func(g string) string {
		return `"id":"` + f.ids[g]["workflow"] + `","issuer":"ca-team-` + strings.ToLower(g) + `","last_message":"","state":"cancelled"`
	}
	for _, s := range []stream{root1, root2} {
		until(s, cancelled("A"), cancelled("B"))
	}
	if got := until(alice, cancelled("A")); strings.Contains(got, f.ids["B"]["workflow"]) {
		t.Fatalf("alice (group A) got group B's workflow:\n%s", got)
	}

	for _, s := range []stream{root1, root2, alice} {
		s.stop()
	}
	for f.ui.live.feedCount() != 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the feeds did not stop with their streams")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
