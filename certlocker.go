// Package certlocker is CertLocker for Caddy: a set of Caddy v2 modules that
// run ACME certificate issuance as an operational workflow across many CAs,
// keep an inventory of issued certificates, and hand each certificate to
// edge systems through a scoped certificate token over CertLocker's own ACME
// directory.
//
// Importing this package plugs every CertLocker module into Caddy, so
// `xcaddy build --with github.com/certlocker/caddy-certlocker` and
// `go build ./cmd/certlocker` give the same set of modules.
package certlocker

import (
	// every CertLocker module, Caddyfile option and command;
	// TestRootImportsEveryModule keeps this list whole
	_ "github.com/certlocker/caddy-certlocker/admin"
	_ "github.com/certlocker/caddy-certlocker/caddyfile"
	_ "github.com/certlocker/caddy-certlocker/modules/certlocker"
	_ "github.com/certlocker/caddy-certlocker/modules/challengezone"
	_ "github.com/certlocker/caddy-certlocker/modules/gateway"
	_ "github.com/certlocker/caddy-certlocker/modules/notify"
	_ "github.com/certlocker/caddy-certlocker/modules/workflow"
)
