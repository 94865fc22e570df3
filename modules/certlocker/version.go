package certlocker

import (
	"runtime/debug"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// ModulePath is CertLocker's Go module path.
const ModulePath = "github.com/certlocker/caddy-certlocker"

var version = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if bi.Main.Path == ModulePath {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == ModulePath {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
})

// Version returns CertLocker's module version as built ("(devel)" for a
// build from a checkout).
func Version() string { return version() }

// CaddyVersion is the version of the Caddy module in the binary.
func CaddyVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/caddyserver/caddy/v2" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func init() {
	// `certlocker version` (and `caddy version` of any build with
	// CertLocker in it, xcaddy's included) names CertLocker first
	if caddy.CustomVersion == "" {
		caddy.CustomVersion = "CertLocker " + Version() + " (Caddy " + CaddyVersion() + ")"
	}
}
