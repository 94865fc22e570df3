package storagetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// testChallengeRecords covers what the DNS provider store adds in schema
// version 3: a provider's last verification, and the cleanup state of the
// challenge records it published, found by workflow after a restart.
func testChallengeRecords(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	dp := st.DNSProviders()

	p := &storage.DNSProvider{Name: "onprem", Type: "rfc2136", Credentials: storage.NewSecret([]byte(`{"key":"tsig-secret"}`)),
		Zones: []string{"corp.example"}}
	must(t, dp.Create(ctx, p))
	if got, _ := dp.Get(ctx, p.ID); len(got.Verification) != 2 || string(got.Verification) != "{}" {
		t.Fatalf("new provider verification = %q, want {}", got.Verification)
	}
	p.Verification = json.RawMessage(`{"ok":false,"checks":[{"name":"zone corp.example","ok":false}]}`)
	p.Status, p.LastMessage = "failed", "zone corp.example: update refused"
	must(t, dp.Update(ctx, p))
	got, err := dp.Get(ctx, p.ID)
	must(t, err)
	if string(got.Verification) != string(p.Verification) || got.Status != "failed" {
		t.Fatalf("verification not kept: %s %s", got.Verification, got.Status)
	}

	base := time.Unix(1_800_000_000, 0).UTC()
	r1 := &storage.ChallengeRecord{ProviderID: p.ID, WorkflowID: "wf_a", Zone: "corp.example", Name: "_acme-challenge.www",
		Type: "TXT", Value: "v1", CreatedAt: base}
	r2 := &storage.ChallengeRecord{ProviderID: p.ID, WorkflowID: "wf_a", Zone: "corp.example", Name: "_acme-challenge",
		Type: "TXT", Value: "v2", CreatedAt: base.Add(time.Second)}
	r3 := &storage.ChallengeRecord{ProviderID: p.ID, WorkflowID: "wf_b", Zone: "corp.example", Name: "_acme-challenge",
		Type: "TXT", Value: "v3", CreatedAt: base.Add(2 * time.Second)}
	for _, r := range []*storage.ChallengeRecord{r3, r1, r2} {
		must(t, dp.PutRecord(ctx, r))
	}

	// published, then a failed cleanup: the upsert keeps both
	r1.PublishedAt, r1.ProviderRecordID = base.Add(500*time.Millisecond), "bind"
	must(t, dp.PutRecord(ctx, r1))
	r1.CleanupAttempts, r1.LastError = 2, "dns response error code REFUSED"
	must(t, dp.PutRecord(ctx, r1))
	g1, err := dp.GetRecord(ctx, r1.ID)
	must(t, err)
	if !g1.PublishedAt.Equal(r1.PublishedAt) || g1.CleanupAttempts != 2 || g1.LastError != r1.LastError ||
		g1.ProviderRecordID != "bind" || !g1.CreatedAt.Equal(base) || g1.WorkflowID != "wf_a" {
		t.Fatalf("record round trip: %+v", g1)
	}
	if g2, _ := dp.GetRecord(ctx, r2.ID); !g2.PublishedAt.IsZero() || g2.CleanupAttempts != 0 {
		t.Fatalf("unpublished record: %+v", g2)
	}

	tests := []struct {
		name string
		wf   string
		want []string
	}{
		{"two records oldest first", "wf_a", []string{r1.ID, r2.ID}},
		{"one record", "wf_b", []string{r3.ID}},
		{"unknown workflow", "wf_none", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := dp.WorkflowRecords(ctx, tc.wf)
			must(t, err)
			if len(recs) != len(tc.want) {
				t.Fatalf("got %d records, want %d", len(recs), len(tc.want))
			}
			for i, r := range recs {
				if r.ID != tc.want[i] {
					t.Fatalf("record %d = %s, want %s", i, r.ID, tc.want[i])
				}
			}
		})
	}

	// older than: the janitor's query
	stale, err := dp.ListRecords(ctx, "", base.Add(1500*time.Millisecond))
	must(t, err)
	if len(stale) != 2 || stale[0].ID != r1.ID || stale[1].ID != r2.ID {
		t.Fatalf("stale records = %d", len(stale))
	}

	must(t, dp.DeleteRecord(ctx, r1.ID))
	must(t, dp.DeleteRecord(ctx, r1.ID)) // forgetting twice is not an error
	wantErr(t, func() error { _, err := dp.GetRecord(ctx, r1.ID); return err }(), storage.ErrNotFound)

	// a transaction that fails keeps no record
	err = st.InTx(ctx, func(tx storage.Store) error {
		if err := tx.DNSProviders().PutRecord(ctx, &storage.ChallengeRecord{ProviderID: p.ID, WorkflowID: "wf_c",
			Zone: "corp.example", Name: "x", Type: "TXT", Value: "v"}); err != nil {
			return err
		}
		return storage.ErrConflict
	})
	wantErr(t, err, storage.ErrConflict)
	if recs, _ := dp.WorkflowRecords(ctx, "wf_c"); len(recs) != 0 {
		t.Fatalf("rolled back record kept: %d", len(recs))
	}
}
