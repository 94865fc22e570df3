//go:build !linux

package challengezone

import "syscall"

// reusePort is a no-op where SO_REUSEPORT is not portable: a reload that
// keeps the listen addresses then needs the old server stopped first.
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
