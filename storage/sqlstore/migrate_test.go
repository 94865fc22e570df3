package sqlstore_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/pgtest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/postgres"
	sqlitestore "github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/sqlstore"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// A database from before keys moved holds issued workflows with a copy of
// their certificate's key: migration 6 drops those copies, and only those.
func TestMigrationDropsIssuedKeyCopies(t *testing.T) {
	opens := map[string]func(t *testing.T) func(*storage.Sealer) (storage.Store, error){
		"sqlite": func(t *testing.T) func(*storage.Sealer) (storage.Store, error) {
			path := filepath.Join(t.TempDir(), "certlocker.db")
			return func(s *storage.Sealer) (storage.Store, error) { return sqlitestore.Open(t.Context(), path, s) }
		},
		"postgres": func(t *testing.T) func(*storage.Sealer) (storage.Store, error) {
			dsn := pgtest.DSN(t)
			return func(s *storage.Sealer) (storage.Store, error) { return postgres.Open(t.Context(), dsn, s, 2) }
		},
	}
	for backend, prepare := range opens {
		t.Run(backend, func(t *testing.T) {
			ctx := t.Context()
			open := prepare(t)
			sealer := storagetest.NewSealer(t)
			st, err := open(sealer)
			if err != nil {
				t.Fatal(err)
			}
			iss := &storage.Issuer{Name: "old", DirectoryURL: "https://ca/dir"}
			if err := st.Issuers().Create(ctx, iss); err != nil {
				t.Fatal(err)
			}
			mk := func(name string) *storage.Workflow {
				w := &storage.Workflow{IssuerID: iss.ID, PrivateKey: storage.NewSecret([]byte("key of " + name)),
					Identifiers: []storage.Identifier{{Type: "dns", Value: name}}}
				if err := st.Workflows().Create(ctx, w); err != nil {
					t.Fatal(err)
				}
				return w
			}
			issued, pending := mk("issued.example"), mk("pending.example")
			// as written before: issued, naming its certificate, key kept;
			// and the database back at schema version 5
			db := st.(interface{ SQL() *sql.DB }).SQL()
			for _, q := range []string{
				"UPDATE workflows SET certificate_id = 'crt_old', state = 'issued' WHERE id = '" + issued.ID + "'",
				"DELETE FROM schema_migrations WHERE version >= 6",
			} {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			// undo what the later migrations added, so they apply again
			for _, q := range append(undoAfter6, undo9[backend]...) {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			_ = st.Close()

			st, err = open(sealer)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if h, err := st.Health(ctx); err != nil || h.SchemaVersion != sqlstore.LatestSchemaVersion() {
				t.Fatalf("health %+v, %v", h, err)
			}
			got, err := st.Workflows().Get(ctx, issued.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.PrivateKey.IsZero() {
				t.Fatal("the issued workflow still holds its key after the migration")
			}
			got, err = st.Workflows().Get(ctx, pending.ID)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.PrivateKey.Reveal()) != "key of pending.example" {
				t.Fatal("the migration dropped the key of a workflow still ordering")
			}
		})
	}
}

// undoAfter6 reverts what the migrations after version 6 added that cannot
// be applied twice (both engines); 7 (challenge zone) is idempotent.
var undoAfter6 = []string{
	"DROP TABLE token_accounts",
	"DROP INDEX tokens_url_hash",
	"DROP INDEX tokens_previous_url_hash",
	"ALTER TABLE tokens DROP COLUMN description",
	"ALTER TABLE tokens DROP COLUMN spec",
	"ALTER TABLE tokens DROP COLUMN url_secret",
	"ALTER TABLE tokens DROP COLUMN url_hash",
	"ALTER TABLE tokens DROP COLUMN previous_secret",
	"ALTER TABLE tokens DROP COLUMN previous_url_hash",
	"ALTER TABLE tokens DROP COLUMN grace_until",
}

// undo9 reverts migration 9 (audit group, source, result; the triggers
// that keep the log append-only), per engine.
var undo9 = map[string][]string{
	"sqlite": {
		"DROP TRIGGER audit_no_update",
		"DROP TRIGGER audit_no_delete",
		"DROP INDEX audit_group",
		"DROP INDEX audit_actor",
		"ALTER TABLE audit DROP COLUMN grp",
		"ALTER TABLE audit DROP COLUMN source",
		"ALTER TABLE audit DROP COLUMN result",
	},
	"postgres": {
		"DROP TRIGGER audit_no_change ON audit",
		"DROP TRIGGER audit_no_truncate ON audit",
		"DROP FUNCTION audit_append_only",
		"DROP INDEX audit_group",
		"DROP INDEX audit_actor",
		"ALTER TABLE audit DROP COLUMN grp",
		"ALTER TABLE audit DROP COLUMN source",
		"ALTER TABLE audit DROP COLUMN result",
	},
}
