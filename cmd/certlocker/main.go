// Command certlocker is Caddy with the standard modules, the DNS provider
// plugins listed in xcaddy.json, and every CertLocker module.
package main

import (
	"fmt"
	"runtime/debug"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-dns/cloudflare"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/certlocker/caddy-certlocker"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
)

func main() {
	caddy.CustomVersion = fmt.Sprintf("CertLocker %s (Caddy %s)", certlocker.Version(), caddyVersion())
	caddycmd.Main()
}

// caddyVersion is the version of the Caddy module this binary was built with.
func caddyVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/caddyserver/caddy/v2" {
				return d.Version
			}
		}
	}
	return "unknown"
}
