// Package e2e runs the certlocker binary as operators do: it builds the
// binary once per test process and starts nodes with their own data
// directories on loopback ports.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/certlocker once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "certlocker-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "certlocker")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/certlocker")
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building certlocker: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Node is one certlocker process.
type Node struct {
	t       testing.TB
	Dir     string // HOME and XDG dirs live here
	Admin   string // admin listen address
	Env     []string
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	waitErr error
}

// NewNode prepares a node with its own data directory (not started).
func NewNode(t testing.TB, dir string) *Node {
	return &Node{t: t, Dir: dir, Admin: FreeAddr(t)}
}

// DataDir is Caddy's data directory for the node.
func (n *Node) DataDir() string { return filepath.Join(n.Dir, "data", "caddy") }

// Config returns a JSON config with the node's admin address and the given
// certlocker app config.
func (n *Node) Config(app string) string {
	return fmt.Sprintf(`{"admin":{"listen":%q},"apps":{"certlocker":%s}}`, n.Admin, app)
}

// Command runs the binary with the node's environment.
func (n *Node) Command(args ...string) *exec.Cmd {
	cmd := exec.Command(Binary(n.t), args...)
	cmd.Env = append(os.Environ(),
		"HOME="+n.Dir,
		"XDG_DATA_HOME="+filepath.Join(n.Dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(n.Dir, "config"),
		"CERTLOCKER_ENCRYPTION_KEY=", "CERTLOCKER_NODE_ID=",
	)
	cmd.Env = append(cmd.Env, n.Env...)
	return cmd
}

// Start writes config to a file and runs `certlocker run --config` on it,
// waiting until /certlocker/health answers 200 or the process exits.
func (n *Node) Start(config string) error {
	n.t.Helper()
	cfgPath := filepath.Join(n.Dir, "caddy.json")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		n.t.Fatal(err)
	}
	n.cmd = n.Command("run", "--config", cfgPath)
	n.logs = &syncBuffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.exited)
	}()
	n.t.Cleanup(func() { n.Stop() })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			return fmt.Errorf("certlocker exited: %v\n%s", n.waitErr, n.logs.String())
		default:
		}
		// the admin endpoint comes up before the apps load: wait for the
		// certlocker app itself to answer
		if resp, err := http.Get("http://" + n.Admin + "/certlocker/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-n.exited:
		case <-time.After(50 * time.Millisecond): // poll interval while the process starts
		}
	}
	return fmt.Errorf("certlocker did not answer on %s within 60s\n%s", n.Admin, n.logs.String())
}

// Stop interrupts the process and waits for it to exit.
func (n *Node) Stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// Exited waits for the process to exit on its own and returns its logs.
func (n *Node) Exited(timeout time.Duration) (string, error) {
	select {
	case <-n.exited:
		return n.logs.String(), n.waitErr
	case <-time.After(timeout):
		return n.logs.String(), errors.New("still running")
	}
}

// Logs returns what the process printed so far.
func (n *Node) Logs() string { return n.logs.String() }

// Do sends an admin API request and decodes a JSON response into out
// (if not nil), returning the status code.
func (n *Node) Do(method, path string, body any, out any) (int, []byte) {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			js, _ := json.Marshal(b)
			rd = bytes.NewReader(js)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+n.Admin+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			n.t.Fatalf("%s %s: decoding %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, b
}

// FreeAddr returns a loopback address with a port free at the time of the
// call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
