package gateway_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/certlocker/caddy-certlocker/caddyfile"
	"github.com/certlocker/caddy-certlocker/modules/gateway"
	"github.com/certlocker/caddy-certlocker/storage"
)

var updateRecipes = flag.Bool("update-recipes", false, "rewrite examples/edges from the recipes the API serves")

// examples/edges holds, per edge client, the configuration a token's
// "clients" field serves (for an example token): the files are golden
// twins of what the API prints. The certbot and lego lines are the ones
// TestCertbotThroughEAB and TestLegoThroughEAB run against the gateway,
// TestHAProxy33Sequence replays HAProxy 3.3's use of the per-token URL,
// and examples/edge-caddy.caddyfile is the Caddy edge.
func TestEdgeExamplesMatchRecipes(t *testing.T) {
	tok := &storage.Token{ID: "ctk_EXAMPLE", Names: []string{"www.example.com"}}
	recipes := gateway.Recipes("https://acme.example.com", tok, "EAB_HMAC_KEY", "/rest/acme/t/URL_SECRET/directory")
	files := map[string]string{"haproxy_3_3": "haproxy-3.3.cfg", "haproxy_3_4": "haproxy-3.4.cfg", "win_acme": "win-acme.ps1",
		"certbot": "certbot.sh", "lego": "lego.sh", "acme_sh": "acme.sh.sh", "caddy": "caddy.caddyfile"}
	if len(files) != len(recipes) {
		t.Fatalf("%d recipes, %d example files", len(recipes), len(files))
	}
	for key, name := range files {
		path := filepath.Join("..", "..", "examples", "edges", name)
		want := recipes[key]
		if want == "" {
			t.Fatalf("no recipe %s", key)
		}
		if want[len(want)-1] != '\n' {
			want += "\n"
		}
		if *updateRecipes {
			_ = os.WriteFile(path, []byte(want), 0o644)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Fatalf("%s is not what the API prints for %s (run with -update-recipes):\n%s", path, key, want)
		}
	}
	// the Caddy recipe is a valid Caddyfile
	if _, err := caddyfile.Adapt([]byte(recipes["caddy"]), "caddy.caddyfile"); err != nil {
		t.Fatalf("the Caddy recipe does not adapt: %v", err)
	}
}
