package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// ChallengeZone implements storage.ChallengeZoner.
func (s *Store) ChallengeZone() storage.ChallengeZoneStore { return challengeZone{s} }

type challengeZone struct{ s *Store }

// delegatedType is the DNS provider client type whose challenge records the
// challenge zone serves (dnsproviders.TypeDelegated).
const delegatedType = "delegated"

func (x challengeZone) ZoneTXT(ctx context.Context, zone, name string) ([]string, error) {
	rows, err := x.s.query(ctx, `SELECT r.value FROM challenge_records r JOIN dns_providers p ON p.id = r.provider_id
		WHERE r.zone = ? AND r.name = ? AND r.type = 'TXT' AND p.type = ?
		UNION ALL SELECT txt1 FROM acmedns_registrations WHERE zone = ? AND subdomain = ? AND txt1 <> ''
		UNION ALL SELECT txt2 FROM acmedns_registrations WHERE zone = ? AND subdomain = ? AND txt2 <> ''`,
		zone, name, delegatedType, zone, name, zone, name)
	if err != nil {
		return nil, x.s.classify(err, "looking up challenge zone TXT "+name+"."+zone)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, x.s.classify(err, "looking up challenge zone TXT "+name+"."+zone)
		}
		out = append(out, v)
	}
	return out, x.s.classify(rows.Err(), "looking up challenge zone TXT "+name+"."+zone)
}

const registrationCols = `id, password, zone, subdomain, allow_from, txt1, txt2, created_at, updated_at`

func (x challengeZone) CreateRegistration(ctx context.Context, r *storage.ACMEDNSRegistration) error {
	pw, err := x.s.seal(r.Password, "acmedns_registrations", "password", r.Username)
	if err != nil {
		return err
	}
	t := now()
	r.CreatedAt = t
	_, err = x.s.exec(ctx, `INSERT INTO acmedns_registrations (`+registrationCols+`) VALUES (?,?,?,?,?,'','',?,0)`,
		r.Username, pw, r.Zone, r.Subdomain, jsonList(r.AllowFrom), ts(t))
	return x.s.classify(err, "creating acme-dns registration "+r.Username)
}

func (x challengeZone) GetRegistration(ctx context.Context, username string) (*storage.ACMEDNSRegistration, error) {
	var (
		r                storage.ACMEDNSRegistration
		pw               []byte
		allow, t1, t2    string
		created, updated int64
	)
	err := x.s.queryRow(ctx, "SELECT "+registrationCols+" FROM acmedns_registrations WHERE id = ?", username).
		Scan(&r.Username, &pw, &r.Zone, &r.Subdomain, &allow, &t1, &t2, &created, &updated)
	if err != nil {
		return nil, x.s.classify(err, "getting acme-dns registration "+username)
	}
	if r.AllowFrom, err = parseList(allow); err != nil {
		return nil, fmt.Errorf("getting acme-dns registration %s: reading allow_from: %w", username, err)
	}
	if r.Password, err = x.s.open(pw, "acmedns_registrations", "password", r.Username); err != nil {
		return nil, err
	}
	for _, v := range []string{t1, t2} {
		if v != "" {
			r.TXT = append(r.TXT, v)
		}
	}
	r.CreatedAt, r.UpdatedAt = tm(created), tm(updated)
	return &r, nil
}

func (x challengeZone) SetRegistrationTXT(ctx context.Context, username, value string, at time.Time) error {
	res, err := x.s.exec(ctx, `UPDATE acmedns_registrations SET txt2 = txt1, txt1 = ?, updated_at = ? WHERE id = ?`,
		value, ts(at), username)
	if err != nil {
		return x.s.classify(err, "updating acme-dns registration "+username)
	}
	return x.s.expectOne(ctx, res, "acmedns_registrations", username, "updating acme-dns registration")
}

// Interface guards
var _ storage.ChallengeZoner = (*Store)(nil)
