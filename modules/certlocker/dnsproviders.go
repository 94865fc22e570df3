package certlocker

import (
	"context"

	"github.com/caddyserver/caddy/v2"

	"github.com/certlocker/caddy-certlocker/modules/dnsproviders"
)

// DNS returns the DNS provider store: provider clients, their
// verification, and the challenge records they publish.
func (a *App) DNS() *dnsproviders.Service { return a.dns }

// provisionDNSProviders builds the DNS provider store on the app's store
// and validates the config-declared provider clients (their credentials
// must be placeholders, expanded here), without writing them: they are
// synced when the config starts (see syncDeclared).
func (a *App) provisionDNSProviders(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	cfgs := make([]dnsproviders.Config, 0, len(a.DNSProviders))
	for i, c := range a.DNSProviders {
		e, err := dnsproviders.ExpandConfig(repl, c, i)
		if err != nil {
			return err
		}
		cfgs = append(cfgs, e)
	}
	a.dns = dnsproviders.New(a.store, dnsproviders.Options{Context: ctx, Logger: a.logger.Named("dns"), Node: a.nodeID})
	d, err := a.dns.Declare(cfgs)
	if err != nil {
		return err
	}
	a.declaredDNS = d
	return nil
}

// runJanitor removes stale challenge records for as long as this config
// runs.
func (a *App) runJanitor(ctx context.Context) {
	a.dns.RunJanitor(ctx, dnsproviders.DefaultJanitorDelay, dnsproviders.DefaultJanitorEvery, dnsproviders.DefaultJanitorAge)
}
