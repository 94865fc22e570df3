package certlocker

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/inventory"
)

func TestInventoryConfig(t *testing.T) {
	cases := map[string]struct {
		inventory string
		err       string
		admin     bool
		deployer  bool
	}{
		"default":  {"", "", true, false},
		"roles":    {`{"key_export_roles":["deployer"]}`, "", false, true},
		"disabled": {`{"key_export_roles":["admin"],"disable_key_export":true}`, "", false, false},
		"bad role": {`{"key_export_roles":["Bad Role"]}`, "key_export_roles[0]", false, false},
		"unknown":  {`{"key_roles":["admin"]}`, "key_roles", false, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			raw := `{"storage":{"path":"` + filepath.Join(t.TempDir(), "c.db") + `"},"node_id":"n1"`
			if c.inventory != "" {
				raw += `,"inventory":` + c.inventory
			}
			raw += "}"
			// ProvisionContext provisions the apps; ctx.App returns the one
			var v any
			ctx, err := caddy.ProvisionContext(&caddy.Config{AppsRaw: caddy.ModuleMap{"certlocker": json.RawMessage(raw)}})
			if err == nil {
				v, err = ctx.App("certlocker")
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want an error about %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			app := v.(*App)
			defer app.Cleanup()
			inv := app.Certificates()
			if inv.CanExportKeys(inventory.RoleAdmin) != c.admin || inv.CanExportKeys("deployer") != c.deployer {
				t.Fatalf("admin %v deployer %v", inv.CanExportKeys(inventory.RoleAdmin), inv.CanExportKeys("deployer"))
			}
		})
	}
}
