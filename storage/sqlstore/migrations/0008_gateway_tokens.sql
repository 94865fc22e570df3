-- Schema version 8: certificate tokens for the ACME gateway. A token keeps
-- its scope (ACME client, names with their challenge settings, key
-- constraints, account limit) as JSON, a second secret for its per-token
-- directory URL (sealed, found by its SHA-256), the previous secrets while a
-- rotation's grace period runs, and the ACME accounts bound to it.

ALTER TABLE tokens ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN spec TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tokens ADD COLUMN url_secret BLOB;
ALTER TABLE tokens ADD COLUMN url_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN previous_secret BLOB;
ALTER TABLE tokens ADD COLUMN previous_url_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN grace_until BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tokens_url_hash ON tokens (url_hash);
CREATE INDEX tokens_previous_url_hash ON tokens (previous_url_hash);

CREATE TABLE token_accounts (
	account_id TEXT PRIMARY KEY,
	token_id   TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
	created_at BIGINT NOT NULL
);
CREATE INDEX token_accounts_token ON token_accounts (token_id, created_at);
