package storagetest

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

func testACMEState(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	a := st.ACME()
	_, err := a.Get(ctx, "acme_accounts", "missing")
	wantErr(t, err, storage.ErrNotFound)
	must(t, a.Set(ctx, "acme_accounts", "acc1", []byte(`{"id":"acc1"}`)))
	must(t, a.Set(ctx, "acme_accounts", "acc0", []byte{}))
	must(t, a.Set(ctx, "acme_orders", "o1", []byte(`{"id":"o1"}`)))
	v, err := a.Get(ctx, "acme_accounts", "acc1")
	must(t, err)
	if string(v) != `{"id":"acc1"}` {
		t.Fatalf("get = %q", v)
	}
	if v, err := a.Get(ctx, "acme_accounts", "acc0"); err != nil || len(v) != 0 {
		t.Fatalf("empty value: %q, %v", v, err)
	}
	list, err := a.List(ctx, "acme_accounts")
	must(t, err)
	if len(list) != 2 || list[0].Key != "acc0" || list[1].Key != "acc1" {
		t.Fatalf("list = %+v", list)
	}

	// compare and swap
	cases := map[string]struct {
		key      string
		old, new []byte
		swapped  bool
		found    string
	}{
		"create when absent":         {"new", nil, []byte("v1"), true, "v1"},
		"create refused when exists": {"acc1", nil, []byte("x"), false, `{"id":"acc1"}`},
		"swap on match":              {"o1", []byte(`{"id":"o1"}`), []byte(`{"id":"o1","s":"valid"}`), true, `{"id":"o1","s":"valid"}`},
		"refused on mismatch":        {"acc1", []byte("other"), []byte("x"), false, `{"id":"acc1"}`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			bucket := "acme_accounts"
			if c.key == "o1" {
				bucket = "acme_orders"
			}
			found, swapped, err := a.CompareAndSwap(ctx, bucket, c.key, c.old, c.new)
			must(t, err)
			if swapped != c.swapped || string(found) != c.found {
				t.Fatalf("CAS = %q, %v; want %q, %v", found, swapped, c.found, c.swapped)
			}
		})
	}

	// CAS is atomic: concurrent increments are never lost
	must(t, a.Set(ctx, "counters", "c", binary.BigEndian.AppendUint64(nil, 0)))
	var wg sync.WaitGroup
	const workers, each = 4, 10
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				cur, err := a.Get(ctx, "counters", "c")
				if err != nil {
					t.Error(err)
					return
				}
				next := binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(cur)+1)
				_, ok, err := a.CompareAndSwap(ctx, "counters", "c", cur, next)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					i++
				}
			}
		}()
	}
	wg.Wait()
	final, err := a.Get(ctx, "counters", "c")
	must(t, err)
	if n := binary.BigEndian.Uint64(final); n != workers*each {
		t.Fatalf("counter = %d, want %d", n, workers*each)
	}

	must(t, a.Delete(ctx, "acme_accounts", "acc1"))
	_, err = a.Get(ctx, "acme_accounts", "acc1")
	wantErr(t, err, storage.ErrNotFound)
	must(t, a.DeleteBucket(ctx, "acme_accounts"))
	if list, _ := a.List(ctx, "acme_accounts"); len(list) != 0 {
		t.Fatalf("bucket still has %d entries", len(list))
	}
	if list, _ := a.List(ctx, "acme_orders"); len(list) != 1 {
		t.Fatal("deleting one bucket touched another")
	}
}

func testTransactions(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	boom := errors.New("boom")
	err := st.InTx(ctx, func(tx storage.Store) error {
		newIssuer(t, tx, "rolled-back")
		if err := tx.Audit().Append(ctx, &storage.AuditEntry{Action: "issuer.create"}); err != nil {
			return err
		}
		// nested InTx joins the outer transaction
		return tx.InTx(ctx, func(inner storage.Store) error {
			return inner.ACME().Set(ctx, "b", "k", []byte("v"))
		})
	})
	must(t, err)
	err = st.InTx(ctx, func(tx storage.Store) error {
		newIssuer(t, tx, "lost")
		must(t, tx.ACME().Set(ctx, "b", "k2", []byte("v")))
		return boom
	})
	wantErr(t, err, boom)
	if _, err := st.Issuers().GetByName(ctx, "lost"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a failed transaction kept its issuer: %v", err)
	}
	if _, err := st.ACME().Get(ctx, "b", "k2"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a failed transaction kept its state: %v", err)
	}
	if _, err := st.Issuers().GetByName(ctx, "rolled-back"); err != nil {
		t.Fatalf("a committed transaction lost its issuer: %v", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic was swallowed")
			}
		}()
		_ = st.InTx(ctx, func(tx storage.Store) error {
			newIssuer(t, tx, "panicked")
			panic("mid-transaction")
		})
	}()
	if _, err := st.Issuers().GetByName(ctx, "panicked"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a panicking transaction kept its issuer: %v", err)
	}
	// the store still works after a panic
	newIssuer(t, st, "after-panic")
}

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

func testCancellation(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := st.Issuers().List(ctx, storage.IssuerFilter{}); err == nil {
		t.Fatal("a cancelled context was ignored by List")
	}
	if err := st.Audit().Append(ctx, &storage.AuditEntry{Action: "x"}); err == nil {
		t.Fatal("a cancelled context was ignored by Append")
	}
}
