package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/modules/workflow"
	"github.com/certlocker/caddy-certlocker/storage"
	"github.com/certlocker/caddy-certlocker/storage/sqlite"
)

// sseEvent is one Server-Sent Event of a workflow's timeline stream.
type sseEvent struct {
	id, name string
	data     map[string]any
}

// stream reads GET /certlocker/workflows/{id}/events to its end (the
// workflow finished) and returns the status and events.
func stream(t *testing.T, api *API, id, lastEventID string) (int, []sseEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/certlocker/workflows/"+id+"/events", nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	rec := httptest.NewRecorder()
	if err := api.Routes()[0].Handler.ServeHTTP(rec, req); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the event stream of %s did not end", id)
	}
	var evs []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.name != "" {
				evs = append(evs, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
				t.Fatalf("event data %q: %v", line, err)
			}
		}
	}
	if rec.Code == http.StatusOK && (len(evs) == 0 || evs[len(evs)-1].name != "end") {
		t.Fatalf("the stream of %s ended without an end event: %s", id, rec.Body)
	}
	return rec.Code, evs
}

// waitState waits until the workflow's state is one of states, woken by
// the engine's change notifications (not by sleeping).
func waitState(t *testing.T, api *API, app *certlocker.App, id string, states ...string) response {
	t.Helper()
	wake, stop := app.Workflows().Watch(id)
	defer stop()
	deadline := time.After(time.Minute)
	for {
		r := call(t, api, http.MethodGet, "/certlocker/workflows/"+id, "")
		if st, _ := r.json["state"].(string); slices.Contains(states, st) {
			return r
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("workflow %s did not reach %v: %s", id, states, r.body)
		}
	}
}

func TestWorkflowsAPI(t *testing.T) {
	p := acmetest.NewPebble(t, acmetest.PebbleOptions{VAAlwaysValid: true})
	dir := t.TempDir()
	rootsFile := filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(rootsFile, p.WFECertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "https://" + closed.Addr().String() + "/directory"
	closed.Close()
	t.Setenv(certlocker.EnvEncryptionKey, "")
	issuer := func(name, url string) map[string]any {
		return map[string]any{"name": name, "directory_url": url, "contacts": []string{"ops@example.com"},
			"agree_terms": true, "trusted_roots_pem_files": []string{rootsFile}}
	}
	api, app := testAPI(t, mustJSON(map[string]any{
		"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
		"issuers": []any{issuer("pebble", p.DirectoryURL()), issuer("pebble2", p.DirectoryURL()), issuer("dead", deadURL)},
	}))
	ids := map[string]string{}
	for _, it := range call(t, api, http.MethodGet, "/certlocker/issuers", "").json["items"].([]any) {
		m := it.(map[string]any)
		ids[m["name"].(string)] = m["id"].(string)
	}
	if len(ids) != 3 {
		t.Fatalf("issuers %v", ids)
	}

	t.Run("create refusals", func(t *testing.T) {
		cases := map[string]struct{ body, field string }{
			"no issuer":        {`{"identifiers":[{"value":"a.example.test"}]}`, "issuer_id"},
			"unknown issuer":   {`{"issuer_id":"iss_nope","identifiers":[{"value":"a.example.test"}]}`, "issuer_id"},
			"fallback is self": {`{"issuer_id":"` + ids["pebble"] + `","fallback_issuer_ids":["` + ids["pebble"] + `"],"identifiers":[{"value":"a.example.test"}]}`, "fallback_issuer_ids[0]"},
			"unknown fallback": {`{"issuer_id":"` + ids["pebble"] + `","fallback_issuer_ids":["iss_nope"],"identifiers":[{"value":"a.example.test"}]}`, "fallback_issuer_ids[0]"},
			"unknown provider": {`{"issuer_id":"` + ids["pebble"] + `","identifiers":[{"value":"*.example.test","dns_provider_id":"dns_nope"}]}`, "identifiers[0].dns_provider_id"},
			"no identifiers":   {`{"issuer_id":"` + ids["pebble"] + `"}`, "identifiers"},
			"bad key type":     {`{"issuer_id":"` + ids["pebble"] + `","identifiers":[{"value":"a.example.test"}],"key_type":"dsa"}`, "key_type"},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				r := call(t, api, http.MethodPost, "/certlocker/workflows", c.body)
				if msg, _ := r.json["error"].(string); r.status != 400 || r.json["field"] != c.field || msg == "" {
					t.Fatalf("%d %s, want 400 field %q", r.status, r.body, c.field)
				}
			})
		}
	})

	// an order on the CA, to its end
	r := call(t, api, http.MethodPost, "/certlocker/workflows", `{"issuer_id":"`+ids["pebble"]+`","identifiers":[{"value":"a.example.test"}]}`)
	if r.status != http.StatusCreated || r.json["trigger"] != "manual" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	wf1 := r.json["id"].(string)
	status, evs := stream(t, api, wf1, "")
	if status != 200 || evs[len(evs)-1].data["state"] != storage.StateIssued {
		t.Fatalf("stream of %s: %d %v", wf1, status, evs)
	}
	got := waitState(t, api, app, wf1, storage.StateIssued)
	if tl, _ := got.json["timeline"].([]any); len(tl) != len(evs)-1 || got.json["certificate_id"] == nil {
		t.Fatalf("the timeline (%d entries) is not the stream (%d events): %s", len(tl), len(evs)-1, got.body)
	}
	cert1 := got.json["certificate_id"].(string)

	// an order on a CA that cannot be reached
	r = call(t, api, http.MethodPost, "/certlocker/workflows", `{"issuer_id":"`+ids["dead"]+`","identifiers":[{"value":"b.example.test"}]}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create on the dead CA: %d %s", r.status, r.body)
	}
	dead := r.json["id"].(string)
	waitState(t, api, app, dead, storage.StateFailed, storage.StateRetryScheduled)

	t.Run("events", func(t *testing.T) {
		for _, bad := range []string{"abc", "-1", "1.5"} {
			req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/certlocker/workflows/"+wf1+"/events", nil)
			req.Header.Set("Last-Event-ID", bad)
			rec := httptest.NewRecorder()
			_ = api.Routes()[0].Handler.ServeHTTP(rec, req)
			var e Error
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != 400 || e.Field != "Last-Event-ID" || !strings.Contains(e.Message, "sequence number") {
				t.Fatalf("Last-Event-ID %q: %d %s", bad, rec.Code, rec.Body)
			}
		}
		// a reconnect resumes after the last event seen
		status, resumed := stream(t, api, wf1, evs[0].id)
		if status != 200 || len(resumed) != len(evs)-1 || resumed[0].id != evs[1].id {
			t.Fatalf("resumed after %s: %d %v", evs[0].id, status, resumed)
		}
		// and after the end there is nothing more: 204 stops EventSource
		if status, _ := stream(t, api, wf1, evs[len(evs)-2].id); status != http.StatusNoContent {
			t.Fatalf("reconnect after the end: %d", status)
		}
		if status, _ := stream(t, api, "wf_missing", ""); status != 404 {
			t.Fatalf("events of a missing workflow: %d", status)
		}
	})

	t.Run("filters", func(t *testing.T) {
		bad := map[string]string{
			"state=nope": "state", "group=a%20b": "group", "colour=blue": "colour", "limit=0": "limit",
			"limit=1001": "limit", "limit=many": "limit", "cursor=garbage": "cursor",
		}
		for q, field := range bad {
			r := call(t, api, http.MethodGet, "/certlocker/workflows?"+q, "")
			if msg, _ := r.json["error"].(string); r.status != 400 || r.json["field"] != field || msg == "" {
				t.Errorf("?%s: %d %s, want 400 field %q", q, r.status, r.body, field)
			}
		}
		good := map[string][]string{
			"state=issued":                       {wf1},
			"issuer=" + ids["dead"]:              {dead},
			"domain=a.example.test":              {wf1},
			"domain=b.example.test&state=issued": {},
		}
		for q, want := range good {
			r := call(t, api, http.MethodGet, "/certlocker/workflows?"+q, "")
			var gotIDs []string
			for _, it := range r.json["items"].([]any) {
				gotIDs = append(gotIDs, it.(map[string]any)["id"].(string))
			}
			if r.status != 200 || !slices.Equal(gotIDs, want) && !(len(want) == 0 && len(gotIDs) == 0) {
				t.Errorf("?%s: %d %v, want %v", q, r.status, gotIDs, want)
			}
		}
		for q, field := range map[string]string{"since=yesterday": "since", "limit=0": "limit", "cursor=garbage": "cursor"} {
			r := call(t, api, http.MethodGet, "/certlocker/audit?"+q, "")
			if r.status != 400 || r.json["field"] != field {
				t.Errorf("audit ?%s: %d %s, want 400 field %q", q, r.status, r.body, field)
			}
		}
	})

	t.Run("actions", func(t *testing.T) {
		act := func(id, action string) response {
			return call(t, api, http.MethodPost, "/certlocker/workflows/"+id+"/actions/"+action, "")
		}
		if r := act(wf1, "retry"); r.status != 409 || r.json["field"] != "state" || !strings.Contains(r.body, "only a failed or retry-scheduled") {
			t.Fatalf("retry of an issued workflow: %d %s", r.status, r.body)
		}
		if r := act(dead, "renew"); r.status != 409 || r.json["field"] != "state" || !strings.Contains(r.body, "only an issued workflow") {
			t.Fatalf("renew of an unissued workflow: %d %s", r.status, r.body)
		}
		if r := act(dead, "retry"); r.status != 200 || r.json["state"] != storage.StateRetryScheduled || r.json["status"] != "retry requested" {
			t.Fatalf("retry: %d %s", r.status, r.body)
		}
		if r := act(dead, "cancel"); r.status != 200 || r.json["state"] != storage.StateCancelled {
			t.Fatalf("cancel: %d %s", r.status, r.body)
		}
		if r := act(dead, "cancel"); r.status != 409 || r.json["field"] != "state" {
			t.Fatalf("cancel twice: %d %s", r.status, r.body)
		}
		if r := act(dead, "retry"); r.status != 409 || r.json["field"] != "state" {
			t.Fatalf("retry of a cancelled workflow: %d %s", r.status, r.body)
		}
		if r := act(dead, "explode"); r.status != 404 || r.json["field"] != "action" || !strings.Contains(r.body, "use retry, cancel or renew") {
			t.Fatalf("unknown action: %d %s", r.status, r.body)
		}
		for _, a := range []string{"retry", "cancel", "renew"} {
			if r := act("wf_missing", a); r.status != 404 {
				t.Fatalf("%s of a missing workflow: %d %s", a, r.status, r.body)
			}
		}
		if r := call(t, api, http.MethodGet, "/certlocker/workflows/"+wf1+"/actions/renew", ""); r.status != 405 {
			t.Fatalf("GET on an action: %d", r.status)
		}

		r := act(wf1, "renew")
		if r.status != http.StatusCreated || r.json["trigger"] != "renewal" || r.json["previous_certificate_id"] != cert1 ||
			r.json["parent_id"] != wf1 {
			t.Fatalf("renew: %d %s", r.status, r.body)
		}
		renewal := r.json["id"].(string)
		if r := act(wf1, "renew"); r.status != 409 || !strings.Contains(r.body, "already under way") {
			t.Fatalf("second renew: %d %s", r.status, r.body)
		}
		if status, evs := stream(t, api, renewal, ""); status != 200 || evs[len(evs)-1].data["state"] != storage.StateIssued {
			t.Fatalf("renewal: %d %v", status, evs)
		}
		entries, _, err := app.AuditLog(t.Context(), storage.AuditFilter{Target: dead, Result: storage.AuditOK}, storage.Page{})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range entries {
			actions = append(actions, e.Action)
		}
		if strings.Join(actions, ",") != "workflow.cancelled,workflow.retry,workflow.create" {
			t.Fatalf("audit of %s: %v", dead, actions)
		}
	})

	t.Run("migrations", func(t *testing.T) {
		cases := map[string]struct{ body, field string }{
			"no selector":    {`{"to_issuer_id":"` + ids["pebble2"] + `"}`, "from_issuer_id"},
			"no target":      {`{"from_issuer_id":"` + ids["pebble"] + `"}`, "to_issuer_id"},
			"unknown target": {`{"domain":"a.example.test","to_issuer_id":"iss_nope"}`, "to_issuer_id"},
			"unknown source": {`{"from_issuer_id":"iss_nope","to_issuer_id":"` + ids["pebble2"] + `"}`, "from_issuer_id"},
			"same issuer":    {`{"from_issuer_id":"` + ids["pebble"] + `","to_issuer_id":"` + ids["pebble"] + `"}`, "to_issuer_id"},
			"bad pace":       {`{"from_issuer_id":"` + ids["pebble"] + `","to_issuer_id":"` + ids["pebble2"] + `","per_minute":-1}`, "per_minute"},
			"unknown field":  {`{"from":"x"}`, "from"},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				r := call(t, api, http.MethodPost, "/certlocker/migrations", c.body)
				if msg, _ := r.json["error"].(string); r.status != 400 || r.json["field"] != c.field || msg == "" {
					t.Fatalf("%d %s, want 400 field %q", r.status, r.body, c.field)
				}
			})
		}
		if r := call(t, api, http.MethodGet, "/certlocker/migrations", ""); r.status != 405 {
			t.Fatalf("GET: %d", r.status)
		}

		// an imported wildcard cannot move without a DNS provider client
		wild := newCertFixture(t, []string{"*.wild.example.test"}, time.Now().Add(60*24*time.Hour))
		r := call(t, api, http.MethodPost, "/certlocker/certificates", mustJSON(map[string]string{"pem": wild.chain, "group": "legacy"}))
		if r.status != http.StatusCreated {
			t.Fatalf("import: %d %s", r.status, r.body)
		}
		wildID, _ := r.json["certificate"].(map[string]any)["id"].(string)
		r = call(t, api, http.MethodPost, "/certlocker/migrations", `{"group":"legacy","to_issuer_id":"`+ids["pebble2"]+`"}`)
		skipped, _ := r.json["skipped"].([]any)
		if r.status != http.StatusAccepted || len(r.json["workflows"].([]any)) != 0 || len(skipped) != 1 ||
			skipped[0].(map[string]any)["certificate_id"] != wildID || !strings.Contains(r.body, "give dns_provider_id") {
			t.Fatalf("migration of a wildcard: %d %s", r.status, r.body)
		}

		// a store that fails under one certificate: the skip reason does
		// not repeat the error (a second handle on the same SQLite file
		// writes a successor claim that cannot be read)
		plain := newCertFixture(t, []string{"c.example.test"}, time.Now().Add(60*24*time.Hour))
		r = call(t, api, http.MethodPost, "/certlocker/certificates", mustJSON(map[string]string{"pem": plain.chain, "group": "broken"}))
		plainID, _ := r.json["certificate"].(map[string]any)["id"].(string)
		if r.status != http.StatusCreated {
			t.Fatalf("import: %d %s", r.status, r.body)
		}
		keyText, err := os.ReadFile(filepath.Join(dir, "certlocker.key"))
		if err != nil {
			t.Fatal(err)
		}
		key, err := storage.ParseKey(string(keyText))
		if err != nil {
			t.Fatal(err)
		}
		sealer, err := storage.NewSealer(key)
		if err != nil {
			t.Fatal(err)
		}
		other, err := sqlite.Open(t.Context(), filepath.Join(dir, "c.db"), sealer)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if err := other.ACME().Set(t.Context(), workflow.SuccessorBucket, plainID, []byte("garbage")); err != nil {
			t.Fatal(err)
		}
		r = call(t, api, http.MethodPost, "/certlocker/migrations", `{"group":"broken","to_issuer_id":"`+ids["pebble2"]+`"}`)
		skipped, _ = r.json["skipped"].([]any)
		if r.status != http.StatusAccepted || len(skipped) != 1 {
			t.Fatalf("migration over a broken claim: %d %s", r.status, r.body)
		}
		if reason, _ := skipped[0].(map[string]any)["reason"].(string); strings.Contains(reason, "invalid character") ||
			!strings.Contains(reason, "see the log of node n1") {
			t.Fatalf("the skip reason echoes the store's error: %q", reason)
		}

		// the active certificate of "pebble" (the renewal's) moves to "pebble2"
		r = call(t, api, http.MethodPost, "/certlocker/migrations", `{"from_issuer_id":"`+ids["pebble"]+`","to_issuer_id":"`+ids["pebble2"]+`","per_minute":60}`)
		started, _ := r.json["workflows"].([]any)
		if r.status != http.StatusAccepted || len(started) != 1 {
			t.Fatalf("migration: %d %s", r.status, r.body)
		}
		m := started[0].(map[string]any)
		if m["trigger"] != "migration" || m["issuer_id"] != ids["pebble2"] || m["previous_certificate_id"] == cert1 {
			t.Fatalf("migration workflow: %s", r.body)
		}
		if status, evs := stream(t, api, m["id"].(string), ""); status != 200 || evs[len(evs)-1].data["state"] != storage.StateIssued {
			t.Fatalf("migrated order: %d %v", status, evs)
		}
		entries, _, _ := app.AuditLog(t.Context(), storage.AuditFilter{Action: "workflow.migrate"}, storage.Page{})
		if len(entries) != 3 || !strings.Contains(string(entries[0].Details), `"started":1`) {
			t.Fatalf("migration audit: %d entries", len(entries))
		}
	})
}
