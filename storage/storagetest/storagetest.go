// Package storagetest is the conformance suite every storage backend runs:
// the same behaviour, byte for byte, on SQLite and on PostgreSQL.
package storagetest

import (
	"bytes"
	"context"
	"encoding/hex"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
)

// DB is one empty database prepared by a backend.
type DB struct {
	// Open opens the database with the given sealer (migrating it).
	Open func(ctx context.Context, sealer *storage.Sealer) (storage.Store, error)
	// Raw returns everything the database holds at rest, as the backend
	// stores it (file bytes, or every row rendered as text), so the suite
	// can look for plaintext secrets.
	Raw func(t *testing.T) []byte
}

// Backend prepares empty databases.
type Backend struct {
	Name  string
	NewDB func(t *testing.T) DB
}

// Run runs the whole suite against b.
func Run(t *testing.T, b Backend) {
	tests := map[string]func(t *testing.T, b Backend){
		"migrations":     testMigrations,
		"issuers":        testIssuers,
		"issuer_keys":    testIssuerAccounts,
		"dns_providers":  testDNSProviders,
		"dns_records":    testChallengeRecords,
		"workflows":      testWorkflows,
		"leases":         testLeases,
		"lease skipping": testLeaseSkipsIssuers,
		"events":         testEvents,
		"certificates":   testCertificates,
		"inventory":      testCertificateInventory,
		"tokens":         testTokens,
		"audit":          testAudit,
		"audit_fields":   testAuditFields,
		"audit_append":   testAuditAppendOnly,
		"acme_state":     testACMEState,
		"transactions":   testTransactions,
		"secrets":        testSecretsAtRest,
		"rekey":          testRekey,
		"rekey_failure":  testRekeyUnopenable,
		"key_copies":     testKeyCopies,
		"deleted":        testDeletedSecrets,
		"wrong_key":      testWrongKey,
		"cancellation":   testCancellation,
		"zone_records":   testChallengeZone,
		"paging":         testPaging,
		"list_paging":    testListPaging,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) { fn(t, b) })
	}
}

// NewSealer returns a sealer with a fresh random key.
func NewSealer(t testing.TB) *storage.Sealer {
	t.Helper()
	k, err := storage.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// open prepares a database and opens it with a fresh key.
func open(t *testing.T, b Backend) (storage.Store, DB) {
	t.Helper()
	db := b.NewDB(t)
	st, err := db.Open(t.Context(), NewSealer(t))
	if err != nil {
		t.Fatalf("opening %s store: %v", b.Name, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, db
}

// containsPlain reports whether raw holds needle as bytes or as hex (how
// PostgreSQL renders bytea).
func containsPlain(raw, needle []byte) bool {
	return bytes.Contains(raw, needle) || bytes.Contains(raw, []byte(hex.EncodeToString(needle)))
}
