package certlocker

import (
	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

// Tokens returns the certificate token service. It holds no state of its
// own beyond the store, so every node and every config sees the same tokens.
func (a *App) Tokens() *gateway.Service {
	return gateway.NewService(a.store, a.nodeID, a.logger.Named("gateway"), nil)
}
