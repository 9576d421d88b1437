-- Aegis initial schema, SQLite dialect. Timestamps are RFC 3339 text in UTC; JSON columns
-- are text. The PostgreSQL twin lives in ../postgres/0001_initial.sql: keep them in step.

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
    is_active     INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE user_roles (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    INTEGER NOT NULL REFERENCES roles (id),
    granted_at TEXT NOT NULL,
    granted_by TEXT,
    PRIMARY KEY (user_id, role_id)
);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    issued_at   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    revoked_at  TEXT,
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
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT
);

CREATE TABLE policies (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    effect      TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    enabled     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    source      TEXT NOT NULL DEFAULT 'api',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT
);
CREATE UNIQUE INDEX policies_live_name ON policies (name) WHERE deleted_at IS NULL;

CREATE TABLE policy_versions (
    policy_id  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    change     TEXT NOT NULL,
    body       TEXT,
    changed_by TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (policy_id, version)
);

-- Append-only and hash-chained: `id` is assigned by the chain writer (previous id + 1),
-- `hash` = SHA-256(prev_hash, canonical row). See aegis-core::audit.
CREATE TABLE policy_audit_logs (
    id              INTEGER PRIMARY KEY,
    created_at      TEXT NOT NULL,
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
    evaluated_in_us INTEGER NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX policy_audit_logs_created ON policy_audit_logs (created_at);

CREATE TABLE action_audit_logs (
    id         INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
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

CREATE TRIGGER policy_audit_logs_no_update BEFORE UPDATE ON policy_audit_logs
BEGIN SELECT RAISE(ABORT, 'policy_audit_logs is append-only'); END;
CREATE TRIGGER policy_audit_logs_no_delete BEFORE DELETE ON policy_audit_logs
BEGIN SELECT RAISE(ABORT, 'policy_audit_logs is append-only'); END;
CREATE TRIGGER action_audit_logs_no_update BEFORE UPDATE ON action_audit_logs
BEGIN SELECT RAISE(ABORT, 'action_audit_logs is append-only'); END;
CREATE TRIGGER action_audit_logs_no_delete BEFORE DELETE ON action_audit_logs
BEGIN SELECT RAISE(ABORT, 'action_audit_logs is append-only'); END;

CREATE TABLE prediction_history (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at         TEXT NOT NULL,
    detector           TEXT NOT NULL,
    model_version      TEXT NOT NULL,
    entity             TEXT NOT NULL,
    score              REAL NOT NULL,
    is_anomaly         INTEGER NOT NULL,
    severity           TEXT,
    failure_type       TEXT,
    recommended_action TEXT,
    confidence         REAL,
    features           TEXT NOT NULL DEFAULT '{}',
    explanation        TEXT
);
CREATE INDEX prediction_history_created ON prediction_history (created_at);
CREATE INDEX prediction_history_entity ON prediction_history (entity, created_at);

CREATE TABLE model_metrics (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    TEXT NOT NULL,
    model_kind    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    class_label   TEXT,
    metric        TEXT NOT NULL,
    value         REAL NOT NULL,
    support       INTEGER
);
CREATE INDEX model_metrics_model ON model_metrics (model_kind, model_version);

CREATE TABLE training_data (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    source     TEXT NOT NULL,
    entity     TEXT,
    label      TEXT NOT NULL,
    features   TEXT NOT NULL
);
CREATE INDEX training_data_label ON training_data (label);
