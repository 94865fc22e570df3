package dnsproviders

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// verifyProbeLabel is the name of the TXT record Verify publishes and
// removes in each zone to prove the credentials can edit it.
const verifyProbeLabel = "_certlocker-verify"

// maxVerifyPropagation bounds the propagation part of a verification.
const maxVerifyPropagation = 30 * time.Second

// Check is one step of a verification.
type Check struct {
	Name    string `json:"name"`
	Zone    string `json:"zone,omitempty"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// Verification is what Verify found, check by check.
type Verification struct {
	OK bool `json:"ok"`
	// Message is the first failure, or a summary when all checks passed.
	Message  string    `json:"message"`
	Checks   []Check   `json:"checks"`
	At       time.Time `json:"at"`
	Duration string    `json:"duration"`
}

func (v *Verification) add(c Check) {
	v.Checks = append(v.Checks, c)
	if !c.OK && v.Message == "" {
		v.Message = c.Message
	}
}

// Verify checks that the provider client can do its job in every zone:
// for Cloudflare, that the API token (and zone token) are active, that each
// zone is found (in the configured account) and its records readable; for
// every type, that a TXT record can be published and removed in each zone
// (a probe named _certlocker-verify, stored before it is published like any
// challenge record), that the zone's authoritative nameservers are found,
// and that they all serve the probe. The result is stored on the provider
// client (status verified or failed, last message, verification) and
// audited. A failed verification is a result, not an error; errors are
// for a provider client that cannot be read or updated.
func (s *Service) Verify(ctx context.Context, actor, id string) (*Verification, *storage.DNSProvider, error) {
	p, err := s.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	v := &Verification{At: s.now()}
	lp, err := s.live(p)
	if err != nil {
		v.add(Check{Name: "credentials", OK: false, Message: err.Error()})
	} else {
		s.verify(ctx, p, lp, v)
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	v.OK = v.Message == ""
	if v.OK {
		v.Message = fmt.Sprintf("can publish and remove challenge records in %s", strings.Join(p.Zones, ", "))
	}
	v.Duration = time.Since(start).Round(time.Millisecond).String()
	vb, _ := json.Marshal(v)

	var out *storage.DNSProvider
	for attempt := 0; ; attempt++ {
		err = s.store.InTx(ctx, func(tx storage.Store) error {
			cur, err := tx.DNSProviders().Get(ctx, p.ID)
			if err != nil {
				return err
			}
			if cur.Version != p.Version && !equalCreds(cur, p) {
				return fmt.Errorf("DNS provider %q changed during verification: verify again: %w", p.Name, storage.ErrConflict)
			}
			cur.Status, cur.LastMessage, cur.VerifiedAt, cur.Verification = StatusFailed, v.Message, v.At, vb
			if v.OK {
				cur.Status = StatusVerified
			}
			if err := tx.DNSProviders().Update(ctx, cur); err != nil {
				return err
			}
			out = cur
			return s.audit(ctx, tx, actor, "dns_provider.verify", cur, map[string]any{"ok": v.OK, "message": v.Message})
		})
		if !errors.Is(err, storage.ErrConflict) || attempt == 2 {
			break
		}
	}
	if err != nil {
		return v, nil, err
	}
	fields := []zap.Field{zap.String("dns_provider", p.Name), zap.Bool("ok", v.OK), zap.String("actor", actor)}
	if !v.OK {
		fields = append(fields, zap.String("message", v.Message))
	}
	s.logger.Info("dns provider verified", fields...)
	return v, out, nil
}

func equalCreds(a, b *storage.DNSProvider) bool {
	return string(a.Credentials.Reveal()) == string(b.Credentials.Reveal()) && slices.Equal(a.Zones, b.Zones) &&
		a.AccountID == b.AccountID && a.Type == b.Type
}

func (s *Service) verify(ctx context.Context, p *storage.DNSProvider, lp *liveProvider, v *Verification) {
	usable := map[string]bool{}
	for _, z := range p.Zones {
		usable[z] = true
	}
	if lp.cf != nil {
		if !s.verifyCloudflare(ctx, p, lp, v, usable) {
			return
		}
	}
	for _, zone := range p.Zones {
		if !usable[zone] {
			continue
		}
		s.probe(ctx, p, zone, v)
	}
}

// verifyCloudflare checks the tokens and each zone through the API. It
// returns false if the API token is unusable, so nothing else is tried.
func (s *Service) verifyCloudflare(ctx context.Context, p *storage.DNSProvider, lp *liveProvider, v *Verification, usable map[string]bool) bool {
	cf := lp.cf
	tokens := []struct{ name, token string }{{"api_token", cf.apiToken}}
	if cf.zoneToken != "" {
		tokens = append(tokens, struct{ name, token string }{"zone_token", cf.zoneToken})
	}
	for _, t := range tokens {
		status, err := cf.verifyToken(ctx, t.token, p.AccountID)
		switch {
		case err != nil:
			msg := cloudflareMessage(err, "checking the "+t.name, "")
			msg = strings.Replace(msg, "the API token", "the "+t.name, 1)
			v.add(Check{Name: t.name, Message: lp.red.clean(msg)})
			return false
		case status != "active":
			v.add(Check{Name: t.name, Message: fmt.Sprintf("checking the %s: Cloudflare says the token is %s, not active", t.name, status)})
			return false
		}
		v.add(Check{Name: t.name, OK: true, Message: "the " + t.name + " is valid and active"})
	}
	for _, zone := range p.Zones {
		fail := func(msg string) {
			v.add(Check{Name: "zone", Zone: zone, Message: lp.red.clean(msg)})
			usable[zone] = false
		}
		z, err := cf.zone(ctx, zone)
		switch {
		case err != nil:
			fail(cloudflareMessage(err, "looking up zone "+zone, zone))
			continue
		case z == nil:
			tok := "API token"
			if cf.zoneToken != "" {
				tok = "zone_token"
			}
			fail(fmt.Sprintf("looking up zone %s: Cloudflare has no such zone that the %s can read (it needs Zone → Zone → Read on it)", zone, tok))
			continue
		case p.AccountID != "" && z.Account.ID != p.AccountID:
			fail(fmt.Sprintf("zone %s belongs to Cloudflare account %s (%s), not to the configured account %s", zone, z.Account.ID, z.Account.Name, p.AccountID))
			continue
		}
		if err := cf.readRecords(ctx, z.ID); err != nil {
			fail(cloudflareMessage(err, "reading the DNS records of zone "+zone, zone))
			continue
		}
		v.add(Check{Name: "zone", Zone: zone, OK: true, Message: fmt.Sprintf("zone %s found (id %s, account %s) and its records readable", zone, z.ID, z.Account.ID)})
	}
	return true
}

// probe publishes, checks propagation of, and removes a TXT record in zone.
func (s *Service) probe(ctx context.Context, p *storage.DNSProvider, zone string, v *Verification) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	value := "certlocker-verify-" + hex.EncodeToString(b[:])
	fqdn := verifyProbeLabel + "." + zone
	rec, err := s.Present(ctx, p.ID, "", fqdn, value)
	defer func() {
		if rec == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := s.CleanUp(cctx, rec); err != nil {
			v.add(Check{Name: "remove", Zone: zone, Message: err.Error()})
			return
		}
		v.add(Check{Name: "remove", Zone: zone, OK: true, Message: "removed the test record " + fqdn})
	}()
	if err != nil {
		v.add(Check{Name: "publish", Zone: zone, Message: err.Error()})
		return
	}
	v.add(Check{Name: "publish", Zone: zone, OK: true, Message: "published the test record " + fqdn})

	pctx, cancel := context.WithTimeout(ctx, min(parseSettings(p).PropagationTimeout, maxVerifyPropagation))
	defer cancel()
	servers, err := s.Nameservers(pctx, p, zone)
	if err != nil {
		v.add(Check{Name: "nameservers", Zone: zone, Message: err.Error()})
		return
	}
	var names []string
	for _, ns := range servers {
		names = append(names, fmt.Sprintf("%s (%s)", ns.Host, strings.Join(ns.Addrs, ", ")))
	}
	v.add(Check{Name: "nameservers", Zone: zone, OK: true, Message: "authoritative nameservers: " + strings.Join(names, "; ")})
	d, err := s.WaitPropagation(pctx, rec)
	if err != nil {
		v.add(Check{Name: "propagation", Zone: zone, Message: err.Error()})
		return
	}
	v.add(Check{Name: "propagation", Zone: zone, OK: true,
		Message: fmt.Sprintf("all %d authoritative nameservers served the test record after %s", len(servers), d.Round(time.Millisecond))})
}
