package inventory

import (
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

func TestRenewalStatus(t *testing.T) {
	cert := func(edit func(c *storage.Certificate)) *storage.Certificate {
		c := &storage.Certificate{NotBefore: t0, NotAfter: t0.Add(90 * day), IssuerID: "iss_1", Status: storage.CertStatusActive}
		edit(c)
		return c
	}
	cases := map[string]struct {
		c       *storage.Certificate
		now     time.Time
		status  string
		managed bool
	}{
		"fresh":           {cert(func(c *storage.Certificate) {}), t0.Add(day), RenewalOK, true},
		"due":             {cert(func(c *storage.Certificate) {}), t0.Add(60 * day), RenewalDue, true},
		"due imported":    {cert(func(c *storage.Certificate) { c.IssuerID = "" }), t0.Add(61 * day), RenewalDue, false},
		"expired":         {cert(func(c *storage.Certificate) {}), t0.Add(90 * day), RenewalExpired, true},
		"not yet valid":   {cert(func(c *storage.Certificate) {}), t0.Add(-time.Second), RenewalNotYetValid, true},
		"renewed":         {cert(func(c *storage.Certificate) { c.Status, c.ReplacedBy = storage.CertStatusRenewed, "crt_2" }), t0.Add(89 * day), RenewalRenewed, true},
		"renewed expired": {cert(func(c *storage.Certificate) { c.ReplacedBy = "crt_2" }), t0.Add(100 * day), RenewalRenewed, true},
		"revoked":         {cert(func(c *storage.Certificate) { c.Status = storage.CertStatusRevoked }), t0.Add(day), RenewalRevoked, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := RenewalStatus(c.c, c.now)
			if r.Status != c.status || r.Managed != c.managed || r.Message == "" {
				t.Fatalf("got %+v, want status %s managed %v", r, c.status, c.managed)
			}
			if !r.RenewAt.Equal(t0.Add(60 * day)) {
				t.Fatalf("renew at %v, want two thirds into the lifetime", r.RenewAt)
			}
		})
	}
}

func TestExpiryBucket(t *testing.T) {
	cases := map[string]struct {
		left time.Duration
		want string
	}{
		"expired now":  {0, BucketExpired},
		"expired":      {-day, BucketExpired},
		"an hour":      {time.Hour, BucketWithin7d},
		"seven days":   {7 * day, BucketWithin7d},
		"eight days":   {8 * day, BucketWithin30d},
		"thirty days":  {30 * day, BucketWithin30d},
		"thirty-one":   {31 * day, BucketOK},
		"a year ahead": {365 * day, BucketOK},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ExpiryBucket(t0.Add(c.left), t0); got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
}
