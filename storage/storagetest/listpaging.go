package storagetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// The ACME client, DNS provider and token lists page in the query, with a
// set of groups kept by the query itself: a user of groups A and C gets
// full pages and exact Previous / Next whatever group B's rows lie
// between.
func testListPaging(t *testing.T, b Backend) {
	st, _ := open(t, b)
	ctx := t.Context()
	groups := []string{"A", "B", "C"}
	var issAC, dnsAC, tokAC, tokActive, tokExpired []string
	now := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < 31; i++ {
		g := groups[i%3]
		// names out of insertion order, so that name order is not ID order
		name := fmt.Sprintf("n%02d", (i*11)%31)
		iss := &storage.Issuer{Name: "iss-" + name, DirectoryURL: "https://ca.example/dir", Group: g, Status: "ready"}
		must(t, st.Issuers().Create(ctx, iss))
		p := &storage.DNSProvider{Name: "dns-" + name, Type: "cloudflare", Zones: []string{"example.com"}, Group: g}
		must(t, st.DNSProviders().Create(ctx, p))
		tok := &storage.Token{Name: "tok-" + name, Names: []string{name + ".example.com"}, Group: g, Status: "active",
			Secret: storage.NewSecret([]byte("s")), URLHash: "h" + name}
		if i%4 == 0 {
			tok.ExpiresAt = now.Add(-time.Hour)
		} else if i%4 == 1 {
			tok.ExpiresAt = now.Add(time.Hour)
		}
		must(t, st.Tokens().Create(ctx, tok))
		if g == "B" {
			continue
		}
		issAC = append(issAC, iss.Name+" "+iss.ID)
		dnsAC = append(dnsAC, p.Name+" "+p.ID)
		tokAC = append(tokAC, tok.ID)
		if i%4 == 0 {
			tokExpired = append(tokExpired, tok.ID)
		} else {
			tokActive = append(tokActive, tok.ID)
		}
	}
	slices.Sort(issAC)
	slices.Sort(dnsAC)
	slices.Sort(tokAC)
	ids := func(keys []string) []string {
		out := make([]string, len(keys))
		for i, k := range keys {
			_, out[i], _ = strings.Cut(k, " ")
		}
		return out
	}
	ac := []string{"A", "C"}
	t.Run("issuers", func(t *testing.T) {
		list := pageIDs(t, "ACME client", func(p storage.Page) ([]*storage.Issuer, string, error) {
			return st.Issuers().ListPage(ctx, storage.IssuerFilter{Groups: ac}, p)
		}, func(i *storage.Issuer) (string, string) { return i.ID, i.Group })
		for _, limit := range []int{1, 4, 7, 21, 50} {
			checkPaging(t, list, limit, ids(issAC))
		}
		is, next, err := st.Issuers().ListPage(ctx, storage.IssuerFilter{Group: "B"}, storage.Page{Limit: 100})
		must(t, err)
		if len(is) != 10 || next != "" {
			t.Fatalf("group B: %d ACME clients, next %q", len(is), next)
		}
		if is, _, err := st.Issuers().ListPage(ctx, storage.IssuerFilter{Groups: []string{}}, storage.Page{}); err != nil || len(is) != 0 {
			t.Fatalf("an empty group set listed %d ACME clients (%v)", len(is), err)
		}
		_, _, err = st.Issuers().ListPage(ctx, storage.IssuerFilter{}, storage.Page{Cursor: "not-a-cursor"})
		wantErr(t, err, storage.ErrInvalidCursor)
	})
	t.Run("dns_providers", func(t *testing.T) {
		list := pageIDs(t, "DNS provider", func(p storage.Page) ([]*storage.DNSProvider, string, error) {
			return st.DNSProviders().ListPage(ctx, storage.DNSProviderFilter{Groups: ac}, p)
		}, func(d *storage.DNSProvider) (string, string) { return d.ID, d.Group })
		for _, limit := range []int{1, 4, 7, 21, 50} {
			checkPaging(t, list, limit, ids(dnsAC))
		}
		ps, _, err := st.DNSProviders().ListPage(ctx, storage.DNSProviderFilter{Group: "C"}, storage.Page{Limit: 100})
		must(t, err)
		if len(ps) != 10 {
			t.Fatalf("group C: %d DNS providers", len(ps))
		}
		_, _, err = st.DNSProviders().ListPage(ctx, storage.DNSProviderFilter{}, storage.Page{Cursor: "not-a-cursor"})
		wantErr(t, err, storage.ErrInvalidCursor)
	})
	t.Run("tokens", func(t *testing.T) {
		list := func(f storage.TokenFilter) lister {
			return pageIDs(t, "token", func(p storage.Page) ([]*storage.Token, string, error) {
				return st.Tokens().ListPage(ctx, f, p)
			}, func(tok *storage.Token) (string, string) { return tok.ID, tok.Group })
		}
		newest := slices.Clone(tokAC)
		slices.Reverse(newest)
		activeNewest := slices.Clone(tokActive)
		slices.Reverse(activeNewest)
		for _, limit := range []int{1, 4, 7, 21, 50} {
			checkPaging(t, list(storage.TokenFilter{Groups: ac}), limit, tokAC)
			checkPaging(t, list(storage.TokenFilter{Groups: ac, Sort: "-created"}), limit, newest)
			checkPaging(t, list(storage.TokenFilter{Groups: ac, Sort: "-created", LiveAt: now}), limit, activeNewest)
			checkPaging(t, list(storage.TokenFilter{Groups: ac, ExpiredAt: now}), limit, tokExpired)
		}
		_, _, err := st.Tokens().ListPage(ctx, storage.TokenFilter{Sort: "name"}, storage.Page{})
		if err == nil {
			t.Fatal("an unknown sort was accepted")
		}
		_, _, err = st.Tokens().ListPage(ctx, storage.TokenFilter{}, storage.Page{Cursor: "not-a-cursor"})
		wantErr(t, err, storage.ErrInvalidCursor)
	})
}
