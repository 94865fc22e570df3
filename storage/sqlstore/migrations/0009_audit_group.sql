-- Schema version 9: the audit log names the group of what was acted on, the
-- source address of the request and its result (ok, refused, failed), and
-- cannot be rewritten: triggers abort every UPDATE and DELETE of its rows
-- (and, on PostgreSQL, TRUNCATE), whoever connects.

ALTER TABLE audit ADD COLUMN grp TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN result TEXT NOT NULL DEFAULT 'ok';
CREATE INDEX audit_group ON audit (grp, id);
CREATE INDEX audit_actor ON audit (actor, id);

-- only sqlite
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- only sqlite
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- only postgres
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
-- only postgres
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
-- only postgres
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
