package main_test

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/e2e"
	"github.com/certlocker/caddy-certlocker/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	e2e.Cleanup()
	os.Exit(code)
}

func TestListModules(t *testing.T) {
	n := e2e.NewNode(t, t.TempDir())
	out, err := n.Command("list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	mods := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		mods[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{"certlocker", "admin.api.certlocker", "dns.providers.cloudflare", "http.handlers.reverse_proxy"} {
		if !mods[want] {
			t.Errorf("list-modules lacks %s", want)
		}
	}
	ver, err := n.Command("version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(ver), "CertLocker ") || !strings.Contains(string(ver), "Caddy v2.") {
		t.Fatalf("version = %q, %v", ver, err)
	}
}

type health struct {
	Status        string `json:"status"`
	Backend       string `json:"backend"`
	SchemaVersion int    `json:"schema_version"`
	NodeID        string `json:"node_id"`
	KeyID         string `json:"key_id"`
	Error         string `json:"error"`
}

type auditList struct {
	Items []struct {
		Action string `json:"action"`
		Node   string `json:"node"`
		Target string `json:"target"`
	} `json:"items"`
}

// The first-run path of the README: an empty certlocker app on SQLite.
func TestRunSQLiteAndRestart(t *testing.T) {
	n := e2e.NewNode(t, t.TempDir())
	if err := n.Start(n.Config(`{}`)); err != nil {
		t.Fatal(err)
	}
	var h health
	if code, body := n.Do("GET", "/certlocker/health", nil, &h); code != http.StatusOK {
		t.Fatalf("health = %d %s", code, body)
	}
	if h.Status != "ok" || h.Backend != "sqlite" || h.SchemaVersion < 1 || h.NodeID == "" || h.KeyID == "" {
		t.Fatalf("health = %+v", h)
	}
	db := filepath.Join(n.DataDir(), "certlocker", "certlocker.db")
	keyFile := filepath.Join(n.DataDir(), "certlocker", "certlocker.key")
	for _, f := range []string{db, keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatalf("expected %s: %v", f, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if !strings.Contains(n.Logs(), "generated an encryption key file") {
		t.Error("no warning about the generated key file in the log")
	}
	key, _ := os.ReadFile(keyFile)
	_, cfg := n.Do("GET", "/config/", nil, nil)
	if strings.Contains(string(cfg), strings.TrimSpace(string(key))) {
		t.Fatal("GET /config/ shows the encryption key")
	}
	if strings.Contains(n.Logs(), strings.TrimSpace(string(key))) {
		t.Fatal("the log shows the encryption key")
	}

	// the API's JSON errors
	errCases := map[string]struct {
		method, path string
		status       int
		field        string
	}{
		"unknown endpoint": {"GET", "/certlocker/nope", http.StatusNotFound, ""},
		"wrong method":     {"DELETE", "/certlocker/health", http.StatusMethodNotAllowed, ""},
		"bad limit":        {"GET", "/certlocker/audit?limit=0", http.StatusBadRequest, "limit"},
		"bad cursor":       {"GET", "/certlocker/audit?cursor=zzz", http.StatusBadRequest, "cursor"},
		"bad since":        {"GET", "/certlocker/audit?since=yesterday", http.StatusBadRequest, "since"},
	}
	for name, c := range errCases {
		t.Run(name, func(t *testing.T) {
			var e struct{ Error, Field string }
			code, body := n.Do(c.method, c.path, nil, &e)
			if code != c.status || e.Error == "" || e.Field != c.field {
				t.Fatalf("%s %s = %d %s; want %d with field %q", c.method, c.path, code, body, c.status, c.field)
			}
		})
	}

	// restart: same node, same data
	n.Stop()
	n2 := e2e.NewNode(t, n.Dir)
	if err := n2.Start(n2.Config(`{}`)); err != nil {
		t.Fatal(err)
	}
	var h2 health
	n2.Do("GET", "/certlocker/health", nil, &h2)
	if h2.NodeID != h.NodeID || h2.KeyID != h.KeyID {
		t.Fatalf("after restart node %s key %s, before node %s key %s", h2.NodeID, h2.KeyID, h.NodeID, h.KeyID)
	}
	var audit auditList
	n2.Do("GET", "/certlocker/audit?action=node.start", nil, &audit)
	if len(audit.Items) != 2 || audit.Items[0].Node != h.NodeID {
		t.Fatalf("node.start entries after a restart = %+v, want 2", audit.Items)
	}

	// a config reload reuses the open store: no new node.start
	if code, body := n2.Do("POST", "/load", n2.Config(`{"node_id":"`+h.NodeID+`"}`), nil); code != http.StatusOK {
		t.Fatalf("reload = %d %s", code, body)
	}
	n2.Do("GET", "/certlocker/audit?action=node.start", nil, &audit)
	if len(audit.Items) != 2 {
		t.Fatalf("a reload recorded a node start: %+v", audit.Items)
	}
}

func newKey(t *testing.T) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Key rotation end to end: a new key with the old one as previous, rekey,
// then the old key alone no longer opens the database.
func TestRekeyCommand(t *testing.T) {
	dir := t.TempDir()
	keyA, keyB := newKey(t), newKey(t)
	n := e2e.NewNode(t, dir)
	n.Env = []string{"KEY_A=" + keyA, "KEY_B=" + keyB}
	if err := n.Start(n.Config(`{"encryption_key":"{env.KEY_A}"}`)); err != nil {
		t.Fatal(err)
	}
	var before health
	n.Do("GET", "/certlocker/health", nil, &before)
	n.Stop()

	cfg := filepath.Join(dir, "rotate.json")
	os.WriteFile(cfg, []byte(n.Config(`{"encryption_key":"{env.KEY_B}","previous_encryption_keys":["{env.KEY_A}"]}`)), 0o600)
	out, err := n.Command("rekey", "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "re-sealed") {
		t.Fatalf("rekey: %v\n%s", err, out)
	}
	if strings.Contains(string(out), keyA) || strings.Contains(string(out), keyB) {
		t.Fatal("rekey printed a key")
	}

	nb := e2e.NewNode(t, dir)
	nb.Env = n.Env
	if err := nb.Start(nb.Config(`{"encryption_key":"{env.KEY_B}"}`)); err != nil {
		t.Fatalf("the new key alone does not open the database: %v", err)
	}
	var after health
	nb.Do("GET", "/certlocker/health", nil, &after)
	if after.KeyID == before.KeyID || after.Status != "ok" {
		t.Fatalf("key id before %s after %s", before.KeyID, after.KeyID)
	}
	var audit auditList
	nb.Do("GET", "/certlocker/audit?action=storage.rekey", nil, &audit)
	if len(audit.Items) != 1 {
		t.Fatalf("rekey audit entries = %+v", audit.Items)
	}
	nb.Stop()

	na := e2e.NewNode(t, dir)
	na.Env = n.Env
	err = na.Start(na.Config(`{"encryption_key":"{env.KEY_A}"}`))
	if err == nil || !strings.Contains(err.Error(), "not among the configured keys") {
		t.Fatalf("the retired key still opens the database, or the error is unclear: %v", err)
	}
}

// Configs that must not start, each with an error naming the problem.
func TestBadConfigRefused(t *testing.T) {
	cases := map[string]struct{ app, want string }{
		"literal key":          {`{"encryption_key":"` + strings.Repeat("ab", 32) + `"}`, "must be a placeholder"},
		"empty key env":        {`{"encryption_key":"{env.CERTLOCKER_TEST_UNSET_KEY}"}`, "encryption_key"},
		"partly literal key":   {`{"encryption_key":"abcd{env.SHORT_KEY}"}`, "must be a placeholder"},
		"short key":            {`{"encryption_key":"{env.SHORT_KEY}"}`, "decodes to 4 bytes"},
		"unknown backend":      {`{"storage":{"backend":"mysql"}}`, `is not supported: use`},
		"postgres without dsn": {`{"storage":{"backend":"postgres"}}`, "storage.dsn is required"},
		"password in dsn":      {`{"storage":{"backend":"postgres","dsn":"postgres://u:pw@127.0.0.1/x"}}`, "password in clear"},
		"unknown field":        {`{"storag":{}}`, "unknown field"},
		"bad node id":          {`{"node_id":"has spaces"}`, "node_id"},
		"unreachable postgres": {`{"storage":{"backend":"postgres","dsn":"{env.BAD_DSN}"}}`, "cannot reach the server"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n := e2e.NewNode(t, t.TempDir())
			n.Env = []string{"SHORT_KEY=AAAAAA==", "BAD_DSN=postgres://certlocker:pw-secret@127.0.0.1:1/x?connect_timeout=2"}
			err := n.Start(n.Config(c.app))
			if err == nil {
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not say %q:\n%v", c.want, err)
			}
			if strings.Contains(err.Error(), "pw-secret") {
				t.Fatal("the error shows the DSN's password")
			}
		})
	}
}

// A node on PostgreSQL with the DSN from the environment.
func TestRunPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	key := newKey(t)
	cfgApp := `{"storage":{"backend":"postgres","dsn":"{env.CERTLOCKER_DSN}"},"encryption_key":"{env.CERTLOCKER_KEY}"}`
	var ids []string
	for i := 0; i < 2; i++ {
		n := e2e.NewNode(t, t.TempDir())
		n.Env = []string{"CERTLOCKER_DSN=" + dsn, "CERTLOCKER_KEY=" + key}
		if err := n.Start(n.Config(cfgApp)); err != nil {
			t.Fatal(err)
		}
		var h health
		if code, body := n.Do("GET", "/certlocker/health", nil, &h); code != 200 || h.Backend != "postgres" {
			t.Fatalf("health = %d %s", code, body)
		}
		_, cfg := n.Do("GET", "/config/", nil, nil)
		if strings.Contains(string(cfg), key) || strings.Contains(string(cfg), "127.0.0.1:5432") {
			t.Fatalf("GET /config/ shows the key or DSN: %s", cfg)
		}
		ids = append(ids, h.NodeID)
	}
	if ids[0] == ids[1] {
		t.Fatal("two nodes got the same node id")
	}
	// both nodes wrote to the one database
	n := e2e.NewNode(t, t.TempDir())
	n.Env = []string{"CERTLOCKER_DSN=" + dsn, "CERTLOCKER_KEY=" + key}
	if err := n.Start(n.Config(cfgApp)); err != nil {
		t.Fatal(err)
	}
	var audit auditList
	n.Do("GET", "/certlocker/audit?action=node.start", nil, &audit)
	if len(audit.Items) != 3 {
		t.Fatalf("node.start entries = %d, want 3", len(audit.Items))
	}
}
