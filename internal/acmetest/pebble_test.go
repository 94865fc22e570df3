package acmetest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond until it holds or timeout elapses. It is for state that
// has no change notification, such as goroutines exiting.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// directory fetches and decodes Pebble's ACME directory.
func directory(t *testing.T, client *http.Client, url string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("getting directory: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("directory status = %d", resp.StatusCode)
	}
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNewPebbleDirectory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		opts         PebbleOptions
		wantEAB      bool
		wantProfiles []string
		wantCAA      []any
	}{
		{name: "defaults", wantProfiles: []string{"default"}, wantCAA: []any{"pebble.letsencrypt.org"}},
		{name: "eab required", opts: PebbleOptions{RequireEAB: true}, wantEAB: true, wantProfiles: []string{"default"}, wantCAA: []any{"pebble.letsencrypt.org"}},
		{
			name: "profiles and caa",
			opts: PebbleOptions{
				Profiles: map[string]Profile{
					"classic":    {Description: "90 days"},
					"shortlived": {Description: "6 days", Validity: 6 * 24 * time.Hour},
				},
				CAAIdentities: []string{"ca.test"},
			},
			wantProfiles: []string{"classic", "shortlived"},
			wantCAA:      []any{"ca.test"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := NewPebble(t, tc.opts)
			if !strings.HasPrefix(p.DirectoryURL(), "https://127.0.0.1:") {
				t.Fatalf("DirectoryURL() = %q, want loopback https", p.DirectoryURL())
			}
			dir := directory(t, p.HTTPClient(), p.DirectoryURL())
			for _, key := range []string{"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"} {
				if u, _ := dir[key].(string); !strings.HasPrefix(u, p.URL()) {
					t.Errorf("directory[%s] = %v", key, dir[key])
				}
			}
			meta, _ := dir["meta"].(map[string]any)
			if got, _ := meta["externalAccountRequired"].(bool); got != tc.wantEAB || p.RequiresEAB() != tc.wantEAB {
				t.Errorf("externalAccountRequired = %v, RequiresEAB() = %t, want %t", meta["externalAccountRequired"], p.RequiresEAB(), tc.wantEAB)
			}
			profiles, _ := meta["profiles"].(map[string]any)
			if got := slices.Sorted(maps.Keys(profiles)); !slices.Equal(got, tc.wantProfiles) {
				t.Errorf("meta.profiles = %v, want %q", got, tc.wantProfiles)
			}
			if got := p.ProfileNames(); !slices.Equal(got, tc.wantProfiles) {
				t.Errorf("ProfileNames() = %q, want %q", got, tc.wantProfiles)
			}
			if got, _ := meta["caaIdentities"].([]any); !slices.Equal(got, tc.wantCAA) {
				t.Errorf("caaIdentities = %v, want %v", got, tc.wantCAA)
			}
		})
	}
}

func TestPebbleTLSCertPool(t *testing.T) {
	t.Parallel()
	p := NewPebble(t, PebbleOptions{})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.TLSCertPool()}}}
	t.Cleanup(client.CloseIdleConnections)
	directory(t, client, p.DirectoryURL())

	untrusting := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(untrusting.CloseIdleConnections)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.DirectoryURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := untrusting.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatal("a client without TLSCertPool trusted the server")
	}
}

func TestPebbleRoots(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		opts  PebbleOptions
		roots int
	}{
		{name: "default", roots: 1},
		{name: "alternate roots and longer chain", opts: PebbleOptions{AlternateRoots: 1, ChainLength: 2}, roots: 2},
		{name: "ecdsa", opts: PebbleOptions{KeyAlgorithm: "ecdsa"}, roots: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := NewPebble(t, tc.opts)
			roots := p.Roots()
			if len(roots) != tc.roots {
				t.Fatalf("got %d roots, want %d", len(roots), tc.roots)
			}
			for _, r := range roots {
				if !r.IsCA || r.CheckSignatureFrom(r) != nil {
					t.Errorf("root %s is not a self-signed CA", r.Subject)
				}
			}
			var decoded []*x509.Certificate
			for rest := p.RootsPEM(); ; {
				var block *pem.Block
				block, rest = pem.Decode(rest)
				if block == nil {
					break
				}
				c, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				decoded = append(decoded, c)
			}
			if len(decoded) != len(roots) || !decoded[0].Equal(roots[0]) {
				t.Fatalf("RootsPEM holds %d certificates, want the %d roots", len(decoded), len(roots))
			}
			inters := p.Intermediates()
			if len(inters) != tc.roots {
				t.Fatalf("got %d intermediates", len(inters))
			}
			if tc.opts.ChainLength <= 1 {
				// With one intermediate per chain it is signed by its root.
				if _, err := inters[0].Verify(x509.VerifyOptions{Roots: p.RootPool()}); err != nil {
					t.Fatalf("intermediate does not chain to RootPool: %v", err)
				}
			}
		})
	}
}

// field reads an unexported int, bool or string field through reflection.
func field(t *testing.T, v any, name string) any {
	t.Helper()
	f := reflect.ValueOf(v).Elem().FieldByName(name)
	if !f.IsValid() {
		t.Fatalf("no field %s in %T", name, v)
	}
	switch f.Kind() {
	case reflect.Int:
		return int(f.Int())
	case reflect.Bool:
		return f.Bool()
	case reflect.String:
		return f.String()
	}
	t.Fatalf("field %s has kind %s", name, f.Kind())
	return nil
}

// TestPebbleOptionsReachPebble checks, inside Pebble's unexported state, that
// the settings Pebble only reads from the environment arrive as configured,
// and that ambient PEBBLE_* variables neither leak in nor get clobbered. It
// uses t.Setenv and so cannot run in parallel.
func TestPebbleOptionsReachPebble(t *testing.T) {
	t.Setenv(envWFENonceReject, "42")
	t.Setenv(envVANoSleep, "")
	t.Setenv(envVAAlwaysValid, "1")
	vars := []string{envVANoSleep, envVASleepTime, envVAAlwaysValid, envWFENonceReject, envWFEAuthzReuse, envWFEOrdersPerPage}
	type envValue struct {
		value string
		set   bool
	}
	snapshot := func() map[string]envValue {
		m := make(map[string]envValue)
		for _, k := range vars {
			v, ok := os.LookupEnv(k)
			m[k] = envValue{v, ok}
		}
		return m
	}
	before := snapshot()

	tests := []struct {
		name string
		opts PebbleOptions
		want map[string]any
	}{
		{
			name: "defaults",
			want: map[string]any{
				"wfe.nonceErrPercent": 0, "wfe.authzReusePercent": 0, "wfe.ordersPerPage": 3, "wfe.requireEAB": false,
				"va.sleep": false, "va.alwaysValid": false, "va.httpPort": 5002, "va.tlsPort": 5001, "va.customResolverAddr": "",
			},
		},
		{
			name: "everything set",
			opts: PebbleOptions{
				NonceRejectPercent: 15, AuthzReusePercent: 100, OrdersPerPage: 7, RequireEAB: true,
				VASleepMax: 1500 * time.Millisecond, VAAlwaysValid: true, HTTPPort: 8080, TLSPort: 8443, DNSServer: "127.0.0.1:5353",
			},
			want: map[string]any{
				"wfe.nonceErrPercent": 15, "wfe.authzReusePercent": 100, "wfe.ordersPerPage": 7, "wfe.requireEAB": true,
				"va.sleep": true, "va.sleepTime": 2, "va.alwaysValid": true, "va.httpPort": 8080, "va.tlsPort": 8443, "va.customResolverAddr": "127.0.0.1:5353",
			},
		},
		{
			name: "reject every nonce",
			opts: PebbleOptions{NonceRejectPercent: 100},
			want: map[string]any{"wfe.nonceErrPercent": 100},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPebble(t, tc.opts)
			for key, want := range tc.want {
				obj, name, _ := strings.Cut(key, ".")
				var got any
				if obj == "wfe" {
					got = field(t, p.wfe, name)
				} else {
					got = field(t, p.va, name)
				}
				if got != want {
					t.Errorf("%s = %v, want %v", key, got, want)
				}
			}
		})
	}

	if after := snapshot(); !maps.Equal(after, before) {
		t.Errorf("environment after NewPebble = %v, want %v", after, before)
	}
}

func TestResolvePebbleOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    PebbleOptions
		wantErr string
	}{
		{name: "zero value", opts: PebbleOptions{}},
		{name: "negative nonce reject", opts: PebbleOptions{NonceRejectPercent: -1}, wantErr: "nonce reject"},
		{name: "authz reuse over 100", opts: PebbleOptions{AuthzReusePercent: 101}, wantErr: "authz reuse"},
		{name: "bad key algorithm", opts: PebbleOptions{KeyAlgorithm: "dsa"}, wantErr: "key algorithm"},
		{name: "bad http port", opts: PebbleOptions{HTTPPort: 70000}, wantErr: "http port"},
		{name: "negative chain length", opts: PebbleOptions{ChainLength: -1}, wantErr: "chain length"},
		{name: "empty profile name", opts: PebbleOptions{Profiles: map[string]Profile{"": {}}}, wantErr: "profile"},
		{name: "negative sleep", opts: PebbleOptions{VASleepMax: -time.Second}, wantErr: "va sleep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolvePebbleOptions(tc.opts)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.HTTPPort != 5002 || got.TLSPort != 5001 || got.KeyAlgorithm != "rsa" || got.ChainLength != 1 || len(got.Profiles) != 1 {
					t.Fatalf("defaults not applied: %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// TestCleanupStopsGoroutines starts every harness component in a subtest and
// checks that none of their goroutines survive its cleanup. It must not run
// in parallel with tests that start components.
func TestCleanupStopsGoroutines(t *testing.T) {
	markers := []string{
		"pebble/v2/va.VAImpl.processTasks",
		"miekg/dns.(*Server).serveUDP",
		"miekg/dns.(*Server).serveTCP",
		"net/http/httptest.(*Server).goServe",
	}
	leaked := func() []string {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var found []string
		for _, m := range markers {
			if strings.Contains(stacks, m) {
				found = append(found, m)
			}
		}
		return found
	}
	waitFor(t, 10*time.Second, "goroutines of earlier tests to exit", func() bool { return len(leaked()) == 0 })

	t.Run("start everything", func(t *testing.T) {
		d := NewDNSServer(t, "example.test")
		c := NewCloudflare(t, d)
		p := NewPebble(t, PebbleOptions{DNSServer: d.Addr()})
		directory(t, p.HTTPClient(), p.DirectoryURL())
		c.AddToken("t", PermZoneRead(AllZones))
		cfCall(t, c, "GET", "/zones", bearer("t"), nil)
		if got := leaked(); len(got) != len(markers) {
			t.Fatalf("running components show goroutines %q, want all of %q", got, markers)
		}
	})

	waitFor(t, 10*time.Second, "harness goroutines to exit", func() bool { return len(leaked()) == 0 })
}
