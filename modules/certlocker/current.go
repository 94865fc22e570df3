package certlocker

import "sync/atomic"

// current is the running app: set when a config's app starts, cleared
// when it stops. The admin API and HTTP handlers read it instead of
// looking the app up in a config that may still be loading.
var current atomic.Pointer[App]

// Current returns the running certlocker app, or nil while none runs.
func Current() *App { return current.Load() }
