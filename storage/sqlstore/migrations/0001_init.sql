-- CertLocker schema, version 1.
-- Written once for both backends: BLOB becomes BYTEA on PostgreSQL.
-- Times are Unix nanoseconds (BIGINT, 0 = unset). Lists are JSON text.

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);

CREATE TABLE issuers (
	id               TEXT PRIMARY KEY,
	name             TEXT NOT NULL UNIQUE,
	catalog_id       TEXT NOT NULL DEFAULT '',
	directory_url    TEXT NOT NULL,
	contacts         TEXT NOT NULL DEFAULT '[]',
	eab_key_id       TEXT NOT NULL DEFAULT '',
	eab_mac_key      BLOB,
	account_key      BLOB,
	account_key_type TEXT NOT NULL DEFAULT '',
	account_url      TEXT NOT NULL DEFAULT '',
	profile          TEXT NOT NULL DEFAULT '',
	preferred_chain  TEXT NOT NULL DEFAULT '',
	custom_roots_pem TEXT NOT NULL DEFAULT '',
	grp              TEXT NOT NULL DEFAULT '',
	status           TEXT NOT NULL DEFAULT '',
	last_message     TEXT NOT NULL DEFAULT '',
	managed_by       TEXT NOT NULL DEFAULT '',
	meta             TEXT NOT NULL DEFAULT '{}',
	created_at       BIGINT NOT NULL,
	updated_at       BIGINT NOT NULL,
	version          BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE dns_providers (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL UNIQUE,
	type         TEXT NOT NULL,
	credentials  BLOB,
	zones        TEXT NOT NULL DEFAULT '[]',
	account_id   TEXT NOT NULL DEFAULT '',
	grp          TEXT NOT NULL DEFAULT '',
	ttl          BIGINT NOT NULL DEFAULT 0,
	settings     TEXT NOT NULL DEFAULT '{}',
	status       TEXT NOT NULL DEFAULT '',
	last_message TEXT NOT NULL DEFAULT '',
	verified_at  BIGINT NOT NULL DEFAULT 0,
	managed_by   TEXT NOT NULL DEFAULT '',
	created_at   BIGINT NOT NULL,
	updated_at   BIGINT NOT NULL,
	version      BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE challenge_records (
	id                 TEXT PRIMARY KEY,
	provider_id        TEXT NOT NULL,
	workflow_id        TEXT NOT NULL DEFAULT '',
	zone               TEXT NOT NULL,
	name               TEXT NOT NULL,
	type               TEXT NOT NULL,
	value              TEXT NOT NULL,
	provider_record_id TEXT NOT NULL DEFAULT '',
	created_at         BIGINT NOT NULL
);
CREATE INDEX challenge_records_provider ON challenge_records (provider_id, created_at);

CREATE TABLE workflows (
	id                      TEXT PRIMARY KEY,
	issuer_id               TEXT NOT NULL REFERENCES issuers (id),
	identifiers             TEXT NOT NULL,
	key_type                TEXT NOT NULL DEFAULT '',
	profile                 TEXT NOT NULL DEFAULT '',
	trigger_kind            TEXT NOT NULL DEFAULT '',
	grp                     TEXT NOT NULL DEFAULT '',
	state                   TEXT NOT NULL,
	status                  TEXT NOT NULL DEFAULT '',
	order_url               TEXT NOT NULL DEFAULT '',
	private_key             BLOB,
	certificate_id          TEXT NOT NULL DEFAULT '',
	previous_certificate_id TEXT NOT NULL DEFAULT '',
	parent_id               TEXT NOT NULL DEFAULT '',
	attempt                 BIGINT NOT NULL DEFAULT 0,
	next_run_at             BIGINT NOT NULL DEFAULT 0,
	lease_owner             TEXT NOT NULL DEFAULT '',
	lease_until             BIGINT NOT NULL DEFAULT 0,
	data                    TEXT NOT NULL DEFAULT '{}',
	created_at              BIGINT NOT NULL,
	updated_at              BIGINT NOT NULL,
	version                 BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX workflows_due ON workflows (next_run_at) WHERE state NOT IN ('issued', 'failed', 'cancelled');
CREATE INDEX workflows_state ON workflows (state, id);
CREATE INDEX workflows_issuer ON workflows (issuer_id, id);

CREATE TABLE workflow_names (
	workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
	name        TEXT NOT NULL,
	PRIMARY KEY (name, workflow_id)
);

CREATE TABLE workflow_events (
	workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
	seq         BIGINT NOT NULL,
	at          BIGINT NOT NULL,
	node        TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL DEFAULT '',
	step        TEXT NOT NULL DEFAULT '',
	identifier  TEXT NOT NULL DEFAULT '',
	message     TEXT NOT NULL DEFAULT '',
	duration    BIGINT NOT NULL DEFAULT 0,
	problem     TEXT NOT NULL DEFAULT '',
	retry_after BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (workflow_id, seq)
);

CREATE TABLE certificates (
	id          TEXT PRIMARY KEY,
	fingerprint TEXT NOT NULL UNIQUE,
	common_name TEXT NOT NULL DEFAULT '',
	names       TEXT NOT NULL DEFAULT '[]',
	issuer_dn   TEXT NOT NULL DEFAULT '',
	serial      TEXT NOT NULL DEFAULT '',
	not_before  BIGINT NOT NULL,
	not_after   BIGINT NOT NULL,
	key_type    TEXT NOT NULL DEFAULT '',
	rating      TEXT NOT NULL DEFAULT '',
	issuer_id   TEXT NOT NULL DEFAULT '',
	workflow_id TEXT NOT NULL DEFAULT '',
	grp         TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL DEFAULT '',
	chain_pem   TEXT NOT NULL,
	private_key BLOB,
	meta        TEXT NOT NULL DEFAULT '{}',
	created_at  BIGINT NOT NULL,
	updated_at  BIGINT NOT NULL,
	version     BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX certificates_not_after ON certificates (not_after, id);
CREATE INDEX certificates_issuer ON certificates (issuer_id, not_after, id);
CREATE INDEX certificates_group ON certificates (grp, not_after, id);

CREATE TABLE certificate_names (
	certificate_id TEXT NOT NULL REFERENCES certificates (id) ON DELETE CASCADE,
	name           TEXT NOT NULL,
	PRIMARY KEY (name, certificate_id)
);

CREATE TABLE tokens (
	id             TEXT PRIMARY KEY,
	type           TEXT NOT NULL,
	name           TEXT NOT NULL DEFAULT '',
	certificate_id TEXT NOT NULL DEFAULT '',
	names          TEXT NOT NULL DEFAULT '[]',
	secret         BLOB,
	grp            TEXT NOT NULL DEFAULT '',
	status         TEXT NOT NULL DEFAULT '',
	expires_at     BIGINT NOT NULL DEFAULT 0,
	last_used_at   BIGINT NOT NULL DEFAULT 0,
	revoked_at     BIGINT NOT NULL DEFAULT 0,
	created_at     BIGINT NOT NULL,
	updated_at     BIGINT NOT NULL,
	version        BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX tokens_certificate ON tokens (certificate_id);

CREATE TABLE audit (
	id      TEXT PRIMARY KEY,
	at      BIGINT NOT NULL,
	node    TEXT NOT NULL DEFAULT '',
	actor   TEXT NOT NULL DEFAULT '',
	action  TEXT NOT NULL,
	target  TEXT NOT NULL DEFAULT '',
	details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_target ON audit (target, id);

CREATE TABLE acme_state (
	bucket TEXT NOT NULL,
	k      TEXT NOT NULL,
	value  BLOB NOT NULL,
	PRIMARY KEY (bucket, k)
);
