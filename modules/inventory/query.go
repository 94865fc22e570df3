package inventory

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Query parameters of the certificate list, as the admin API and the UI
// take them.
var listParams = []string{"domain", "issuer", "ca", "group", "status", "rating", "source", "expiring_within", "expiry", "sort"}

// FilterFromQuery reads list filters from URL query parameters:
//
//	domain=          a DNS name or IP among the certificate's names
//	issuer=          ACME client ID
//	ca=              CA catalog ID
//	group=           group
//	status=          active | renewed | revoked | any (default any)
//	rating=          A+ | A | B | C | D | F
//	source=          issued | imported
//	expiring_within= a duration: 30d, 2w, 72h (expired ones included)
//	expiry=          expired | within_7d | within_30d | ok
//	sort=            expires | issued | name | added, "-" prefix for descending
//
// Parameters named in extra are allowed and left to the caller; any other
// parameter is an *InputError, so a typo does not silently match all.
func (s *Service) FilterFromQuery(q url.Values, extra ...string) (storage.CertificateFilter, error) {
	for k := range q {
		if !slices.Contains(listParams, k) && !slices.Contains(extra, k) {
			return storage.CertificateFilter{}, inputErr(k, "unknown query parameter %q: use %s", k,
				strings.Join(append(slices.Clone(listParams), extra...), ", "))
		}
	}
	f := storage.CertificateFilter{Domain: q.Get("domain"), IssuerID: q.Get("issuer"), CatalogID: q.Get("ca"),
		Group: q.Get("group"), Rating: q.Get("rating"), Source: q.Get("source"), Status: q.Get("status"), Sort: q.Get("sort")}
	switch f.Status {
	case "", storage.CertStatusActive, storage.CertStatusRenewed, storage.CertStatusRevoked:
	case "any":
		f.Status = ""
	default:
		return f, inputErr("status", "status must be active, renewed, revoked or any")
	}
	if f.Rating != "" && !slices.Contains(Grades, f.Rating) {
		return f, inputErr("rating", "rating must be one of %s (write A+ as A%%2B in a URL)", strings.Join(Grades, ", "))
	}
	switch f.Source {
	case "", storage.CertSourceIssued, storage.CertSourceImported:
	default:
		return f, inputErr("source", "source must be issued or imported")
	}
	if f.Sort != "" && !slices.Contains(storage.CertificateSorts, strings.TrimPrefix(f.Sort, "-")) {
		return f, inputErr("sort", "sort must be one of %s, optionally prefixed with -", strings.Join(storage.CertificateSorts, ", "))
	}
	now := s.now()
	if v := q.Get("expiring_within"); v != "" {
		d, err := ParseDays(v)
		if err != nil || d <= 0 {
			return f, inputErr("expiring_within", "expiring_within must be a positive duration such as 30d, 2w or 72h")
		}
		f.NotAfterBefore = now.Add(d)
	}
	if v := q.Get("expiry"); v != "" {
		var from, before time.Time
		switch v {
		case BucketExpired:
			before = now.Add(1) // not_after <= now
		case BucketWithin7d:
			from, before = now.Add(1), now.Add(7*day+1)
		case BucketWithin30d:
			from, before = now.Add(7*day+1), now.Add(30*day+1)
		case BucketOK:
			from = now.Add(30*day + 1)
		default:
			return f, inputErr("expiry", "expiry must be expired, within_7d, within_30d or ok")
		}
		f.NotAfterFrom = from
		if !before.IsZero() && (f.NotAfterBefore.IsZero() || before.Before(f.NotAfterBefore)) {
			f.NotAfterBefore = before
		}
	}
	return f, nil
}

// ParseDays parses a duration that may also be written in days ("30d")
// or weeks ("2w").
func ParseDays(s string) (time.Duration, error) {
	for suffix, unit := range map[string]time.Duration{"d": day, "w": 7 * day} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(v * float64(unit)), nil
		}
	}
	return time.ParseDuration(s)
}
