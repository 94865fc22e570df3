package storagetest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlstore"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

func newIssuer(t *testing.T, st storage.Store, name string) *storage.Issuer {
	t.Helper()
	iss := &storage.Issuer{Name: name, DirectoryURL: "https://ca.test/dir", Contacts: []string{"mailto:ops@example.com"},
		AccountKey: storage.NewSecret([]byte("-----BEGIN EC PRIVATE KEY----- " + name)), Status: "valid"}
	must(t, st.Issuers().Create(t.Context(), iss))
	return iss
}

func newWorkflow(t *testing.T, st storage.Store, issuerID string, names ...string) *storage.Workflow {
	t.Helper()
	w := &storage.Workflow{IssuerID: issuerID, Trigger: "manual"}
	for _, n := range names {
		w.Identifiers = append(w.Identifiers, storage.Identifier{Type: "dns", Value: n, Challenge: "dns-01"})
	}
	must(t, st.Workflows().Create(t.Context(), w))
	return w
}

func testMigrations(t *testing.T, b Backend) {
	db := b.NewDB(t)
	// two nodes starting together on an empty database
	var wg sync.WaitGroup
	stores := make([]storage.Store, 4)
	errs := make([]error, 4)
	sealer := NewSealer(t)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = db.Open(t.Context(), sealer)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	for i, st := range stores {
		h, err := st.Health(t.Context())
		must(t, err)
		if h.SchemaVersion != sqlstore.LatestSchemaVersion() || h.Backend != b.Name || h.KeyID != sealer.CurrentKeyID() {
			t.Fatalf("node %d health = %+v, want schema %d on %s", i, h, sqlstore.LatestSchemaVersion(), b.Name)
		}
	}
	// and a restart of an up-to-date database migrates nothing
	again, err := db.Open(t.Context(), sealer)
	must(t, err)
	must(t, again.Close())
}

func testIssuers(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	iss := &storage.Issuer{
		Name: "le-prod", CatalogID: "letsencrypt", DirectoryURL: "https://acme-v02.api.letsencrypt.org/directory",
		Contacts: []string{"mailto:a@example.com", "mailto:b@example.com"}, EABKeyID: "kid-1",
		EABMACKey: storage.NewSecret([]byte("mac-key-bytes")), AccountKey: storage.NewSecret([]byte("account-pem")),
		AccountKeyType: "p256", Profile: "shortlived", Group: "platform", Status: "unregistered",
		ManagedBy: storage.ManagedByConfig, Meta: json.RawMessage(`{"profiles":{"classic":"x"}}`),
	}
	must(t, st.Issuers().Create(ctx, iss))
	if iss.ID == "" || iss.Version != 1 || iss.CreatedAt.IsZero() {
		t.Fatalf("create did not fill identity: %+v", iss)
	}
	got, err := st.Issuers().Get(ctx, iss.ID)
	must(t, err)
	if got.Name != iss.Name || string(got.EABMACKey.Reveal()) != "mac-key-bytes" || string(got.AccountKey.Reveal()) != "account-pem" ||
		len(got.Contacts) != 2 || got.Contacts[1] != "mailto:b@example.com" || got.ManagedBy != storage.ManagedByConfig ||
		string(got.Meta) != `{"profiles":{"classic":"x"}}` || !got.CreatedAt.Equal(iss.CreatedAt) {
		t.Fatalf("round trip changed the issuer: %+v", got)
	}
	byName, err := st.Issuers().GetByName(ctx, "le-prod")
	must(t, err)
	if byName.ID != iss.ID {
		t.Fatalf("GetByName returned %s", byName.ID)
	}

	wantErr(t, st.Issuers().Create(ctx, &storage.Issuer{Name: "le-prod", DirectoryURL: "https://x/"}), storage.ErrDuplicate)
	_, err = st.Issuers().Get(ctx, "iss_missing")
	wantErr(t, err, storage.ErrNotFound)

	// optimistic concurrency
	stale := *got
	got.Status, got.LastMessage = "valid", "account created"
	must(t, st.Issuers().Update(ctx, got))
	if got.Version != 2 {
		t.Fatalf("version after update = %d", got.Version)
	}
	stale.Status = "error"
	wantErr(t, st.Issuers().Update(ctx, &stale), storage.ErrConflict)
	again, _ := st.Issuers().Get(ctx, iss.ID)
	if again.Status != "valid" || again.LastMessage != "account created" {
		t.Fatalf("stale update leaked: %+v", again)
	}
	missing := &storage.Issuer{ID: "iss_missing", Name: "nope", DirectoryURL: "https://x/", Version: 1}
	wantErr(t, st.Issuers().Update(ctx, missing), storage.ErrNotFound)

	// lists and filters
	newIssuer(t, st, "gts")
	all, err := st.Issuers().List(ctx, storage.IssuerFilter{})
	must(t, err)
	if len(all) != 2 || all[0].Name != "gts" || all[1].Name != "le-prod" {
		t.Fatalf("list = %v", names(all))
	}
	cfg, err := st.Issuers().List(ctx, storage.IssuerFilter{ManagedBy: storage.ManagedByConfig, Group: "platform"})
	must(t, err)
	if len(cfg) != 1 || cfg[0].ID != iss.ID {
		t.Fatalf("filtered list = %v", names(cfg))
	}

	// in use by a workflow: refused, then allowed once the workflow is gone
	newWorkflow(t, st, iss.ID, "example.com")
	wantErr(t, st.Issuers().Delete(ctx, iss.ID), storage.ErrInUse)
	if _, err := st.Issuers().Get(ctx, iss.ID); err != nil {
		t.Fatalf("refused delete removed the issuer: %v", err)
	}
	gts, _ := st.Issuers().GetByName(ctx, "gts")
	must(t, st.Issuers().Delete(ctx, gts.ID))
	wantErr(t, st.Issuers().Delete(ctx, gts.ID), storage.ErrNotFound)
}

func names(is []*storage.Issuer) []string {
	var out []string
	for _, i := range is {
		out = append(out, i.Name)
	}
	return out
}

func testDNSProviders(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	p := &storage.DNSProvider{Name: "cf-main", Type: "cloudflare", Credentials: storage.NewSecret([]byte(`{"api_token":"cf-secret"}`)),
		Zones: []string{"example.com", "example.net"}, AccountID: "acct", Group: "web", TTL: 2 * time.Minute,
		Settings: json.RawMessage(`{"resolvers":["1.1.1.1:53"]}`)}
	must(t, st.DNSProviders().Create(ctx, p))
	got, err := st.DNSProviders().Get(ctx, p.ID)
	must(t, err)
	if string(got.Credentials.Reveal()) != `{"api_token":"cf-secret"}` || got.TTL != 2*time.Minute || len(got.Zones) != 2 ||
		got.AccountID != "acct" || string(got.Settings) != `{"resolvers":["1.1.1.1:53"]}` {
		t.Fatalf("round trip changed the provider: %+v", got)
	}
	wantErr(t, st.DNSProviders().Create(ctx, &storage.DNSProvider{Name: "cf-main", Type: "cloudflare"}), storage.ErrDuplicate)
	got.Status, got.VerifiedAt = "verified", time.Unix(1700000000, 0).UTC()
	must(t, st.DNSProviders().Update(ctx, got))
	got2, _ := st.DNSProviders().GetByName(ctx, "cf-main")
	if got2.Status != "verified" || !got2.VerifiedAt.Equal(got.VerifiedAt) || got2.Version != 2 {
		t.Fatalf("update not kept: %+v", got2)
	}
	list, err := st.DNSProviders().List(ctx, "web")
	must(t, err)
	if len(list) != 1 {
		t.Fatalf("list by group = %d", len(list))
	}
	if list, _ := st.DNSProviders().List(ctx, "other"); len(list) != 0 {
		t.Fatalf("list by other group = %d", len(list))
	}

	// challenge records: stored before publishing, found after a restart
	old := &storage.ChallengeRecord{ProviderID: p.ID, WorkflowID: "wf_1", Zone: "example.com", Name: "_acme-challenge",
		Type: "TXT", Value: "abc", CreatedAt: time.Now().Add(-time.Hour)}
	must(t, st.DNSProviders().PutRecord(ctx, old))
	old.ProviderRecordID = "cf-rec-1"
	must(t, st.DNSProviders().PutRecord(ctx, old)) // upsert once the provider answered
	fresh := &storage.ChallengeRecord{ProviderID: p.ID, Zone: "example.com", Name: "_acme-challenge.www", Type: "TXT", Value: "def"}
	must(t, st.DNSProviders().PutRecord(ctx, fresh))
	recs, err := st.DNSProviders().ListRecords(ctx, p.ID, time.Now().Add(-time.Minute))
	must(t, err)
	if len(recs) != 1 || recs[0].ID != old.ID || recs[0].ProviderRecordID != "cf-rec-1" {
		t.Fatalf("stale records = %+v", recs)
	}
	all, _ := st.DNSProviders().ListRecords(ctx, "", time.Time{})
	if len(all) != 2 {
		t.Fatalf("all records = %d", len(all))
	}
	must(t, st.DNSProviders().DeleteRecord(ctx, old.ID))
	// a provider with a record still to clean up cannot be deleted, and a
	// record cannot name a provider that does not exist
	wantErr(t, st.DNSProviders().Delete(ctx, p.ID), storage.ErrInUse)
	wantErr(t, st.DNSProviders().PutRecord(ctx, &storage.ChallengeRecord{ProviderID: "dns_missing", Zone: "example.com",
		Name: "_acme-challenge", Type: "TXT", Value: "x"}), storage.ErrNotFound)
	must(t, st.DNSProviders().DeleteRecord(ctx, fresh.ID))
	must(t, st.DNSProviders().Delete(ctx, p.ID))
	wantErr(t, st.DNSProviders().Delete(ctx, p.ID), storage.ErrNotFound)
}

func testWorkflows(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	iss := newIssuer(t, st, "le")
	other := newIssuer(t, st, "gts")

	_, err := st.Workflows().Get(ctx, "wf_missing")
	wantErr(t, err, storage.ErrNotFound)
	wantErr(t, st.Workflows().Create(ctx, &storage.Workflow{IssuerID: "iss_missing",
		Identifiers: []storage.Identifier{{Type: "dns", Value: "a.test"}}}), storage.ErrNotFound)

	w := &storage.Workflow{IssuerID: iss.ID, Trigger: "manual", Group: "web", KeyType: "p256", Profile: "classic",
		Identifiers: []storage.Identifier{{Type: "dns", Value: "*.Example.com", Challenge: "dns-01", DNSProviderID: "dns_1"},
			{Type: "dns", Value: "example.com", Challenge: "http-01"}},
		PrivateKey: storage.NewSecret([]byte("cert-key-pem")), Data: json.RawMessage(`{"authz":["u1"]}`)}
	must(t, st.Workflows().Create(ctx, w))
	if w.State != storage.StatePending {
		t.Fatalf("default state = %q", w.State)
	}
	got, err := st.Workflows().Get(ctx, w.ID)
	must(t, err)
	if len(got.Identifiers) != 2 || got.Identifiers[0].DNSProviderID != "dns_1" || string(got.PrivateKey.Reveal()) != "cert-key-pem" ||
		string(got.Data) != `{"authz":["u1"]}` || got.Group != "web" {
		t.Fatalf("round trip changed the workflow: %+v", got)
	}
	got.State, got.OrderURL, got.Attempt = storage.StateOrdering, "https://ca/order/1", 1
	must(t, st.Workflows().Update(ctx, got))
	stale := *w
	stale.State = storage.StateFailed
	wantErr(t, st.Workflows().Update(ctx, &stale), storage.ErrConflict)

	// 30 more workflows to page through, across issuers and states
	for i := 0; i < 30; i++ {
		issuer := iss.ID
		if i%3 == 0 {
			issuer = other.ID
		}
		newWorkflow(t, st, issuer, fmt.Sprintf("host%02d.example.com", i))
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		page, next, err := st.Workflows().List(ctx, storage.WorkflowFilter{}, storage.Page{Cursor: cursor, Limit: 7})
		must(t, err)
		pages++
		for _, wf := range page {
			if seen[wf.ID] {
				t.Fatalf("workflow %s listed twice", wf.ID)
			}
			seen[wf.ID] = true
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != 31 || pages != 5 {
		t.Fatalf("paged %d workflows in %d pages, want 31 in 5", len(seen), pages)
	}
	cases := map[string]struct {
		f    storage.WorkflowFilter
		want int
	}{
		"by issuer":          {storage.WorkflowFilter{IssuerID: other.ID}, 10},
		"by state":           {storage.WorkflowFilter{State: storage.StateOrdering}, 1},
		"by domain":          {storage.WorkflowFilter{Domain: "EXAMPLE.com"}, 1},
		"by wildcard domain": {storage.WorkflowFilter{Domain: "*.example.com"}, 1},
		"by group":           {storage.WorkflowFilter{Group: "web"}, 1},
		"no match":           {storage.WorkflowFilter{Domain: "nope.example"}, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			list, _, err := st.Workflows().List(ctx, c.f, storage.Page{})
			must(t, err)
			if len(list) != c.want {
				t.Fatalf("got %d workflows, want %d", len(list), c.want)
			}
		})
	}
	_, _, err = st.Workflows().List(ctx, storage.WorkflowFilter{}, storage.Page{Cursor: "!!not-a-cursor"})
	wantErr(t, err, storage.ErrInvalidCursor)
	_, _, err = st.Certificates().List(ctx, storage.CertificateFilter{}, storage.Page{Cursor: encodeTestCursor("x")})
	wantErr(t, err, storage.ErrInvalidCursor)
	counts, err := st.Workflows().CountByState(ctx)
	must(t, err)
	if counts[storage.StatePending] != 30 || counts[storage.StateOrdering] != 1 {
		t.Fatalf("counts = %v", counts)
	}
}

// A node with no free slot for some ACME clients leases only the others'
// work, and leaves that work unleased for other nodes.
func testLeaseSkipsIssuers(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	full, busy, free := newIssuer(t, st, "full"), newIssuer(t, st, "busy"), newIssuer(t, st, "free")
	want := map[string]bool{}
	for i := 0; i < 3; i++ {
		newWorkflow(t, st, full.ID, fmt.Sprintf("f%d.example.com", i))
		newWorkflow(t, st, busy.ID, fmt.Sprintf("b%d.example.com", i))
		want[newWorkflow(t, st, free.ID, fmt.Sprintf("o%d.example.com", i)).ID] = true
	}
	at := time.Now()
	got, err := st.Workflows().Acquire(ctx, "node-a", at, time.Minute, 100, full.ID, busy.ID)
	must(t, err)
	if len(got) != len(want) {
		t.Fatalf("acquired %d workflows skipping two ACME clients, want %d", len(got), len(want))
	}
	for _, w := range got {
		if !want[w.ID] {
			t.Fatalf("acquired %s of ACME client %s, which was to be skipped", w.ID, w.IssuerID)
		}
	}
	// the skipped ones are free for another node
	got, err = st.Workflows().Acquire(ctx, "node-b", at, time.Minute, 100)
	must(t, err)
	if len(got) != 6 {
		t.Fatalf("another node acquired %d of the skipped workflows, want 6", len(got))
	}
}

func testLeases(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	iss := newIssuer(t, st, "le")
	const n = 40
	for i := 0; i < n; i++ {
		newWorkflow(t, st, iss.ID, fmt.Sprintf("h%d.example.com", i))
	}
	done := newWorkflow(t, st, iss.ID, "done.example.com")
	done.State = storage.StateIssued
	must(t, st.Workflows().Update(ctx, done))
	later := newWorkflow(t, st, iss.ID, "later.example.com")
	at := time.Now()
	later.NextRunAt = at.Add(time.Hour)
	must(t, st.Workflows().Update(ctx, later))

	// four nodes grab work at once: every due workflow goes to exactly one
	var mu sync.Mutex
	owners := map[string]string{}
	var wg sync.WaitGroup
	for node := 0; node < 4; node++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("node-%d", node)
			for {
				got, err := st.Workflows().Acquire(ctx, owner, at, time.Minute, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, w := range got {
					if prev, ok := owners[w.ID]; ok {
						t.Errorf("workflow %s leased to %s and %s", w.ID, prev, owner)
					}
					if w.LeaseOwner != owner {
						t.Errorf("returned lease owner %q, want %q", w.LeaseOwner, owner)
					}
					owners[w.ID] = owner
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(owners) != n {
		t.Fatalf("%d workflows leased, want %d (terminal and future ones excluded)", len(owners), n)
	}
	if _, ok := owners[done.ID]; ok {
		t.Fatal("a terminal workflow was leased")
	}
	if _, ok := owners[later.ID]; ok {
		t.Fatal("a workflow not yet due was leased")
	}

	var id, owner string
	for id, owner = range owners {
		break
	}
	w, err := st.Workflows().Get(ctx, id)
	must(t, err)
	if w.LeaseOwner != owner {
		t.Fatalf("stored lease owner %q, want %q", w.LeaseOwner, owner)
	}
	wantErr(t, st.Workflows().Renew(ctx, id, "intruder", at.Add(time.Hour)), storage.ErrConflict)
	must(t, st.Workflows().Renew(ctx, id, owner, at.Add(2*time.Minute)))

	// an update by a node that lost the lease is refused
	w.LeaseOwner = "intruder"
	w.State = storage.StateFailed
	wantErr(t, st.Workflows().Update(ctx, w), storage.ErrConflict)
	w.LeaseOwner = owner
	w.State = storage.StateOrdering
	must(t, st.Workflows().Update(ctx, w))

	// the owner dies: once its lease expires another node takes over
	if got, _ := st.Workflows().Acquire(ctx, "node-9", at.Add(time.Minute), time.Minute, 100); len(got) != 0 {
		t.Fatalf("node-9 took %d workflows before the leases expired", len(got))
	}
	got, err := st.Workflows().Acquire(ctx, "node-9", at.Add(3*time.Minute), time.Minute, 100)
	must(t, err)
	if len(got) != n {
		t.Fatalf("takeover acquired %d, want %d", len(got), n)
	}
	must(t, st.Workflows().Release(ctx, id, "node-9"))
	wantErr(t, st.Workflows().Release(ctx, id, "node-9"), storage.ErrConflict)
	wantErr(t, st.Workflows().Renew(ctx, "wf_missing", "node-9", at), storage.ErrNotFound)
}

func testEvents(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	iss := newIssuer(t, st, "le")
	w := newWorkflow(t, st, iss.ID, "example.com")
	problem := json.RawMessage(`{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","subproblems":[]}`)
	ev := &storage.WorkflowEvent{WorkflowID: w.ID, Node: "n1", State: storage.StateRetryScheduled, Step: "ordering",
		Message: "rate limited", Duration: 1500 * time.Millisecond, Problem: problem, RetryAfter: time.Hour}
	must(t, st.Workflows().AppendEvent(ctx, ev))
	if ev.Seq != 1 {
		t.Fatalf("first seq = %d", ev.Seq)
	}
	// concurrent appends get distinct, gapless sequence numbers
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- st.Workflows().AppendEvent(ctx, &storage.WorkflowEvent{WorkflowID: w.ID, Message: fmt.Sprint(i)})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	evs, err := st.Workflows().Events(ctx, w.ID, 0, 0)
	must(t, err)
	if len(evs) != 21 {
		t.Fatalf("%d events, want 21", len(evs))
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
	first := evs[0]
	if string(first.Problem) != string(problem) || first.RetryAfter != time.Hour || first.Duration != 1500*time.Millisecond ||
		first.State != storage.StateRetryScheduled || first.Node != "n1" || first.Time.IsZero() {
		t.Fatalf("event round trip: %+v", first)
	}
	tail, err := st.Workflows().Events(ctx, w.ID, 19, 0)
	must(t, err)
	if len(tail) != 2 || tail[0].Seq != 20 {
		t.Fatalf("events after 19 = %d", len(tail))
	}
	wantErr(t, st.Workflows().AppendEvent(ctx, &storage.WorkflowEvent{WorkflowID: "wf_missing"}), storage.ErrNotFound)
}

func newCert(i int, notAfter time.Time, names ...string) *storage.Certificate {
	return &storage.Certificate{Fingerprint: fmt.Sprintf("%064x", i), CommonName: names[0], Names: names,
		Serial: fmt.Sprintf("%x", i), NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter,
		KeyType: "ECDSA P-256", Rating: "A", Status: "active", ChainPEM: "-----BEGIN CERTIFICATE-----\n..."}
}

func testCertificates(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	base := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newCert(1, base, "example.com", "*.example.com", "192.0.2.1")
	c.PrivateKey = storage.NewSecret([]byte("leaf-key"))
	c.IssuerID, c.Group, c.Meta = "iss_1", "web", json.RawMessage(`{"sans":3}`)
	must(t, st.Certificates().Put(ctx, c))
	got, err := st.Certificates().Get(ctx, c.ID)
	must(t, err)
	if string(got.PrivateKey.Reveal()) != "leaf-key" || !got.NotAfter.Equal(base) || len(got.Names) != 3 || got.Group != "web" {
		t.Fatalf("round trip changed the certificate: %+v", got)
	}
	byFP, err := st.Certificates().GetByFingerprint(ctx, c.Fingerprint)
	must(t, err)
	if byFP.ID != c.ID {
		t.Fatal("GetByFingerprint found another certificate")
	}
	// a duplicate import changes nothing and names the existing one
	dup := newCert(1, base.Add(time.Hour), "other.example")
	wantErr(t, st.Certificates().Put(ctx, dup), storage.ErrDuplicate)
	if dup.ID != c.ID {
		t.Fatalf("duplicate put returned id %q, want %q", dup.ID, c.ID)
	}

	for i := 2; i <= 120; i++ {
		cert := newCert(i, base.Add(time.Duration(i%40)*24*time.Hour), fmt.Sprintf("h%d.example.net", i))
		if i%4 == 0 {
			cert.IssuerID = "iss_2"
		}
		must(t, st.Certificates().Put(ctx, cert))
	}
	// pages cover every certificate once, in expiry order
	var all []*storage.Certificate
	cursor := ""
	for {
		page, next, err := st.Certificates().List(ctx, storage.CertificateFilter{}, storage.Page{Cursor: cursor, Limit: 50})
		must(t, err)
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(all) != 120 {
		t.Fatalf("paged %d certificates, want 120", len(all))
	}
	if !sort.SliceIsSorted(all, func(i, j int) bool { return all[i].NotAfter.Before(all[j].NotAfter) }) {
		t.Fatal("certificates not in expiry order")
	}
	ids := map[string]bool{}
	for _, c := range all {
		ids[c.ID] = true
	}
	if len(ids) != 120 {
		t.Fatalf("%d distinct certificates in the pages", len(ids))
	}
	cases := map[string]struct {
		f    storage.CertificateFilter
		want int
	}{
		"by domain":    {storage.CertificateFilter{Domain: "EXAMPLE.COM"}, 1},
		"by wildcard":  {storage.CertificateFilter{Domain: "*.example.com"}, 1},
		"by ip":        {storage.CertificateFilter{Domain: "192.0.2.1"}, 1},
		"by issuer":    {storage.CertificateFilter{IssuerID: "iss_2"}, 30},
		"expiring":     {storage.CertificateFilter{NotAfterBefore: base.Add(24 * time.Hour)}, 4},
		"by group":     {storage.CertificateFilter{Group: "web"}, 1},
		"by rating":    {storage.CertificateFilter{Rating: "F"}, 0},
		"issuer+group": {storage.CertificateFilter{IssuerID: "iss_1", Group: "web"}, 1},
	}
	for name, cs := range cases {
		t.Run(name, func(t *testing.T) {
			list, _, err := st.Certificates().List(ctx, cs.f, storage.Page{Limit: 500})
			must(t, err)
			if len(list) != cs.want {
				t.Fatalf("got %d, want %d", len(list), cs.want)
			}
		})
	}
	got.Rating, got.Status = "B", "revoked"
	must(t, st.Certificates().Update(ctx, got))
	stale := *c
	wantErr(t, st.Certificates().Update(ctx, &stale), storage.ErrConflict)

	tok := &storage.Token{CertificateID: c.ID, Names: []string{"example.com"}, Status: "active"}
	must(t, st.Tokens().Create(ctx, tok))
	wantErr(t, st.Certificates().Delete(ctx, c.ID), storage.ErrInUse)
	tok.Status = "revoked"
	must(t, st.Tokens().Update(ctx, tok))
	must(t, st.Certificates().Delete(ctx, c.ID))
	if list, _, _ := st.Certificates().List(ctx, storage.CertificateFilter{Domain: "example.com"}, storage.Page{}); len(list) != 0 {
		t.Fatal("names of a deleted certificate still match")
	}
	wantErr(t, st.Certificates().Delete(ctx, c.ID), storage.ErrNotFound)
}

func testTokens(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	tok := &storage.Token{Name: "haproxy-edge", CertificateID: "crt_1", Names: []string{"*.example.com"},
		Secret: storage.NewSecret([]byte("hmac-secret")), Group: "edge", Status: "active", ExpiresAt: time.Unix(1900000000, 0)}
	must(t, st.Tokens().Create(ctx, tok))
	got, err := st.Tokens().Get(ctx, tok.ID)
	must(t, err)
	if got.Type != storage.TokenTypeCertificate || string(got.Secret.Reveal()) != "hmac-secret" ||
		got.Names[0] != "*.example.com" || !got.ExpiresAt.Equal(tok.ExpiresAt) {
		t.Fatalf("round trip changed the token: %+v", got)
	}
	got.Status, got.RevokedAt = "revoked", time.Now()
	must(t, st.Tokens().Update(ctx, got))
	list, err := st.Tokens().List(ctx, storage.TokenFilter{Status: "revoked", CertificateID: "crt_1"})
	must(t, err)
	if len(list) != 1 || list[0].RevokedAt.IsZero() {
		t.Fatalf("list = %+v", list)
	}
	must(t, st.Tokens().Delete(ctx, tok.ID))
	_, err = st.Tokens().Get(ctx, tok.ID)
	wantErr(t, err, storage.ErrNotFound)

	t.Run("gateway fields and accounts", func(t *testing.T) {
		tok := &storage.Token{ID: "ctk_1", Names: []string{"a.example.com"}, Status: "active",
			Secret: storage.NewSecret([]byte("mac")), URLSecret: storage.NewSecret([]byte("url")), URLHash: "h1",
			Spec: storage.TokenSpec{IssuerID: "iss_1", MaxAccounts: 2, AllowedCurves: []string{"P-256"},
				Identifiers: []storage.Identifier{{Type: "dns", Value: "a.example.com", Challenge: "http-01"}}}}
		must(t, st.Tokens().Create(ctx, tok))
		got, err := st.Tokens().GetByURLHash(ctx, "h1")
		must(t, err)
		if got.ID != tok.ID || string(got.URLSecret.Reveal()) != "url" || got.Spec.IssuerID != "iss_1" ||
			len(got.Spec.Identifiers) != 1 || got.Spec.Identifiers[0].Challenge != "http-01" {
			t.Fatalf("round trip changed the token: %+v", got)
		}
		// a rotation keeps the previous secrets findable during its grace
		got.PreviousSecret, got.PreviousURLHash, got.GraceUntil = got.Secret, got.URLHash, time.Unix(1900000000, 0)
		got.Secret, got.URLSecret, got.URLHash = storage.NewSecret([]byte("mac2")), storage.NewSecret([]byte("url2")), "h2"
		must(t, st.Tokens().Update(ctx, got))
		for _, h := range []string{"h1", "h2"} {
			if g, err := st.Tokens().GetByURLHash(ctx, h); err != nil || g.ID != tok.ID || string(g.PreviousSecret.Reveal()) != "mac" {
				t.Fatalf("by hash %s: %v %+v", h, err, g)
			}
		}
		_, err = st.Tokens().GetByURLHash(ctx, "nope")
		wantErr(t, err, storage.ErrNotFound)

		must(t, st.Tokens().BindAccount(ctx, tok.ID, "acct1", 2))
		must(t, st.Tokens().BindAccount(ctx, tok.ID, "acct1", 2)) // again: no-op
		must(t, st.Tokens().BindAccount(ctx, tok.ID, "acct2", 2))
		wantErr(t, st.Tokens().BindAccount(ctx, tok.ID, "acct3", 2), storage.ErrLimit)
		other := &storage.Token{ID: "ctk_2", Status: "active"}
		must(t, st.Tokens().Create(ctx, other))
		wantErr(t, st.Tokens().BindAccount(ctx, other.ID, "acct1", 2), storage.ErrConflict)
		wantErr(t, st.Tokens().BindAccount(ctx, "ctk_none", "acct9", 2), storage.ErrNotFound)
		accts, err := st.Tokens().Accounts(ctx, tok.ID)
		must(t, err)
		if len(accts) != 2 || accts[0].AccountID != "acct1" || accts[1].AccountID != "acct2" {
			t.Fatalf("accounts = %+v", accts)
		}
		if id, err := st.Tokens().AccountToken(ctx, "acct2"); err != nil || id != tok.ID {
			t.Fatalf("account token = %q, %v", id, err)
		}
		must(t, st.Tokens().Delete(ctx, tok.ID))
		_, err = st.Tokens().AccountToken(ctx, "acct2")
		wantErr(t, err, storage.ErrNotFound)
		// the binding went with the token: the account can be bound anew
		must(t, st.Tokens().BindAccount(ctx, other.ID, "acct1", 2))
	})
}

func testAudit(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	for i := 0; i < 25; i++ {
		action := "issuer.create"
		if i%5 == 0 {
			action = "certificate.export"
		}
		must(t, st.Audit().Append(ctx, &storage.AuditEntry{Actor: "alice", Action: action, Target: fmt.Sprintf("iss_%d", i%2),
			Node: "n1", Details: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}))
	}
	if err := st.Audit().Append(ctx, &storage.AuditEntry{}); err == nil {
		t.Fatal("an audit entry without action was accepted")
	}
	var seen []*storage.AuditEntry
	cursor := ""
	for {
		page, next, err := st.Audit().List(ctx, storage.AuditFilter{}, storage.Page{Cursor: cursor, Limit: 10})
		must(t, err)
		seen = append(seen, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != 25 || string(seen[0].Details) != `{"i":24}` || string(seen[24].Details) != `{"i":0}` {
		t.Fatalf("audit pages: %d entries, newest %s", len(seen), seen[0].Details)
	}
	exports, _, err := st.Audit().List(ctx, storage.AuditFilter{Action: "certificate.export", Target: "iss_0", Actor: "alice"}, storage.Page{})
	must(t, err)
	if len(exports) != 3 { // i = 0, 10, 20
		t.Fatalf("filtered audit = %d entries, want 3", len(exports))
	}
	future, _, err := st.Audit().List(ctx, storage.AuditFilter{Since: time.Now().Add(time.Hour)}, storage.Page{})
	must(t, err)
	if len(future) != 0 {
		t.Fatalf("entries since the future = %d", len(future))
	}
}

// encodeTestCursor makes a well-formed base64 cursor with wrong content.
func encodeTestCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
