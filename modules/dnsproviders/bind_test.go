package dnsproviders

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/internal/retry"
)

// bindServer is a real BIND 9 (Debian package bind9) started for one test:
// primary for one zone on a loopback high port, taking dynamic updates
// signed with one TSIG key. A second key is known to it but not allowed to
// update.
type bindServer struct {
	Addr      string
	Zone      string
	KeyName   string
	Key       string // base64
	OtherName string
	OtherKey  string
}

// startBIND starts named for zone. It skips the test when named is not
// installed, except in CI (CI=true), where .ci/run installs it.
func startBIND(t *testing.T, zone string) *bindServer {
	t.Helper()
	named, err := exec.LookPath("named")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/named"); err2 == nil {
			named = "/usr/sbin/named"
		} else if os.Getenv("CI") == "true" {
			t.Fatal("named is not installed; .ci/run installs the Debian package bind9")
		} else {
			t.Skip("named is not installed: apt-get install bind9 to run the RFC 2136 tests against a real BIND")
		}
	}
	b := &bindServer{Zone: zone, KeyName: "certlocker-test.", Key: randomKey(), OtherName: "other-key.", OtherKey: randomKey()}
	var lastErr error
	for range 5 { // a port picked free may be taken before named binds it
		if lastErr = b.start(t, named); lastErr == nil {
			return b
		}
	}
	t.Fatalf("starting named: %v", lastErr)
	return nil
}

func randomKey() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// freePort returns a loopback port free for UDP and TCP at the moment.
func freePort() (int, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port")
}

func (b *bindServer) start(t *testing.T, named string) error {
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		return err
	}
	b.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`options {
	directory %[1]q;
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	pid-file %[3]q;
	session-keyfile %[4]q;
	managed-keys-directory %[1]q;
	recursion no;
	dnssec-validation no;
	notify no;
};
controls { };
key %[5]q { algorithm hmac-sha256; secret %[6]q; };
key %[7]q { algorithm hmac-sha256; secret %[8]q; };
zone %[9]q {
	type primary;
	file %[10]q;
	allow-update { key %[5]q; };
};
`, dir, port, filepath.Join(dir, "named.pid"), filepath.Join(dir, "session.key"),
		b.KeyName, b.Key, b.OtherName, b.OtherKey, b.Zone, filepath.Join(dir, "zone.db"))
	zoneFile := fmt.Sprintf(`$TTL 60
@	IN SOA ns1.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 0
@	IN NS ns1.%[1]s.
ns1	IN A 127.0.0.1
`, b.Zone)
	if err := os.WriteFile(filepath.Join(dir, "named.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "zone.db"), []byte(zoneFile), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(named, "-g", "-4", "-c", filepath.Join(dir, "named.conf"))
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	// ready when it answers the zone's SOA over TCP (poll with a deadline)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for wait := 10 * time.Millisecond; ; wait = min(wait*2, 200*time.Millisecond) {
		select {
		case err := <-exited:
			return fmt.Errorf("named exited (%v):\n%s", err, out.String())
		default:
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(b.Zone), dns.TypeSOA)
		c := &dns.Client{Net: "tcp", Timeout: time.Second}
		if in, _, err := c.ExchangeContext(ctx, m, b.Addr); err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) > 0 {
			break
		}
		if err := retry.Sleep(ctx, wait); err != nil {
			stop()
			return fmt.Errorf("named did not answer within 20s:\n%s", out.String())
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("named output:\n%s", out.String())
		}
	})
	return nil
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
