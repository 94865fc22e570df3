package certlocker

import (
	"context"
	"fmt"

	"github.com/certlocker/caddy-certlocker/modules/inventory"
	"github.com/certlocker/caddy-certlocker/modules/issuers"
)

// provisionInventory builds the inventory service over the open store.
// Certificates are mapped to CA catalog entries by their issuer name; the
// ACME clients' custom roots come from the store.
func (a *App) provisionInventory(ctx context.Context) error {
	cfg := inventory.Config{}
	if a.Inventory != nil {
		cfg = *a.Inventory
	}
	svc, err := inventory.New(a.store, inventory.Options{Node: a.nodeID, Logger: a.logger.Named("inventory"), Config: cfg,
		MatchCA: issuers.MatchIssuer})
	if err != nil {
		return fmt.Errorf("provisioning inventory: %w", err)
	}
	a.inv = svc
	return nil
}

// Certificates returns the certificate inventory.
func (a *App) Certificates() *inventory.Service { return a.inv }
