-- Schema version 2: the issuer registry's account lifecycle.
-- next_account_key holds the key an account key rollover moves to (sealed,
-- like account_key) until the CA's answer is recorded. Times are Unix
-- nanoseconds, 0 = never.

ALTER TABLE issuers ADD COLUMN next_account_key BLOB;
ALTER TABLE issuers ADD COLUMN terms_agreed TEXT NOT NULL DEFAULT '';
ALTER TABLE issuers ADD COLUMN terms_agreed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE issuers ADD COLUMN registered_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE issuers ADD COLUMN key_rolled_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE issuers ADD COLUMN meta_refreshed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE issuers ADD COLUMN checked_at BIGINT NOT NULL DEFAULT 0;
