package storagetest

import (
	"slices"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// testChallengeZone: the challenge zone serves the TXT values of delegated
// provider clients' records (no other type's) and of acme-dns
// registrations (the newest two), whose passwords are sealed.
func testChallengeZone(t *testing.T, b Backend) {
	st, db := open(t, b)
	ctx := t.Context()
	zs := storage.ChallengeZoneOf(st)
	if zs == nil {
		t.Fatal("the store has no challenge zone store")
	}
	for _, typ := range []string{"delegated", "rfc2136"} {
		p := &storage.DNSProvider{Name: typ, Type: typ, Credentials: storage.NewSecret([]byte(`{}`)), Zones: []string{"acme.example.net"}}
		must(t, st.DNSProviders().Create(ctx, p))
		must(t, st.DNSProviders().PutRecord(ctx, &storage.ChallengeRecord{ProviderID: p.ID, Zone: "acme.example.net", Name: "lbl",
			Type: "TXT", Value: "from-" + typ, CreatedAt: time.Now()}))
	}
	got, err := zs.ZoneTXT(ctx, "acme.example.net", "lbl")
	must(t, err)
	if !slices.Equal(got, []string{"from-delegated"}) {
		t.Fatalf("ZoneTXT = %v, want only the delegated provider's value", got)
	}
	if got, _ := zs.ZoneTXT(ctx, "other.example", "lbl"); len(got) != 0 {
		t.Fatalf("another zone: %v", got)
	}

	reg := &storage.ACMEDNSRegistration{Username: "2b0c6e7a-6b2c-4c6e-9a5e-7f1d2c3b4a51", Password: storage.NewSecret([]byte("ACMEDNS-PASSWORD-x1")),
		Zone: "acme.example.net", Subdomain: "5c1d7f3e-1a2b-4c3d-8e9f-0a1b2c3d4e5f", AllowFrom: []string{"192.0.2.0/24"}}
	must(t, zs.CreateRegistration(ctx, reg))
	dup := *reg
	wantErr(t, zs.CreateRegistration(ctx, &dup), storage.ErrDuplicate)
	dup.Username = "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70"
	wantErr(t, zs.CreateRegistration(ctx, &dup), storage.ErrDuplicate) // same subdomain
	_, err = zs.GetRegistration(ctx, "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70")
	wantErr(t, err, storage.ErrNotFound)
	wantErr(t, zs.SetRegistrationTXT(ctx, "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70", "v", time.Now()), storage.ErrNotFound)
	for _, v := range []string{"v1", "v2", "v3"} {
		must(t, st.InTx(ctx, func(tx storage.Store) error {
			return storage.ChallengeZoneOf(tx).SetRegistrationTXT(ctx, reg.Username, v, time.Now())
		}))
	}
	r, err := zs.GetRegistration(ctx, reg.Username)
	must(t, err)
	if string(r.Password.Reveal()) != "ACMEDNS-PASSWORD-x1" || !slices.Equal(r.TXT, []string{"v3", "v2"}) ||
		!slices.Equal(r.AllowFrom, reg.AllowFrom) || r.UpdatedAt.IsZero() {
		t.Fatalf("registration %+v", r)
	}
	got, err = zs.ZoneTXT(ctx, "acme.example.net", reg.Subdomain)
	must(t, err)
	if slices.Sort(got); !slices.Equal(got, []string{"v2", "v3"}) {
		t.Fatalf("ZoneTXT of the registration = %v", got)
	}
	if raw := db.Raw(t); containsPlain(raw, []byte("ACMEDNS-PASSWORD-x1")) {
		t.Fatal("the acme-dns password is stored in clear")
	}
}
