package admin

import (
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/storage"
)

// tcpProxy forwards connections to a backend until Break, which closes
// the listener and every connection: the network to the database fails
// under a running store.
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newTCPProxy(t *testing.T, backend string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln}
	t.Cleanup(p.Break)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) Break() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestInternalErrorsAreNotEchoed breaks the network to a real PostgreSQL
// store under a running app: the driver's errors (which name the database
// host, user and SQL) go to the node's log with an error ID, and the client
// gets a generic 500 naming only that ID.
func TestInternalErrorsAreNotEchoed(t *testing.T) {
	key, _ := storage.NewKey()
	t.Setenv("CERTLOCKER_ENCRYPTION_KEY", hex.EncodeToString(key))
	dsn := pgtest.DSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.Addr()
	api, _ := testAPI(t, mustJSON(map[string]any{"storage": map[string]any{"backend": "postgres", "dsn": u.String()},
		"node_id": "n1"}))
	core, logs := observer.New(zapcore.DebugLevel)
	api.logger = zap.New(core)
	if r := call(t, api, http.MethodGet, "/certlocker/workflows", ""); r.status != 200 {
		t.Fatalf("before the break: %d %s", r.status, r.body)
	}
	proxy.Break()

	idRe := regexp.MustCompile(`internal error \(id ([0-9a-f]{8})\); see the node's log`)
	for path, status := range map[string]int{"/certlocker/workflows": 500, "/certlocker/workflows/wf_x": 500,
		"/certlocker/audit": 500, "/certlocker/issuers": 500, "/certlocker/dns-providers": 500, "/certlocker/certificates": 500,
		"/certlocker/health": 503} {
		t.Run(path, func(t *testing.T) {
			before := logs.Len()
			r := call(t, api, http.MethodGet, path, "")
			if r.status != status {
				t.Fatalf("%d %s, want %d", r.status, r.body, status)
			}
			msg, _ := r.json["error"].(string)
			m := idRe.FindStringSubmatch(msg)
			if m == nil || (status == 500 && len(r.json) != 1) {
				t.Fatalf("response %s is not a generic error with an ID", r.body)
			}
			entries := logs.All()[before:]
			var logged []observer.LoggedEntry
			for _, e := range entries {
				if e.ContextMap()["error_id"] == m[1] {
					logged = append(logged, e)
				}
			}
			if len(logged) != 1 || logged[0].Level != zapcore.ErrorLevel {
				t.Fatalf("%d log entries carry error_id %s (of %d new): %v", len(logged), m[1], len(entries), entries)
			}
			errText, _ := logged[0].ContextMap()["error"].(string)
			if errText == "" {
				t.Fatalf("the log entry has no error: %v", logged[0].ContextMap())
			}
			if strings.Contains(r.body, errText) || strings.Contains(r.body, proxy.Addr()) || strings.Contains(r.body, "user=") {
				t.Fatalf("the response %s echoes the driver's error %q", r.body, errText)
			}
			t.Logf("logged: %s", errText)
		})
	}
}
