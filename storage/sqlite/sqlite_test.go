package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// Backend is the SQLite backend for the conformance suite: a fresh file per
// database; its raw form is the database file plus its WAL.
func Backend() storagetest.Backend {
	return storagetest.Backend{Name: "sqlite", NewDB: func(t *testing.T) storagetest.DB {
		path := filepath.Join(t.TempDir(), "certlocker.db")
		return storagetest.DB{
			Open: func(ctx context.Context, s *storage.Sealer) (storage.Store, error) { return sqlite.Open(ctx, path, s) },
			Raw: func(t *testing.T) []byte {
				var all []byte
				for _, f := range []string{path, path + "-wal"} {
					b, err := os.ReadFile(f)
					if err != nil && !os.IsNotExist(err) {
						t.Fatal(err)
					}
					all = append(all, b...)
				}
				return all
			},
		}
	}}
}

func TestConformance(t *testing.T) { storagetest.Run(t, Backend()) }

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "certlocker.db")
	st, err := sqlite.Open(t.Context(), path, storagetest.NewSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, f := range []string{path, path + "-wal"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(f), fi.Mode().Perm())
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notADB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notADB, []byte("this is not a database, just text that is long enough to be a header......"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"empty path":   "",
		"not a sqlite": notADB,
		"dir is file":  filepath.Join(notADB, "x.db"),
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			st, err := sqlite.Open(t.Context(), path, storagetest.NewSealer(t))
			if err == nil {
				st.Close()
				t.Fatal("opened")
			}
		})
	}
}
