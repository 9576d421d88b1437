-- Aegis initial schema, PostgreSQL dialect. JSON columns of audit tables are text so the
-- hashed bytes are kept verbatim. The SQLite twin lives in ../sqlite/0001_initial.sql: keep
-- them in step.

CREATE TABLE roles (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT ''
);

INSERT INTO roles (id, name, description) VALUES
    (1, 'admin',   'manages users, policies and the executor'),
    (2, 'user',    'reads detections and evaluates policies'),
    (3, 'auditor', 'reads audit logs'),
    (4, 'service', 'machines: ingest, automation, the self-healing loop');

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT,
    password_hash TEXT NOT NULL,
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE user_roles (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    INTEGER NOT NULL REFERENCES roles (id),
    granted_at TIMESTAMPTZ NOT NULL,
    granted_by TEXT,
    PRIMARY KEY (user_id, role_id)
);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    issued_at   TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ,
    replaced_by TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE service_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL DEFAULT 'service',
    created_by   TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

CREATE TABLE policies (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    effect      TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    enabled     BOOLEAN NOT NULL,
    body        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    source      TEXT NOT NULL DEFAULT 'api',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX policies_live_name ON policies (name) WHERE deleted_at IS NULL;

CREATE TABLE policy_versions (
    policy_id  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    change     TEXT NOT NULL,
    body       TEXT,
    changed_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (policy_id, version)
);

-- Append-only and hash-chained: `id` is assigned by the chain writer (previous id + 1),
-- `hash` = SHA-256(prev_hash, canonical row). See aegis-core::audit.
CREATE TABLE policy_audit_logs (
    id              BIGINT PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL,
    request_id      TEXT,
    policy_type     TEXT NOT NULL,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    user_id         TEXT,
    role            TEXT,
    decision        TEXT NOT NULL,
    policy_id       TEXT,
    policy_name     TEXT,
    reason          TEXT NOT NULL,
    context         TEXT NOT NULL,
    evaluated_in_us BIGINT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX policy_audit_logs_created ON policy_audit_logs (created_at);

CREATE TABLE action_audit_logs (
    id         BIGINT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    action_id  TEXT NOT NULL,
    phase      TEXT NOT NULL,
    action     TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    target     TEXT NOT NULL,
    status     TEXT NOT NULL,
    actor      TEXT,
    reason     TEXT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX action_audit_logs_created ON action_audit_logs (created_at);
CREATE INDEX action_audit_logs_action_id ON action_audit_logs (action_id);

CREATE FUNCTION aegis_refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER policy_audit_logs_append_only BEFORE UPDATE OR DELETE ON policy_audit_logs
    FOR EACH ROW EXECUTE FUNCTION aegis_refuse_audit_change();
CREATE TRIGGER policy_audit_logs_no_truncate BEFORE TRUNCATE ON policy_audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION aegis_refuse_audit_change();
CREATE TRIGGER action_audit_logs_append_only BEFORE UPDATE OR DELETE ON action_audit_logs
    FOR EACH ROW EXECUTE FUNCTION aegis_refuse_audit_change();
CREATE TRIGGER action_audit_logs_no_truncate BEFORE TRUNCATE ON action_audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION aegis_refuse_audit_change();

CREATE TABLE prediction_history (
    id                 BIGSERIAL PRIMARY KEY,
    created_at         TIMESTAMPTZ NOT NULL,
    detector           TEXT NOT NULL,
    model_version      TEXT NOT NULL,
    entity             TEXT NOT NULL,
    score              DOUBLE PRECISION NOT NULL,
    is_anomaly         BOOLEAN NOT NULL,
    severity           TEXT,
    failure_type       TEXT,
    recommended_action TEXT,
    confidence         DOUBLE PRECISION,
    features           TEXT NOT NULL DEFAULT '{}',
    explanation        TEXT
);
CREATE INDEX prediction_history_created ON prediction_history (created_at);
CREATE INDEX prediction_history_entity ON prediction_history (entity, created_at);

CREATE TABLE model_metrics (
    id            BIGSERIAL PRIMARY KEY,
    created_at    TIMESTAMPTZ NOT NULL,
    model_kind    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    class_label   TEXT,
    metric        TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    support       BIGINT
);
CREATE INDEX model_metrics_model ON model_metrics (model_kind, model_version);

CREATE TABLE training_data (
    id         BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    source     TEXT NOT NULL,
    entity     TEXT,
    label      TEXT NOT NULL,
    features   TEXT NOT NULL
);
CREATE INDEX training_data_label ON training_data (label);
