package admin

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certlocker/caddy-certlocker/internal/acmetest"
	"github.com/certlocker/caddy-certlocker/modules/certlocker"
	"github.com/certlocker/caddy-certlocker/storage"
)

// TestChallengeZoneIssuesWithoutDNSCredentials: Pebble validates dns-01
// for shop.example.com, whose _acme-challenge record is a CNAME (in the
// parent zone, served by the harness DNS server Pebble resolves with) into
// the challenge zone CertLocker serves itself: the order issues through the
// workflow engine with no DNS provider credentials anywhere. A second CA,
// resolving with CertLocker's DNS server directly, validates a name inside
// a private zone CertLocker is authoritative for (direct mode, no CNAME).
// Before the CNAME exists, the workflow is refused naming the record to add.
func TestChallengeZoneIssuesWithoutDNSCredentials(t *testing.T) {
	parent := acmetest.NewDNSServer(t, "example.com")
	zoneAddr := acmetest.FreeDNSAddr(t)
	viaCNAME := acmetest.NewPebble(t, acmetest.PebbleOptions{DNSServer: parent.Addr()})
	direct := acmetest.NewPebble(t, acmetest.PebbleOptions{DNSServer: zoneAddr})
	dir := t.TempDir()
	issuer := func(name string, p *acmetest.Pebble) map[string]any {
		roots := filepath.Join(dir, name+".pem")
		if err := os.WriteFile(roots, p.WFECertPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		return map[string]any{"name": name, "directory_url": p.DirectoryURL(), "agree_terms": true,
			"trusted_roots_pem_files": []string{roots}}
	}
	t.Setenv(certlocker.EnvEncryptionKey, "")
	api, app := testAPI(t, mustJSON(map[string]any{
		"storage": map[string]any{"path": filepath.Join(dir, "c.db")}, "node_id": "n1",
		"issuers": []any{issuer("via-cname", viaCNAME), issuer("direct", direct)},
		"challenge_zones": []any{
			map[string]any{"zone": "acme.example.net", "listen": []string{zoneAddr}, "ns": []string{"ns1.acme.example.net"},
				"addresses": []string{"127.0.0.1"}},
			map[string]any{"zone": "dev.internal", "listen": []string{zoneAddr}, "ns": []string{"ns1.dev.internal"}},
		},
	}))
	if got := app.ChallengeZoneServers(); len(got) != 1 || got[0].Addrs()[0] != zoneAddr {
		t.Fatalf("challenge zone servers %v", got)
	}
	ids := map[string]string{}
	for _, it := range call(t, api, http.MethodGet, "/certlocker/issuers", "").json["items"].([]any) {
		m := it.(map[string]any)
		ids[m["name"].(string)] = m["id"].(string)
	}

	// a delegated provider client takes no credentials
	if r := call(t, api, http.MethodPost, "/certlocker/dns-providers",
		`{"name":"bad","type":"delegated","zones":["acme.example.net"],"credentials":{"api_token":"x"}}`); r.status != 400 || r.json["field"] != "credentials" {
		t.Fatalf("credentials on a delegated provider: %d %s", r.status, r.body)
	}
	r := call(t, api, http.MethodPost, "/certlocker/dns-providers", mustJSON(map[string]any{"name": "zone", "type": "delegated",
		"zones": []string{"acme.example.net", "dev.internal"}, "resolvers": []string{parent.Addr()}, "nameservers": []string{zoneAddr}}))
	if r.status != http.StatusCreated || len(r.json["credential_fields"].([]any)) != 0 {
		t.Fatalf("create delegated: %d %s", r.status, r.body)
	}
	pid := r.json["id"].(string)

	// the CNAME to add, and a workflow refused until it is there
	r = call(t, api, http.MethodGet, "/certlocker/dns-providers/zone/delegation?name=*.shop.example.com", "")
	target, _ := r.json["target"].(string)
	if r.status != 200 || r.json["ok"] != false || r.json["record"] != "_acme-challenge.shop.example.com" ||
		!strings.HasSuffix(target, ".acme.example.net") || r.json["cname"] != "_acme-challenge.shop.example.com. CNAME "+target+"." {
		t.Fatalf("delegation before the CNAME: %d %s", r.status, r.body)
	}
	order := `{"issuer_id":"` + ids["via-cname"] + `","identifiers":[{"value":"shop.example.com","challenge":"dns-01","dns_provider_id":"zone"},` +
		`{"value":"*.shop.example.com","dns_provider_id":"zone"}]}`
	r = call(t, api, http.MethodPost, "/certlocker/workflows", order)
	if msg, _ := r.json["error"].(string); r.status != 400 || r.json["field"] != "identifiers[0].value" ||
		!strings.Contains(msg, "_acme-challenge.shop.example.com is missing") || !strings.Contains(msg, "CNAME "+target+".") {
		t.Fatalf("workflow without the CNAME: %d %s", r.status, r.body)
	}
	if list := call(t, api, http.MethodGet, "/certlocker/workflows", ""); len(list.json["items"].([]any)) != 0 {
		t.Fatalf("a workflow was created: %s", list.body)
	}
	parent.SetCNAME("_acme-challenge.shop.example.com", "elsewhere.example.org", "")
	if r = call(t, api, http.MethodGet, "/certlocker/dns-providers/zone/delegation?name=shop.example.com", ""); r.json["ok"] != false ||
		!strings.Contains(r.json["message"].(string), "points to elsewhere.example.org") {
		t.Fatalf("delegation with a wrong CNAME: %s", r.body)
	}
	parent.SetCNAME("_acme-challenge.shop.example.com", target, zoneAddr)
	if r = call(t, api, http.MethodGet, "/certlocker/dns-providers/zone/delegation?name=shop.example.com", ""); r.json["ok"] != true {
		t.Fatalf("delegation with the CNAME: %s", r.body)
	}

	issue := func(t *testing.T, body string) {
		t.Helper()
		r := call(t, api, http.MethodPost, "/certlocker/workflows", body)
		if r.status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		got := waitState(t, api, app, r.json["id"].(string), storage.StateIssued, storage.StateFailed)
		if got.json["state"] != storage.StateIssued {
			t.Fatalf("workflow: %s", got.body)
		}
	}
	t.Run("through the CNAME", func(t *testing.T) {
		issue(t, order)
		label := strings.TrimSuffix(target, ".acme.example.net")
		if !strings.Contains(strings.Join(queryNames(parent), " "), "_acme-challenge.shop.example.com.") {
			t.Fatalf("Pebble never asked the parent zone: %v", parent.QueryLog())
		}
		// cleaned up like every provider's: no record stored, none served
		if recs, _ := app.DNS().Records(t.Context(), pid); len(recs) != 0 {
			t.Fatalf("%d challenge records left", len(recs))
		}
		// within the node's read cache (500ms by default) the answer may
		// still be the last one read: poll with a deadline
		for deadline := time.Now().Add(10 * time.Second); ; {
			in := exchangeDNS(t, zoneAddr, label+".acme.example.net.", dns.TypeTXT)
			if in.Rcode == dns.RcodeNameError {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after cleanup the label still answers %s", dns.RcodeToString[in.Rcode])
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("acme-dns registration through the admin API", func(t *testing.T) {
		if r := call(t, api, http.MethodPost, "/certlocker/acme-dns/registrations", `{"zone":"example.org"}`); r.status != 400 || r.json["field"] != "zone" {
			t.Fatalf("unserved zone: %d %s", r.status, r.body)
		}
		if r := call(t, api, http.MethodPost, "/certlocker/acme-dns/registrations", `{"zone":"acme.example.net","allowfrom":["nope"]}`); r.status != 400 || r.json["field"] != "allowfrom" {
			t.Fatalf("bad allowfrom: %d %s", r.status, r.body)
		}
		r := call(t, api, http.MethodPost, "/certlocker/acme-dns/registrations", `{"zone":"acme.example.net","allowfrom":["10.0.0.0/8"]}`)
		if r.status != http.StatusCreated || len(r.json["password"].(string)) != 40 ||
			r.json["fulldomain"] != r.json["subdomain"].(string)+".acme.example.net" {
			t.Fatalf("register: %d %s", r.status, r.body)
		}
		entries, _, err := app.AuditLog(t.Context(), storage.AuditFilter{Action: "acme_dns.register"}, storage.Page{})
		if err != nil || len(entries) != 1 || entries[0].Target != r.json["username"] || !strings.HasPrefix(entries[0].Actor, "admin-api") {
			t.Fatalf("audit %v %v", entries, err)
		}
	})
	t.Run("direct in a private zone", func(t *testing.T) {
		issue(t, `{"issuer_id":"`+ids["direct"]+`","identifiers":[{"value":"app.dev.internal","challenge":"dns-01","dns_provider_id":"`+pid+`"}]}`)
		if recs, _ := app.DNS().Records(t.Context(), pid); len(recs) != 0 {
			t.Fatalf("%d challenge records left", len(recs))
		}
		if st := app.ChallengeZoneServers()[0].Stats(); st.Answered == 0 {
			t.Fatalf("CertLocker's DNS server answered nothing: %+v", st)
		}
	})
}

func queryNames(s *acmetest.DNSServer) []string {
	var out []string
	for _, q := range s.QueryLog() {
		out = append(out, q.Name)
	}
	return out
}

func exchangeDNS(t *testing.T, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	in, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	return in
}
