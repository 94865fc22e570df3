package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

type dnsProviders struct{ s *Store }

const dnsProviderCols = `id, name, type, credentials, zones, account_id, grp, ttl, settings, status,
	last_message, verified_at, verification, managed_by, created_at, updated_at, version`

func (x dnsProviders) scan(sc interface{ Scan(...any) error }) (*storage.DNSProvider, error) {
	var (
		p                          storage.DNSProvider
		creds                      []byte
		zones, settings, verif     string
		ttl, verified, created, up int64
	)
	if err := sc.Scan(&p.ID, &p.Name, &p.Type, &creds, &zones, &p.AccountID, &p.Group, &ttl, &settings,
		&p.Status, &p.LastMessage, &verified, &verif, &p.ManagedBy, &created, &up, &p.Version); err != nil {
		return nil, err
	}
	var err error
	if p.Zones, err = parseList(zones); err != nil {
		return nil, err
	}
	if p.Credentials, err = x.s.open(creds, "dns_providers", "credentials", p.ID); err != nil {
		return nil, err
	}
	p.TTL, p.Settings, p.Verification = time.Duration(ttl), raw(settings), raw(verif)
	p.VerifiedAt, p.CreatedAt, p.UpdatedAt = tm(verified), tm(created), tm(up)
	return &p, nil
}

func (x dnsProviders) Create(ctx context.Context, p *storage.DNSProvider) error {
	if p.ID == "" {
		p.ID = storage.NewID("dns")
	}
	creds, err := x.s.seal(p.Credentials, "dns_providers", "credentials", p.ID)
	if err != nil {
		return err
	}
	t := now()
	p.CreatedAt, p.UpdatedAt, p.Version = t, t, 1
	_, err = x.s.exec(ctx, `INSERT INTO dns_providers (`+dnsProviderCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		p.ID, p.Name, p.Type, creds, jsonList(p.Zones), p.AccountID, p.Group, int64(p.TTL), rawOr(p.Settings, "{}"),
		p.Status, p.LastMessage, ts(p.VerifiedAt), rawOr(p.Verification, "{}"), p.ManagedBy, ts(t), ts(t), p.Version)
	return x.s.classify(err, fmt.Sprintf("creating DNS provider %q", p.Name))
}

func (x dnsProviders) Get(ctx context.Context, id string) (*storage.DNSProvider, error) {
	p, err := x.scan(x.s.queryRow(ctx, "SELECT "+dnsProviderCols+" FROM dns_providers WHERE id = ?", id))
	return p, x.s.classify(err, "getting DNS provider "+id)
}

func (x dnsProviders) GetByName(ctx context.Context, name string) (*storage.DNSProvider, error) {
	p, err := x.scan(x.s.queryRow(ctx, "SELECT "+dnsProviderCols+" FROM dns_providers WHERE name = ?", name))
	return p, x.s.classify(err, fmt.Sprintf("getting DNS provider %q", name))
}

func (x dnsProviders) List(ctx context.Context, group string) ([]*storage.DNSProvider, error) {
	var w where
	w.addIf(group != "", "grp = ?", group)
	rows, err := x.s.query(ctx, "SELECT "+dnsProviderCols+" FROM dns_providers"+w.String()+" ORDER BY name", w.args...)
	if err != nil {
		return nil, x.s.classify(err, "listing DNS providers")
	}
	defer rows.Close()
	var out []*storage.DNSProvider
	for rows.Next() {
		p, err := x.scan(rows)
		if err != nil {
			return nil, x.s.classify(err, "listing DNS providers")
		}
		out = append(out, p)
	}
	return out, x.s.classify(rows.Err(), "listing DNS providers")
}

func (x dnsProviders) Update(ctx context.Context, p *storage.DNSProvider) error {
	creds, err := x.s.seal(p.Credentials, "dns_providers", "credentials", p.ID)
	if err != nil {
		return err
	}
	t := now()
	res, err := x.s.exec(ctx, `UPDATE dns_providers SET name = ?, type = ?, credentials = ?, zones = ?, account_id = ?,
		grp = ?, ttl = ?, settings = ?, status = ?, last_message = ?, verified_at = ?, verification = ?, managed_by = ?,
		updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`,
		p.Name, p.Type, creds, jsonList(p.Zones), p.AccountID, p.Group, int64(p.TTL), rawOr(p.Settings, "{}"),
		p.Status, p.LastMessage, ts(p.VerifiedAt), rawOr(p.Verification, "{}"), p.ManagedBy, ts(t), p.ID, p.Version)
	if err != nil {
		return x.s.classify(err, fmt.Sprintf("updating DNS provider %q", p.Name))
	}
	if err := x.s.expectOne(ctx, res, "dns_providers", p.ID, "updating DNS provider"); err != nil {
		return err
	}
	p.Version++
	p.UpdatedAt = t
	return nil
}

func (x dnsProviders) Delete(ctx context.Context, id string) error {
	res, err := x.s.exec(ctx, "DELETE FROM dns_providers WHERE id = ?", id)
	if err != nil {
		return x.s.classify(err, "deleting DNS provider "+id)
	}
	if err := x.s.expectOne(ctx, res, "dns_providers", id, "deleting DNS provider"); err != nil {
		return err
	}
	x.s.deletedSecrets(ctx)
	return nil
}

const recordCols = `id, provider_id, workflow_id, zone, name, type, value, provider_record_id, created_at,
	published_at, cleanup_attempts, last_error`

func scanRecord(sc interface{ Scan(...any) error }) (*storage.ChallengeRecord, error) {
	var (
		r                  storage.ChallengeRecord
		created, published int64
		attempts           int64
	)
	if err := sc.Scan(&r.ID, &r.ProviderID, &r.WorkflowID, &r.Zone, &r.Name, &r.Type, &r.Value,
		&r.ProviderRecordID, &created, &published, &attempts, &r.LastError); err != nil {
		return nil, err
	}
	r.CreatedAt, r.PublishedAt, r.CleanupAttempts = tm(created), tm(published), int(attempts)
	return &r, nil
}

func (x dnsProviders) PutRecord(ctx context.Context, r *storage.ChallengeRecord) error {
	if r.ID == "" {
		r.ID = storage.NewID("rec")
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now()
	}
	_, err := x.s.exec(ctx, `INSERT INTO challenge_records (`+recordCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET provider_record_id = excluded.provider_record_id, value = excluded.value,
		published_at = excluded.published_at, cleanup_attempts = excluded.cleanup_attempts, last_error = excluded.last_error`,
		r.ID, r.ProviderID, r.WorkflowID, r.Zone, r.Name, r.Type, r.Value, r.ProviderRecordID, ts(r.CreatedAt),
		ts(r.PublishedAt), int64(r.CleanupAttempts), r.LastError)
	if err != nil && x.s.db.dialect.IsForeignKey != nil && x.s.db.dialect.IsForeignKey(err) {
		return fmt.Errorf("storing challenge record %s: DNS provider %s: %w", r.Name, r.ProviderID, storage.ErrNotFound)
	}
	return x.s.classify(err, "storing challenge record "+r.Name)
}

func (x dnsProviders) DeleteRecord(ctx context.Context, id string) error {
	_, err := x.s.exec(ctx, "DELETE FROM challenge_records WHERE id = ?", id)
	return x.s.classify(err, "deleting challenge record "+id)
}

func (x dnsProviders) GetRecord(ctx context.Context, id string) (*storage.ChallengeRecord, error) {
	r, err := scanRecord(x.s.queryRow(ctx, "SELECT "+recordCols+" FROM challenge_records WHERE id = ?", id))
	return r, x.s.classify(err, "getting challenge record "+id)
}

func (x dnsProviders) ListRecords(ctx context.Context, providerID string, before time.Time) ([]*storage.ChallengeRecord, error) {
	var w where
	w.addIf(providerID != "", "provider_id = ?", providerID)
	w.addIf(!before.IsZero(), "created_at < ?", ts(before))
	return x.records(ctx, w.String()+" ORDER BY created_at, id", w.args...)
}

func (x dnsProviders) WorkflowRecords(ctx context.Context, workflowID string) ([]*storage.ChallengeRecord, error) {
	return x.records(ctx, " WHERE workflow_id = ? ORDER BY created_at, id", workflowID)
}

func (x dnsProviders) records(ctx context.Context, rest string, args ...any) ([]*storage.ChallengeRecord, error) {
	rows, err := x.s.query(ctx, "SELECT "+recordCols+" FROM challenge_records"+rest, args...)
	if err != nil {
		return nil, x.s.classify(err, "listing challenge records")
	}
	defer rows.Close()
	var out []*storage.ChallengeRecord
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, x.s.classify(err, "listing challenge records")
		}
		out = append(out, r)
	}
	return out, x.s.classify(rows.Err(), "listing challenge records")
}
