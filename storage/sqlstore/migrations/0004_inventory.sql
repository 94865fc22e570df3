-- Inventory (issue 6): who produced a certificate and under which profile,
-- the CA catalog entry its issuer maps to, how it entered the inventory,
-- what renewed it; and the indexes the inventory's filters, sorts and
-- expiry counts use.

ALTER TABLE certificates ADD COLUMN profile TEXT NOT NULL DEFAULT '';
ALTER TABLE certificates ADD COLUMN catalog_id TEXT NOT NULL DEFAULT '';
ALTER TABLE certificates ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE certificates ADD COLUMN replaced_by TEXT NOT NULL DEFAULT '';

CREATE INDEX certificates_status ON certificates (status, not_after, id);
CREATE INDEX certificates_rating ON certificates (rating, not_after, id);
CREATE INDEX certificates_catalog ON certificates (catalog_id, not_after, id);
CREATE INDEX certificates_not_before ON certificates (not_before, id);
CREATE INDEX certificates_common_name ON certificates (common_name, id);
CREATE INDEX certificates_created ON certificates (created_at, id);
CREATE INDEX certificates_expiry_counts ON certificates (status, issuer_id, grp, not_after);
CREATE INDEX certificates_group_rating ON certificates (grp, rating, not_after, id);

-- Certificates per status, ACME client, group and expiry day (Unix days,
-- UTC), kept in step by every write to certificates, so that the expiry
-- counts and timeline read a few thousand rows instead of the inventory.
CREATE TABLE certificate_expiry_days (
	status     TEXT NOT NULL,
	issuer_id  TEXT NOT NULL,
	grp        TEXT NOT NULL,
	expiry_day BIGINT NOT NULL,
	n          BIGINT NOT NULL,
	PRIMARY KEY (status, issuer_id, grp, expiry_day)
);
INSERT INTO certificate_expiry_days (status, issuer_id, grp, expiry_day, n)
	SELECT status, issuer_id, grp, not_after / 86400000000000, COUNT(*) FROM certificates
	GROUP BY status, issuer_id, grp, not_after / 86400000000000;
