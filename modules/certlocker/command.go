package certlocker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "rekey",
		Usage: "--config <path> [--adapter <name>]",
		Short: "Re-seals every CertLocker secret with the current encryption key",
		Long: `
Re-seals every secret CertLocker keeps (ACME account keys, EAB MAC keys,
DNS provider credentials, certificate private keys, token secrets, the
gateway's state) with the current encryption key.

To rotate the key: set the new key as encryption_key, list the old one in
previous_encryption_keys, reload or restart, run this command (or
POST /certlocker/actions/rekey on a running node), then remove the old key.
It is safe to run while nodes are serving.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().StringP("config", "c", "", "Configuration file holding the certlocker app")
			cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdRekey)
		},
	})
}

func cmdRekey(fl caddycmd.Flags) (int, error) {
	cfgJSON, _, _, err := caddycmd.LoadConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if len(cfgJSON) > 0 {
		if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding config: %v", err)
		}
	}
	raw, ok := cfg.Apps["certlocker"]
	if !ok {
		raw = json.RawMessage(`{}`)
	}
	ctx, err := caddy.ProvisionContext(&caddy.Config{AppsRaw: caddy.ModuleMap{"certlocker": raw}})
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("opening CertLocker storage: %v", err)
	}
	v, err := ctx.App("certlocker")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	app := v.(*App)
	defer app.Cleanup()
	// audited as the command line, from this machine
	n, err := app.Rekey(storage.WithAuditSource(context.Background(), "local"), storage.ActorCLI)
	if err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	h, _ := app.Health(context.Background())
	fmt.Fprintf(os.Stdout, "re-sealed %d secrets with encryption key %s\n", n, h.KeyID)
	return caddy.ExitCodeSuccess, nil
}
