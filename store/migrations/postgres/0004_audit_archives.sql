-- Verified audit archives (`aegis audit export`), and retention: an audit row may be
-- deleted only when a verified archive holds it; updates, truncation and every other
-- delete are still refused.

CREATE TABLE audit_archives (
    id          BIGSERIAL PRIMARY KEY,
    audit_table TEXT NOT NULL,
    first_id    BIGINT NOT NULL,
    last_id     BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    last_hash   TEXT NOT NULL,
    location    TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    verified_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_archives_range ON audit_archives (audit_table, last_id);
CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION aegis_refuse_audit_change();
CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
    FOR EACH STATEMENT EXECUTE FUNCTION aegis_refuse_audit_change();

CREATE FUNCTION aegis_delete_archived_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_archives a
               WHERE a.audit_table = TG_TABLE_NAME AND OLD.id BETWEEN a.first_id AND a.last_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: only rows in a verified archive may be deleted', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER policy_audit_logs_append_only ON policy_audit_logs;
CREATE TRIGGER policy_audit_logs_append_only BEFORE UPDATE ON policy_audit_logs
    FOR EACH ROW EXECUTE FUNCTION aegis_refuse_audit_change();
CREATE TRIGGER policy_audit_logs_archived_delete BEFORE DELETE ON policy_audit_logs
    FOR EACH ROW EXECUTE FUNCTION aegis_delete_archived_only();

DROP TRIGGER action_audit_logs_append_only ON action_audit_logs;
CREATE TRIGGER action_audit_logs_append_only BEFORE UPDATE ON action_audit_logs
    FOR EACH ROW EXECUTE FUNCTION aegis_refuse_audit_change();
CREATE TRIGGER action_audit_logs_archived_delete BEFORE DELETE ON action_audit_logs
    FOR EACH ROW EXECUTE FUNCTION aegis_delete_archived_only();
