package storagetest

import (
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// testIssuerAccounts covers the account lifecycle columns of schema
// version 2: terms agreement, registration and rollover times, and the
// sealed key a rollover moves to.
func testIssuerAccounts(t *testing.T, b Backend) {
	ctx := t.Context()
	db := b.NewDB(t)
	oldKey, _ := storage.NewKey()
	oldSealer, _ := storage.NewSealer(oldKey)
	st, err := db.Open(ctx, oldSealer)
	must(t, err)

	at := time.Date(2026, 5, 20, 11, 5, 0, 123456789, time.UTC)
	iss := &storage.Issuer{Name: "rolling", DirectoryURL: "https://ca.test/dir", Status: "valid",
		AccountKey: storage.NewSecret([]byte("CURRENT-ACCOUNT-KEY-a1")), AccountURL: "https://ca.test/acct/1",
		TermsAgreed: "https://ca.test/terms-v2", TermsAgreedAt: at, RegisteredAt: at, MetaRefreshedAt: at.Add(time.Minute)}
	must(t, st.Issuers().Create(ctx, iss))

	got, err := st.Issuers().Get(ctx, iss.ID)
	must(t, err)
	switch {
	case got.TermsAgreed != iss.TermsAgreed, !got.TermsAgreedAt.Equal(at), !got.RegisteredAt.Equal(at),
		!got.MetaRefreshedAt.Equal(at.Add(time.Minute)), !got.KeyRolledAt.IsZero(), !got.CheckedAt.IsZero():
		t.Fatalf("lifecycle fields changed in the round trip: %+v", got)
	case !got.NextAccountKey.IsZero():
		t.Fatal("an issuer created without a next key has one")
	}

	// a rollover in progress: the next key is kept sealed beside the current one
	got.NextAccountKey = storage.NewSecret([]byte("NEXT-ACCOUNT-KEY-b2"))
	must(t, st.Issuers().Update(ctx, got))
	pending, err := st.Issuers().Get(ctx, iss.ID)
	must(t, err)
	if string(pending.NextAccountKey.Reveal()) != "NEXT-ACCOUNT-KEY-b2" || string(pending.AccountKey.Reveal()) != "CURRENT-ACCOUNT-KEY-a1" {
		t.Fatal("the pending rollover did not keep both keys")
	}
	if raw := db.Raw(t); containsPlain(raw, []byte("NEXT-ACCOUNT-KEY-b2")) || containsPlain(raw, []byte("CURRENT-ACCOUNT-KEY-a1")) {
		t.Fatal("an account key is stored in plaintext")
	}
	must(t, st.Close())

	// rekey re-seals the pending key too
	newKey, _ := storage.NewKey()
	rotating, _ := storage.NewSealer(newKey, oldKey)
	st, err = db.Open(ctx, rotating)
	must(t, err)
	n, err := st.Rekey(ctx)
	must(t, err)
	if n != 2 {
		t.Fatalf("rekey re-sealed %d values, want 2 (account key and next key)", n)
	}
	must(t, st.Close())
	newOnly, _ := storage.NewSealer(newKey)
	st, err = db.Open(ctx, newOnly)
	must(t, err)
	t.Cleanup(func() { _ = st.Close() })
	pending, err = st.Issuers().Get(ctx, iss.ID)
	must(t, err)
	if string(pending.NextAccountKey.Reveal()) != "NEXT-ACCOUNT-KEY-b2" {
		t.Fatal("the next key does not open after rekey")
	}

	// the rollover completes: the next key becomes the key, and is cleared
	rolled := at.Add(time.Hour)
	pending.AccountKey, pending.NextAccountKey, pending.KeyRolledAt, pending.CheckedAt =
		pending.NextAccountKey, storage.Secret{}, rolled, rolled
	must(t, st.Issuers().Update(ctx, pending))
	done, err := st.Issuers().Get(ctx, iss.ID)
	must(t, err)
	if string(done.AccountKey.Reveal()) != "NEXT-ACCOUNT-KEY-b2" || !done.NextAccountKey.IsZero() ||
		!done.KeyRolledAt.Equal(rolled) || !done.CheckedAt.Equal(rolled) {
		t.Fatalf("completed rollover not stored: key rolled %v, checked %v", done.KeyRolledAt, done.CheckedAt)
	}
}
