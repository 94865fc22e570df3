package storagetest

import (
	"context"
	"errors"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
)

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
