package acmetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// NeedProgram returns the path of an outside program a test drives (an
// edge ACME client such as certbot or lego), installed from the Debian
// package pkg. Where it is missing the test is skipped with a clear
// message, except under CI=true, where .ci/run installs it and the test
// fails instead.
func NeedProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed: .ci/run installs it (apt-get install %s)", name, pkg)
		}
		t.Skipf("%s is not installed (apt-get install %s); skipping the test that drives it", name, pkg)
	}
	return p
}

// RunProgram runs name with args to completion, bounded to three minutes,
// with env added to this process's environment, and returns its combined
// output; it fails the test with that output when the program fails.
func RunProgram(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		// the subcommand only: other arguments may be credentials
		sub := ""
		if len(args) > 0 {
			sub = " " + args[0]
		}
		t.Fatalf("%s%s: %v\n%s", filepath.Base(name), sub, err, out)
	}
	return string(out)
}
