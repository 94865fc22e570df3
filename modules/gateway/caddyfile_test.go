package gateway_test

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/certlocker/caddy-certlocker/modules/gateway"
)

func TestHandlerCaddyfile(t *testing.T) {
	var h gateway.Handler
	d := caddyfile.NewTestDispenser(`certlocker_acme {
		finalize_wait 20s
		duplicate_limit -1
		warm_every 30s
	}`)
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.FinalizeWait != caddy.Duration(20*time.Second) || h.DuplicateLimit != -1 || h.WarmEvery != caddy.Duration(30*time.Second) {
		t.Fatalf("parsed %+v", h)
	}
	var bad gateway.Handler
	if err := bad.UnmarshalCaddyfile(caddyfile.NewTestDispenser("certlocker_acme {\n warm_every soon\n}")); err == nil {
		t.Fatal("warm_every soon parsed")
	}
}
