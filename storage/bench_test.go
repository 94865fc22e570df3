package storage_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/storagetest"
)

// BenchmarkStore compares the backends side by side in one run: writes
// (a workflow with its name index, in one transaction; an audit entry) and
// point reads (a workflow by ID, secrets opened), sequential and from 8
// goroutines. Report ops/s = 1e9 / ns/op.
//
//	go test -run '^$' -bench BenchmarkStore -benchtime 2000x ./storage/
func BenchmarkStore(b *testing.B) {
	for _, name := range storagetest.Backends {
		b.Run(name, func(b *testing.B) {
			st := storagetest.OpenStore(b, name, 16)
			iss := &storage.Issuer{Name: "bench", DirectoryURL: "https://ca/dir", AccountKey: storage.NewSecret([]byte("k"))}
			if err := st.Issuers().Create(b.Context(), iss); err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			newWorkflow := func() (*storage.Workflow, error) {
				w := &storage.Workflow{IssuerID: iss.ID, PrivateKey: storage.NewSecret([]byte("private key pem")),
					Identifiers: []storage.Identifier{{Type: "dns", Value: fmt.Sprintf("h%d.example.com", n.Add(1)), Challenge: "dns-01"}}}
				return w, st.Workflows().Create(b.Context(), w)
			}
			b.Run("write_workflow", func(b *testing.B) {
				for b.Loop() {
					if _, err := newWorkflow(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("write_workflow_parallel8", func(b *testing.B) {
				b.SetParallelism(4) // 4 × GOMAXPROCS(2) = 8 goroutines
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := newWorkflow(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			b.Run("write_audit", func(b *testing.B) {
				for b.Loop() {
					if err := st.Audit().Append(b.Context(), &storage.AuditEntry{Action: "bench", Target: "x"}); err != nil {
						b.Fatal(err)
					}
				}
			})
			var ids []string
			for i := 0; i < 1000; i++ {
				w, err := newWorkflow()
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, w.ID)
			}
			b.Run("read_workflow", func(b *testing.B) {
				i := 0
				for b.Loop() {
					if _, err := st.Workflows().Get(b.Context(), ids[i%len(ids)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("read_workflow_parallel8", func(b *testing.B) {
				b.SetParallelism(4)
				var i atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := st.Workflows().Get(b.Context(), ids[int(i.Add(1))%len(ids)]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
