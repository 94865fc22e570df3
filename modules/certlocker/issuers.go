package certlocker

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/issuers"
)

// IssuerRegistry returns the issuer registry: ACME clients and the CA catalog.
func (a *App) IssuerRegistry() *issuers.Service { return a.issuers }

// provisionIssuers builds the issuer registry on the app's store and
// validates the config-declared issuers, without writing them: they are
// synced when the config starts (see syncDeclared). Their EAB MAC keys
// must be placeholders, expanded here. Accounts are registered on first
// use, so a CA that is down does not stop the config from loading.
func (a *App) provisionIssuers(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	specs := make([]issuers.Spec, 0, len(a.Issuers))
	for _, c := range a.Issuers {
		s, err := c.Spec(repl)
		if err != nil {
			return err
		}
		specs = append(specs, s)
	}
	a.issuers = issuers.New(a.store, issuers.WithLogger(a.logger.Named("issuers")), issuers.WithNode(a.nodeID),
		issuers.WithUserAgent("CertLocker/"+Version()))
	d, err := a.issuers.Declare(specs)
	if err != nil {
		return err
	}
	a.declaredIssuers = d
	return nil
}
