package issuers

import (
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// BenchmarkMatchIssuer is the inventory's per-certificate catalog lookup.
func BenchmarkMatchIssuer(b *testing.B) {
	names := []pkix.Name{
		{Organization: []string{"Let's Encrypt"}, CommonName: "R11"},
		{Organization: []string{"Sectigo Limited"}, CommonName: "Sectigo Public Server Authentication CA EV R36"},
		{Organization: []string{"Example Private CA"}, CommonName: "Issuing CA"},
	}
	for i := 0; b.Loop(); i++ {
		MatchIssuer(names[i%len(names)])
	}
}

func BenchmarkParseDirectory(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "directories", "letsencrypt.json"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ParseDirectory(body); err != nil {
			b.Fatal(err)
		}
	}
}

func benchService(b *testing.B, p *acmetest.Pebble) *Service {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "c.db"), storagetest.NewSealer(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return New(st, WithHTTPClient(p.HTTPClient()))
}

// BenchmarkClient is what the workflow engine pays per step to get a ready
// client and account: read the issuer, open the sealed key, build the client.
func BenchmarkClient(b *testing.B) {
	for _, kt := range []string{KeyP256, KeyRSA2048} {
		b.Run(kt, func(b *testing.B) {
			p := acmetest.NewPebble(b, acmetest.PebbleOptions{})
			svc := benchService(b, p)
			spec := Spec{Name: "bench", DirectoryURL: p.DirectoryURL(), AgreeTerms: true, AccountKeyType: kt}
			iss, err := svc.Create(b.Context(), "bench", spec)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, _, err := svc.Client(b.Context(), iss.ID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreate registers a new account at the in-process Pebble (with
// EAB) and stores the issuer, per iteration.
func BenchmarkCreate(b *testing.B) {
	p := acmetest.NewPebble(b, acmetest.PebbleOptions{RequireEAB: true})
	svc := benchService(b, p)
	n := 0
	for b.Loop() {
		n++
		kid := fmt.Sprintf("kid-%d", n)
		b.StopTimer()
		mac := p.NewExternalAccountKey(kid)
		b.StartTimer()
		spec := Spec{Name: fmt.Sprintf("bench-%d", n), DirectoryURL: p.DirectoryURL(), AgreeTerms: true,
			EABKeyID: kid, EABMACKey: storage.NewSecret([]byte(mac))}
		if _, err := svc.Create(b.Context(), "bench", spec); err != nil {
			b.Fatal(err)
		}
	}
}
