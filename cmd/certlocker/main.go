// Command certlocker is Caddy with the standard modules, the DNS provider
// plugins listed in xcaddy.json, and every CertLocker module (which also
// makes `certlocker version` name CertLocker).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-dns/cloudflare"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/certlocker/caddy-certlocker"
)

func main() {
	caddycmd.Main()
}
