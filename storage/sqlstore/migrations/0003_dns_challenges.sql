-- Schema version 3: the DNS provider store.
-- verification is the last verification's result, check by check (JSON).
-- A challenge record is stored before it is published; published_at is set
-- once the provider accepted it, and cleanup_attempts/last_error count
-- failed removals, so the janitor can report records it cannot remove.
-- Times are Unix nanoseconds, 0 = never.

ALTER TABLE dns_providers ADD COLUMN verification TEXT NOT NULL DEFAULT '{}';
ALTER TABLE challenge_records ADD COLUMN published_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE challenge_records ADD COLUMN cleanup_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE challenge_records ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
CREATE INDEX challenge_records_workflow ON challenge_records (workflow_id, created_at);
CREATE INDEX challenge_records_created ON challenge_records (created_at, id);
