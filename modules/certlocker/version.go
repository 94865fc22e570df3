package certlocker

import (
	"runtime/debug"
	"sync"
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
