-- Schema version 7: the challenge zone (CertLocker's authoritative DNS
-- server). Its TXT answers are looked up by zone and name in
-- challenge_records (of delegated provider clients) and in the
-- registrations of the acme-dns-compatible API, whose password is sealed
-- (acmedns_registrations.password/id). txt1 is the newest value, txt2 the
-- one before. Times are Unix nanoseconds, 0 = never.

CREATE INDEX IF NOT EXISTS challenge_records_zone_name ON challenge_records (zone, name);
CREATE TABLE IF NOT EXISTS acmedns_registrations (
	id         TEXT PRIMARY KEY,
	password   BLOB NOT NULL,
	zone       TEXT NOT NULL,
	subdomain  TEXT NOT NULL,
	allow_from TEXT NOT NULL DEFAULT '[]',
	txt1       TEXT NOT NULL DEFAULT '',
	txt2       TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS acmedns_registrations_subdomain ON acmedns_registrations (zone, subdomain);
