package storagetest

import (
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// plaintexts are secrets written by writeSecrets; none may appear at rest.
var plaintexts = []string{
	"EAB-MAC-KEY-7f3a9c1e", "ACCOUNT-KEY-PEM-55d0b2", "CLOUDFLARE-TOKEN-9a8b7c", "CERT-PRIVATE-KEY-e1e2e3",
	"IMPORTED-KEY-0c0d0e", "TOKEN-HMAC-SECRET-4242", "GATEWAY-EAB-HMAC-1337",
}

// writeSecrets stores one secret of every kind and returns how many.
func writeSecrets(t *testing.T, st storage.Store) int {
	t.Helper()
	ctx := t.Context()
	iss := &storage.Issuer{Name: "secretive", DirectoryURL: "https://ca/dir", EABMACKey: storage.NewSecret([]byte(plaintexts[0])),
		AccountKey: storage.NewSecret([]byte(plaintexts[1]))}
	must(t, st.Issuers().Create(ctx, iss))
	must(t, st.DNSProviders().Create(ctx, &storage.DNSProvider{Name: "cf", Type: "cloudflare",
		Credentials: storage.NewSecret([]byte(`{"api_token":"` + plaintexts[2] + `"}`))}))
	must(t, st.Workflows().Create(ctx, &storage.Workflow{IssuerID: iss.ID, PrivateKey: storage.NewSecret([]byte(plaintexts[3])),
		Identifiers: []storage.Identifier{{Type: "dns", Value: "secret.example"}}}))
	c := newCert(7, time.Now().Add(time.Hour), "secret.example")
	c.PrivateKey = storage.NewSecret([]byte(plaintexts[4]))
	must(t, st.Certificates().Put(ctx, c))
	must(t, st.Tokens().Create(ctx, &storage.Token{CertificateID: c.ID, Secret: storage.NewSecret([]byte(plaintexts[5]))}))
	must(t, st.ACME().Set(ctx, "acme_external_account_keys", "eak1", []byte(plaintexts[6])))
	return len(plaintexts)
}

// checkSecrets reads every secret back.
func checkSecrets(t *testing.T, st storage.Store) {
	t.Helper()
	ctx := t.Context()
	iss, err := st.Issuers().GetByName(ctx, "secretive")
	must(t, err)
	p, err := st.DNSProviders().GetByName(ctx, "cf")
	must(t, err)
	wfs, _, err := st.Workflows().List(ctx, storage.WorkflowFilter{Domain: "secret.example"}, storage.Page{})
	must(t, err)
	certs, _, err := st.Certificates().List(ctx, storage.CertificateFilter{Domain: "secret.example"}, storage.Page{})
	must(t, err)
	toks, err := st.Tokens().List(ctx, storage.TokenFilter{})
	must(t, err)
	gw, err := st.ACME().Get(ctx, "acme_external_account_keys", "eak1")
	must(t, err)
	got := []string{string(iss.EABMACKey.Reveal()), string(iss.AccountKey.Reveal()), string(p.Credentials.Reveal()),
		string(wfs[0].PrivateKey.Reveal()), string(certs[0].PrivateKey.Reveal()), string(toks[0].Secret.Reveal()), string(gw)}
	want := []string{plaintexts[0], plaintexts[1], `{"api_token":"` + plaintexts[2] + `"}`, plaintexts[3], plaintexts[4], plaintexts[5], plaintexts[6]}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("secret %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func testSecretsAtRest(t *testing.T, b Backend) {
	st, db := open(t, b)
	writeSecrets(t, st)
	checkSecrets(t, st)
	raw := db.Raw(t)
	if len(raw) == 0 {
		t.Fatal("the backend's raw dump is empty")
	}
	if !containsPlain(raw, []byte("secret.example")) {
		t.Fatal("the raw dump does not even hold the non-secret names: the check would prove nothing")
	}
	for _, p := range plaintexts {
		if containsPlain(raw, []byte(p)) {
			t.Errorf("plaintext secret %q found at rest", p)
		}
	}
}

func testRekey(t *testing.T, b Backend) {
	ctx := t.Context()
	db := b.NewDB(t)
	oldKey, _ := storage.NewKey()
	newKey, _ := storage.NewKey()
	oldSealer, _ := storage.NewSealer(oldKey)
	st, err := db.Open(ctx, oldSealer)
	must(t, err)
	n := writeSecrets(t, st)
	must(t, st.Close())

	rotating, _ := storage.NewSealer(newKey, oldKey)
	st, err = db.Open(ctx, rotating)
	must(t, err)
	checkSecrets(t, st) // both keys readable during the rotation
	got, err := st.Rekey(ctx)
	must(t, err)
	if got != n {
		t.Fatalf("rekey re-sealed %d values, want %d", got, n)
	}
	again, err := st.Rekey(ctx)
	must(t, err)
	if again != 0 {
		t.Fatalf("a second rekey re-sealed %d values, want 0", again)
	}
	must(t, st.Close())

	newOnly, _ := storage.NewSealer(newKey)
	st, err = db.Open(ctx, newOnly)
	must(t, err)
	checkSecrets(t, st)
	must(t, st.Close())

	if st, err := db.Open(ctx, oldSealer); !errors.Is(err, storage.ErrUnknownKey) {
		if st != nil {
			st.Close()
		}
		t.Fatalf("opening with the retired key: %v, want ErrUnknownKey", err)
	}
}

func testWrongKey(t *testing.T, b Backend) {
	ctx := t.Context()
	db := b.NewDB(t)
	st, err := db.Open(ctx, NewSealer(t))
	must(t, err)
	writeSecrets(t, st)
	must(t, st.Close())
	st, err = db.Open(ctx, NewSealer(t))
	if !errors.Is(err, storage.ErrUnknownKey) {
		if st != nil {
			st.Close()
		}
		t.Fatalf("opening with a foreign key: %v, want ErrUnknownKey", err)
	}
}

// A value Rekey cannot open (sealed with a key that is not configured)
// fails the rekey with an error naming its row, not its value; every other
// secret is re-sealed all the same, and the canary keeps naming the
// previous key until a rekey succeeds.
func testRekeyUnopenable(t *testing.T, b Backend) {
	ctx := t.Context()
	db := b.NewDB(t)
	oldKey, _ := storage.NewKey()
	newKey, _ := storage.NewKey()
	lostKey, _ := storage.NewKey()
	oldSealer, _ := storage.NewSealer(oldKey)
	st, err := db.Open(ctx, oldSealer)
	must(t, err)
	writeSecrets(t, st)
	must(t, st.Close())
	// a row sealed with a key the operator no longer has
	lost, _ := storage.NewSealer(lostKey, oldKey)
	st, err = db.Open(ctx, lost)
	must(t, err)
	const lostValue = "LOST-KEY-SECRET-8c8c"
	lostIssuer := &storage.Issuer{Name: "lost", DirectoryURL: "https://ca/dir", AccountKey: storage.NewSecret([]byte(lostValue))}
	must(t, st.Issuers().Create(ctx, lostIssuer))
	must(t, st.Close())

	rotating, _ := storage.NewSealer(newKey, oldKey)
	st, err = db.Open(ctx, rotating)
	must(t, err)
	n, err := st.Rekey(ctx)
	if err == nil {
		t.Fatal("rekey succeeded although one value could not be opened")
	}
	if !strings.Contains(err.Error(), "issuers.account_key/"+lostIssuer.ID) || strings.Contains(err.Error(), lostValue) {
		t.Fatalf("the error must name the row, never the value: %v", err)
	}
	if n != len(plaintexts) {
		t.Fatalf("rekey re-sealed %d values besides the lost one, want all %d", n, len(plaintexts))
	}
	must(t, st.Close())
	// the canary still names the previous key
	st, err = db.Open(ctx, oldSealer)
	if err != nil {
		t.Fatalf("after a failed rekey the previous key alone no longer opens the store: %v", err)
	}
	must(t, st.Close())
	newOnly, _ := storage.NewSealer(newKey)
	if st, err := db.Open(ctx, newOnly); !errors.Is(err, storage.ErrUnknownKey) || !strings.Contains(err.Error(), storage.KeyID(oldKey)) {
		if st != nil {
			st.Close()
		}
		t.Fatalf("opening with the new key alone: %v, want ErrUnknownKey naming the previous key", err)
	}

	// once the lost value is gone, a rekey completes and moves the canary
	st, err = db.Open(ctx, rotating)
	must(t, err)
	must(t, st.Issuers().Delete(ctx, lostIssuer.ID))
	n, err = st.Rekey(ctx)
	must(t, err)
	if n != 0 {
		t.Fatalf("the second rekey re-sealed %d values, want 0 (the first re-sealed them)", n)
	}
	must(t, st.Close())
	st, err = db.Open(ctx, newOnly)
	must(t, err)
	checkSecrets(t, st)
	must(t, st.Close())
}

// A certificate's private key lives in one place once issued: the
// inventory takes it and the workflow drops its copy in the same
// transaction, a later write of the workflow naming its certificate does
// not bring the copy back, and deleting the certificate removes every copy
// (also one an older workflow row still holds). The raw database after the
// delete holds neither the key nor its sealed form.
func testKeyCopies(t *testing.T, b Backend) {
	st, db := open(t, b)
	ctx := t.Context()
	iss := newIssuer(t, st, "keys")
	const issuedKey, olderKey = "ISSUED-KEY-PLAINTEXT-a1b2c3", "OLDER-ROW-KEY-PLAINTEXT-d4e5f6"
	w := &storage.Workflow{IssuerID: iss.ID, PrivateKey: storage.NewSecret([]byte(issuedKey)),
		Identifiers: []storage.Identifier{{Type: "dns", Value: "keys.example"}}}
	must(t, st.Workflows().Create(ctx, w))
	c := newCert(91, time.Now().Add(time.Hour), "keys.example")
	c.IssuerID, c.WorkflowID, c.Source, c.PrivateKey = iss.ID, w.ID, storage.CertSourceIssued, storage.NewSecret([]byte(issuedKey))
	must(t, st.InTx(ctx, func(tx storage.Store) error {
		if err := tx.Certificates().Put(ctx, c); err != nil {
			return err
		}
		return tx.Workflows().DropPrivateKey(ctx, w.ID)
	}))
	got, err := st.Workflows().Get(ctx, w.ID)
	must(t, err)
	if !got.PrivateKey.IsZero() {
		t.Fatal("the workflow still holds the key once its certificate is in the inventory")
	}
	if got.Version != w.Version {
		t.Fatalf("dropping the key changed the workflow's version (%d, was %d): the engine's next write would conflict", got.Version, w.Version)
	}
	// the engine's next persist still has the key in memory
	w.CertificateID, w.State = c.ID, storage.StateIssued
	must(t, st.Workflows().Update(ctx, w))
	got, err = st.Workflows().Get(ctx, w.ID)
	must(t, err)
	if !got.PrivateKey.IsZero() {
		t.Fatal("a write of the issued workflow brought the key back")
	}

	// a workflow row written before keys moved still holds its copy
	older := &storage.Workflow{IssuerID: iss.ID, PrivateKey: storage.NewSecret([]byte(olderKey)),
		Identifiers: []storage.Identifier{{Type: "dns", Value: "older.example"}}}
	must(t, st.Workflows().Create(ctx, older))
	c2 := newCert(92, time.Now().Add(time.Hour), "older.example")
	c2.IssuerID, c2.WorkflowID, c2.Source, c2.PrivateKey = iss.ID, older.ID, storage.CertSourceIssued, storage.NewSecret([]byte(olderKey))
	must(t, st.Certificates().Put(ctx, c2))

	sealed := [][]byte{
		sealedValue(t, st, "certificates", c.ID),
		sealedValue(t, st, "certificates", c2.ID),
		sealedValue(t, st, "workflows", older.ID),
	}
	raw := db.Raw(t)
	for i, s := range sealed {
		if len(s) == 0 || !containsPlain(raw, s) {
			t.Fatalf("sealed value %d is not in the raw dump before the delete: the check would prove nothing", i)
		}
	}
	must(t, st.Certificates().Delete(ctx, c.ID))
	must(t, st.Certificates().Delete(ctx, c2.ID))
	got, err = st.Workflows().Get(ctx, older.ID)
	must(t, err)
	if !got.PrivateKey.IsZero() {
		t.Fatal("deleting the certificate left its key in the workflow that issued it")
	}
	raw = db.Raw(t)
	if !containsPlain(raw, []byte("older.example")) {
		t.Fatal("the raw dump does not hold the workflow's names: the check would prove nothing")
	}
	for _, p := range []string{issuedKey, olderKey} {
		if containsPlain(raw, []byte(p)) {
			t.Errorf("the deleted key %q is in the raw database", p)
		}
	}
	for i, s := range sealed {
		if containsPlain(raw, s) {
			t.Errorf("sealed copy %d of a deleted key is still in the raw database", i)
		}
	}
}

// sealedValue reads a private_key column as stored.
func sealedValue(t *testing.T, st storage.Store, table, id string) []byte {
	t.Helper()
	return sealedColumn(t, st, table, "private_key", id)
}

// sealedColumn reads a sealed column as stored.
func sealedColumn(t *testing.T, st storage.Store, table, column, id string) []byte {
	t.Helper()
	db, ok := st.(interface{ SQL() *sql.DB })
	if !ok {
		t.Skipf("the %T store has no SQL handle to read sealed values with", st)
	}
	var b []byte
	// ids are made by storage.NewID: safe to quote
	must(t, db.SQL().QueryRowContext(t.Context(), "SELECT "+column+" FROM "+table+" WHERE id = '"+id+"'").Scan(&b))
	return b
}

// Deleting an ACME client, a DNS provider client or a certificate token
// leaves no sealed copy of its secrets in the raw database.
func testDeletedSecrets(t *testing.T, b Backend) {
	st, db := open(t, b)
	ctx := t.Context()
	iss := &storage.Issuer{Name: "gone", DirectoryURL: "https://ca/dir", EABMACKey: storage.NewSecret([]byte("DELETED-EAB-MAC-91")),
		AccountKey: storage.NewSecret([]byte("DELETED-ACCOUNT-KEY-92"))}
	must(t, st.Issuers().Create(ctx, iss))
	p := &storage.DNSProvider{Name: "gone-dns", Type: "cloudflare", Credentials: storage.NewSecret([]byte(`{"api_token":"DELETED-TOKEN-93"}`))}
	must(t, st.DNSProviders().Create(ctx, p))
	c := newCert(93, time.Now().Add(time.Hour), "gone.example")
	must(t, st.Certificates().Put(ctx, c))
	tok := &storage.Token{CertificateID: c.ID, Secret: storage.NewSecret([]byte("DELETED-TOKEN-SECRET-94"))}
	must(t, st.Tokens().Create(ctx, tok))
	sealed := [][]byte{
		sealedColumn(t, st, "issuers", "eab_mac_key", iss.ID),
		sealedColumn(t, st, "issuers", "account_key", iss.ID),
		sealedColumn(t, st, "dns_providers", "credentials", p.ID),
		sealedColumn(t, st, "tokens", "secret", tok.ID),
	}
	raw := db.Raw(t)
	for i, s := range sealed {
		if len(s) == 0 || !containsPlain(raw, s) {
			t.Fatalf("sealed value %d is not in the raw dump before the delete: the check would prove nothing", i)
		}
	}
	must(t, st.Issuers().Delete(ctx, iss.ID))
	must(t, st.DNSProviders().Delete(ctx, p.ID))
	must(t, st.Tokens().Delete(ctx, tok.ID))
	raw = db.Raw(t)
	if !containsPlain(raw, []byte("gone.example")) {
		t.Fatal("the raw dump does not hold the certificate's names: the check would prove nothing")
	}
	for i, s := range sealed {
		if containsPlain(raw, s) {
			t.Errorf("sealed secret %d of a deleted row is still in the raw database", i)
		}
	}
}
