package workflow

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

func TestNextRetry(t *testing.T) {
	now := time.Date(2026, 5, 20, 2, 0, 0, 0, time.UTC)
	p := RetryPolicy{MaxAttempts: 8, BaseDelay: time.Minute, MaxDelay: 10 * time.Minute}
	cases := map[string]struct {
		attempt    int
		problem    string
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
		retry      bool
	}{
		"first failure":               {1, "", 0, 0, time.Minute, true},
		"second doubles":              {2, "urn:ietf:params:acme:error:serverInternal", 0, 0, 2 * time.Minute, true},
		"jitter adds up to a quarter": {2, "", 0, 0.999, 2*time.Minute + 29*time.Second + 970*time.Millisecond, true},
		"below the cap":               {4, "", 0, 0, 8 * time.Minute, true},
		"capped":                      {5, "", 0, 0, 10 * time.Minute, true},
		"capped far out":              {7, "", 0, 0, 10 * time.Minute, true},
		"rate limited honours header": {1, "urn:ietf:params:acme:error:rateLimited", 3 * time.Hour, 0, 3 * time.Hour, true},
		"short Retry-After ignored":   {2, "urn:ietf:params:acme:error:rateLimited", time.Second, 0, 2 * time.Minute, true},
		"out of attempts":             {8, "", 0, 0, 0, false},
		"permanent: unauthorized":     {1, "urn:ietf:params:acme:error:unauthorized", 0, 0, 0, false},
		"permanent: caa":              {1, "urn:ietf:params:acme:error:caa", 0, 0, 0, false},
		"permanent: rejected":         {1, "urn:ietf:params:acme:error:rejectedIdentifier", 0, 0, 0, false},
		"bad nonce retries":           {1, "urn:ietf:params:acme:error:badNonce", 0, 0, time.Minute, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			at, ok := NextRetry(p, c.attempt, c.problem, c.retryAfter, now, c.jitter)
			if ok != c.retry {
				t.Fatalf("retry = %v, want %v", ok, c.retry)
			}
			if ok && at.Sub(now).Round(10*time.Millisecond) != c.want.Round(10*time.Millisecond) {
				t.Fatalf("retry after %v, want %v", at.Sub(now), c.want)
			}
		})
	}
	if _, ok := NextRetry(RetryPolicy{}, 5, "", 0, now, 0); !ok {
		t.Fatal("the default policy gave up after 5 attempts")
	}
	// so many attempts that the doubling overflows: still the cap
	if at, ok := NextRetry(RetryPolicy{MaxAttempts: 100, BaseDelay: time.Minute, MaxDelay: time.Hour}, 90, "", 0, now, 0); !ok || at.Sub(now) != time.Hour {
		t.Fatalf("attempt 90: retry %v after %v, want the 1h cap", ok, at.Sub(now))
	}
}

func TestRequestValidate(t *testing.T) {
	ok := func(ids ...string) Request {
		r := Request{IssuerID: "iss_1"}
		for _, id := range ids {
			r.Identifiers = append(r.Identifiers, parseID(id))
		}
		return r
	}
	cases := map[string]struct {
		r     Request
		field string
	}{
		"plain":                {ok("www.example.com"), ""},
		"wildcard with dns":    {ok("*.example.com dns-01 dns_1"), ""},
		"ip":                   {ok("192.0.2.1"), ""},
		"no issuer":            {Request{Identifiers: ok("a.example.com").Identifiers}, "issuer_id"},
		"no identifiers":       {Request{IssuerID: "iss_1"}, "identifiers"},
		"wildcard over http":   {ok("*.example.com http-01"), "identifiers[0].challenge"},
		"dns without provider": {ok("example.com dns-01"), "identifiers[0].dns_provider_id"},
		"bad label":            {ok("exa_mple..com"), "identifiers[0].value"},
		"inner wildcard":       {ok("a.*.example.com dns-01 dns_1"), "identifiers[0].value"},
		"single label":         {ok("localhost"), "identifiers[0].value"},
		"duplicate":            {ok("a.example.com", "A.example.com."), "identifiers[1].value"},
		"unknown challenge":    {ok("a.example.com tls-alpn-01"), "identifiers[0].challenge"},
		"ip over dns-01":       {ok("192.0.2.1 dns-01 dns_1"), "identifiers[0].challenge"},
		"bad key type":         {Request{IssuerID: "i", KeyType: "dsa", Identifiers: ok("a.example.com").Identifiers}, "key_type"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.r.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			ie, isInvalid := err.(*InvalidError)
			if !isInvalid || ie.Field != c.field {
				t.Fatalf("error %v, want one about %s", err, c.field)
			}
		})
	}
}

// parseID reads "value [challenge [provider]]".
func parseID(s string) (id storageIdentifier) {
	f := splitFields(s)
	id.Value = f[0]
	if len(f) > 1 {
		id.Challenge = f[1]
	}
	if len(f) > 2 {
		id.DNSProviderID = f[2]
	}
	return id
}

func TestServeChallengeMatchesHost(t *testing.T) {
	st := newTestStore(t)
	put := func(token, identifier string) {
		b, _ := json.Marshal(http01Entry{Identifier: identifier, KeyAuth: "ka-" + token})
		if err := st.ACME().Set(t.Context(), HTTP01Bucket, token, b); err != nil {
			t.Fatal(err)
		}
	}
	put("t1", "www.example.com")
	put("t6", "2001:db8::1")
	cases := map[string]struct {
		host, token string
		served      bool
	}{
		"name":                {"www.example.com", "t1", true},
		"name with port":      {"www.example.com:80", "t1", true},
		"name, other case":    {"WWW.example.com.", "t1", true},
		"other name":          {"api.example.com", "t1", false},
		"ipv6 with port":      {"[2001:db8::1]:80", "t6", true},
		"ipv6 without port":   {"[2001:db8::1]", "t6", true},
		"ipv6 other spelling": {"[2001:0db8:0:0::1]", "t6", true},
		"unknown token":       {"www.example.com", "nope", false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/.well-known/acme-challenge/"+c.token, nil)
			r.Host = c.host
			w := httptest.NewRecorder()
			served := ServeChallenge(st, nil, w, r)
			if served != c.served || (served && w.Body.String() != "ka-"+c.token) {
				t.Fatalf("served %v body %q", served, w.Body.String())
			}
		})
	}
}

func TestSuccessorBackoff(t *testing.T) {
	cases := map[int]time.Duration{0: 0, 1: time.Hour, 2: 2 * time.Hour, 3: 4 * time.Hour, 5: 16 * time.Hour,
		6: 24 * time.Hour, 7: 24 * time.Hour, 1000: 24 * time.Hour}
	for n, want := range cases {
		if got := successorBackoff(n); got != want {
			t.Errorf("after %d failures: %v, want %v", n, got, want)
		}
	}
}
