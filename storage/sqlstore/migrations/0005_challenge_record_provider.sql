-- Schema version 5: a challenge record belongs to an existing DNS provider
-- client. With the foreign key, deleting a provider while a workflow is
-- presenting on it is decided by the database: either the record is stored
-- first and the delete is refused (in use), or the provider is gone first
-- and the record is refused before anything is published.
-- SQLite cannot add a constraint to a table: rebuild it (both engines).
-- Records of providers already deleted cannot be cleaned up by anyone and
-- are dropped.

CREATE TABLE challenge_records_v5 (
	id                 TEXT PRIMARY KEY,
	provider_id        TEXT NOT NULL REFERENCES dns_providers (id),
	workflow_id        TEXT NOT NULL DEFAULT '',
	zone               TEXT NOT NULL,
	name               TEXT NOT NULL,
	type               TEXT NOT NULL,
	value              TEXT NOT NULL,
	provider_record_id TEXT NOT NULL DEFAULT '',
	created_at         BIGINT NOT NULL,
	published_at       BIGINT NOT NULL DEFAULT 0,
	cleanup_attempts   BIGINT NOT NULL DEFAULT 0,
	last_error         TEXT NOT NULL DEFAULT ''
);
INSERT INTO challenge_records_v5 (id, provider_id, workflow_id, zone, name, type, value, provider_record_id, created_at,
	published_at, cleanup_attempts, last_error)
	SELECT id, provider_id, workflow_id, zone, name, type, value, provider_record_id, created_at, published_at,
	cleanup_attempts, last_error FROM challenge_records WHERE provider_id IN (SELECT id FROM dns_providers);
DROP TABLE challenge_records;
ALTER TABLE challenge_records_v5 RENAME TO challenge_records;
CREATE INDEX challenge_records_provider ON challenge_records (provider_id, created_at);
CREATE INDEX challenge_records_workflow ON challenge_records (workflow_id, created_at);
CREATE INDEX challenge_records_created ON challenge_records (created_at, id);
