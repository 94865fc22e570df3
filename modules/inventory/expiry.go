package inventory

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// BucketCounts counts certificates by expiry bucket.
type BucketCounts struct {
	Expired   int `json:"expired"`
	Within7d  int `json:"within_7d"`
	Within30d int `json:"within_30d"`
	OK        int `json:"ok"`
	Total     int `json:"total"`
}

func (b *BucketCounts) add(buckets []int) {
	b.Expired += buckets[0]
	b.Within7d += buckets[1]
	b.Within30d += buckets[2]
	b.OK += buckets[3]
	b.Total += buckets[0] + buckets[1] + buckets[2] + buckets[3]
}

// IssuerCounts are the bucket counts of one ACME client ("" for imported
// certificates).
type IssuerCounts struct {
	IssuerID string `json:"issuer_id"`
	BucketCounts
}

// GroupCounts are the bucket counts of one group.
type GroupCounts struct {
	Group string `json:"group"`
	BucketCounts
}

// TimelinePoint counts the certificates expiring in [Start, End).
type TimelinePoint struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Count int       `json:"count"`
}

// ExpiryQuery selects what ExpiryReport counts.
type ExpiryQuery struct {
	Filter storage.CertificateFilter
	// Horizon is how far ahead the timeline goes; default 90 days, at
	// most 2 years.
	Horizon time.Duration
	// Step is the timeline's interval; default one day. The timeline
	// starts at today's midnight (UTC) and has at most 750 points.
	Step time.Duration
}

// ExpiryReport is the expiry dashboard: counts per bucket overall, per
// ACME client and per group, and the timeline of upcoming expiries.
type ExpiryReport struct {
	Now      time.Time       `json:"now"`
	Totals   BucketCounts    `json:"totals"`
	ByIssuer []IssuerCounts  `json:"by_issuer"`
	ByGroup  []GroupCounts   `json:"by_group"`
	Timeline []TimelinePoint `json:"timeline"`
}

// Expiry reports expiries at the service's current time.
func (s *Service) Expiry(ctx context.Context, q ExpiryQuery) (*ExpiryReport, error) {
	if q.Horizon == 0 {
		q.Horizon = 90 * day
	}
	if q.Step == 0 {
		q.Step = day
	}
	if q.Horizon < 0 || q.Horizon > 731*day {
		return nil, inputErr("days", "the timeline goes from 1 day to 2 years ahead")
	}
	if q.Step < day || q.Step%day != 0 {
		return nil, inputErr("interval", "the timeline interval must be a whole number of days")
	}
	n := int((q.Horizon + q.Step - 1) / q.Step)
	if n > 750 {
		return nil, inputErr("interval", "the timeline would have %d points: use a longer interval", n)
	}
	now := s.now().UTC()
	// under a group scope, only the scope's certificates count
	g, inScope := storage.NarrowGroup(ctx, q.Filter.Group)
	q.Filter.Group = g
	timelineGroups := []string{g}
	if groups, restricted := storage.ScopeGroups(ctx); restricted && g == "" {
		timelineGroups = groups
	}
	if !inScope {
		timelineGroups = nil
	}
	bounds := []time.Time{now, now.Add(7 * day), now.Add(30 * day)}
	var counts []storage.ExpiryCount
	if inScope {
		all, err := s.store.Certificates().ExpiryCounts(ctx, q.Filter, bounds)
		if err != nil {
			return nil, err
		}
		counts = storage.FilterScope(ctx, all, func(ec storage.ExpiryCount) string { return ec.Group })
	}
	if len(counts) > 0 && len(counts[0].Buckets) != 4 {
		return nil, errors.New("counting certificates by expiry: unexpected bucket count")
	}
	r := &ExpiryReport{Now: now, ByIssuer: []IssuerCounts{}, ByGroup: []GroupCounts{}}
	issuers := map[string]*IssuerCounts{}
	groups := map[string]*GroupCounts{}
	for _, ec := range counts {
		r.Totals.add(ec.Buckets)
		if issuers[ec.IssuerID] == nil {
			issuers[ec.IssuerID] = &IssuerCounts{IssuerID: ec.IssuerID}
		}
		issuers[ec.IssuerID].add(ec.Buckets)
		if groups[ec.Group] == nil {
			groups[ec.Group] = &GroupCounts{Group: ec.Group}
		}
		groups[ec.Group].add(ec.Buckets)
	}
	for _, c := range issuers {
		r.ByIssuer = append(r.ByIssuer, *c)
	}
	sort.Slice(r.ByIssuer, func(i, j int) bool { return r.ByIssuer[i].IssuerID < r.ByIssuer[j].IssuerID })
	for _, c := range groups {
		r.ByGroup = append(r.ByGroup, *c)
	}
	sort.Slice(r.ByGroup, func(i, j int) bool { return r.ByGroup[i].Group < r.ByGroup[j].Group })

	// the timeline is in whole UTC days from today's midnight, which the
	// store answers from its per-day summary
	from := now.Truncate(day)
	tl := make([]int, n)
	for _, g := range timelineGroups {
		f := q.Filter
		f.Group = g
		part, err := s.store.Certificates().ExpiryTimeline(ctx, f, from, q.Step, n)
		if err != nil {
			return nil, err
		}
		for i := range min(len(part), n) {
			tl[i] += part[i]
		}
	}
	for i, c := range tl {
		start := from.Add(time.Duration(i) * q.Step)
		r.Timeline = append(r.Timeline, TimelinePoint{Start: start, End: start.Add(q.Step), Count: c})
	}
	return r, nil
}
