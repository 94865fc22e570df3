// Command xcaddybuild builds the certlocker binary with xcaddy from the
// manifest xcaddy.json: the Caddy version, CertLocker, and the DNS provider
// plugins we ship. Run it from the repository root:
//
//	go run ./internal/xcaddybuild          # build dist/certlocker
//	go run ./internal/xcaddybuild -print   # only print the xcaddy command
//
// It runs xcaddy from PATH if present, else the pinned xcaddy_version
// through `go run`. To ship another DNS plugin (e.g. Route 53), add it to
// xcaddy.json and to cmd/certlocker/main.go; TestManifestMatchesGoMod keeps
// the two builds in step.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

func main() {
	path := flag.String("manifest", "xcaddy.json", "build manifest")
	printOnly := flag.Bool("print", false, "print the command instead of running it")
	flag.Parse()
	m, err := Load(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xcaddybuild:", err)
		os.Exit(1)
	}
	args := m.Args()
	name := "xcaddy"
	if _, err := exec.LookPath("xcaddy"); err != nil {
		name = "go"
		args = append([]string{"run", "github.com/caddyserver/xcaddy/cmd/xcaddy@" + m.XcaddyVersion}, args...)
	}
	if *printOnly {
		fmt.Println(name, strings.Join(args, " "))
		return
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "xcaddybuild:", err)
		os.Exit(1)
	}
}
