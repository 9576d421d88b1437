-- Verified audit archives (`aegis audit export`), and retention: an audit row may be
-- deleted only when a verified archive holds it; every other delete is still refused.

CREATE TABLE audit_archives (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_table TEXT NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    prev_hash   TEXT NOT NULL,
    last_hash   TEXT NOT NULL,
    location    TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    verified_at TEXT NOT NULL
);
CREATE INDEX audit_archives_range ON audit_archives (audit_table, last_id);
CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END;
CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END;

DROP TRIGGER policy_audit_logs_no_delete;
CREATE TRIGGER policy_audit_logs_no_delete BEFORE DELETE ON policy_audit_logs
WHEN NOT EXISTS (SELECT 1 FROM audit_archives a
                 WHERE a.audit_table = 'policy_audit_logs' AND OLD.id BETWEEN a.first_id AND a.last_id)
BEGIN SELECT RAISE(ABORT, 'policy_audit_logs is append-only: only rows in a verified archive may be deleted'); END;

DROP TRIGGER action_audit_logs_no_delete;
CREATE TRIGGER action_audit_logs_no_delete BEFORE DELETE ON action_audit_logs
WHEN NOT EXISTS (SELECT 1 FROM audit_archives a
                 WHERE a.audit_table = 'action_audit_logs' AND OLD.id BETWEEN a.first_id AND a.last_id)
BEGIN SELECT RAISE(ABORT, 'action_audit_logs is append-only: only rows in a verified archive may be deleted'); END;
