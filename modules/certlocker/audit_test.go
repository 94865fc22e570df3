package certlocker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/pflag"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Config sync and the command line are audited as their own actors: the
// declared resources a config syncs as "config", a sync that fails as a
// failed config.sync, the rekey command as "cli" from "local".
func TestConfigSyncAndCLIAudited(t *testing.T) {
	r := newRunning(t)
	issDecl := `"issuers":[{"name":"clash","directory_url":"https://ca.example.test/directory","group":"team-a"}]`
	// an ACME client of the same name made through the API: the config
	// cannot take it over, so its sync fails
	first := r.mustLoad(`"certlocker":` + r.app(""))
	if err := first.Store().Issuers().Create(t.Context(), &storage.Issuer{Name: "clash", DirectoryURL: "https://ca.example.test/directory",
		ManagedBy: storage.ManagedByAPI}); err != nil {
		t.Fatal(err)
	}
	err := r.load(`"certlocker":` + r.app(issDecl))
	if err == nil || !strings.Contains(err.Error(), "managed through the API") {
		t.Fatalf("the clashing config loaded: %v", err)
	}
	app := Current()
	failed, _, err := app.AuditLog(t.Context(), storage.AuditFilter{Action: "config.sync"}, storage.Page{})
	if err != nil || len(failed) != 1 || failed[0].Actor != storage.ActorConfig || failed[0].Result != storage.AuditFailed ||
		!strings.Contains(string(failed[0].Details), "managed through the API") {
		t.Fatalf("the failed sync's audit: %+v %v", failed, err)
	}
	// renamed, the declaration syncs: its entry is the config's, in its group
	if err := r.load(`"certlocker":` + r.app(strings.Replace(issDecl, `"clash"`, `"declared"`, 1))); err != nil {
		t.Fatal(err)
	}
	app = Current()
	created, _, err := app.AuditLog(t.Context(), storage.AuditFilter{Action: "issuer.create", Actor: storage.ActorConfig}, storage.Page{})
	if err != nil || len(created) != 1 || created[0].Group != "team-a" || created[0].Result != storage.AuditOK {
		t.Fatalf("the synced issuer's audit: %+v %v", created, err)
	}

	// the rekey command, on the same database (the running node keeps it open)
	cfgFile := filepath.Join(r.dir, "config.json")
	if err := os.WriteFile(cfgFile, []byte(`{"apps":{"certlocker":`+r.app("")+`}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("rekey", pflag.ContinueOnError)
	fs.String("config", cfgFile, "")
	fs.String("adapter", "", "")
	if code, err := cmdRekey(caddycmd.Flags{FlagSet: fs}); err != nil || code != 0 {
		t.Fatalf("rekey: %d %v", code, err)
	}
	rekeys, _, err := app.AuditLog(t.Context(), storage.AuditFilter{Action: "storage.rekey"}, storage.Page{})
	if err != nil || len(rekeys) != 1 || rekeys[0].Actor != storage.ActorCLI || rekeys[0].Source != "local" || rekeys[0].Result != storage.AuditOK {
		t.Fatalf("the rekey command's audit: %+v %v", rekeys, err)
	}
}
