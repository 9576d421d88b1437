-- Executor guards that must survive restarts and be shared by replicas.

-- Nonces of signed requests, remembered past the timestamp window so a replay is refused.
CREATE TABLE executor_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
);
CREATE INDEX executor_nonces_expires ON executor_nonces (expires_at);

-- The first answer to each idempotency key.
CREATE TABLE executor_idempotency (
    idempotency_key TEXT PRIMARY KEY,
    action_id       TEXT NOT NULL,
    status          TEXT NOT NULL,
    response        TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

CREATE INDEX action_audit_logs_target ON action_audit_logs (namespace, target, created_at);

-- Audit rows waiting to be pushed to Loki (when AEGIS_LOKI_URL is set). Written in the same
-- transaction as the audit row, so Loki being down delays rows but loses none.
CREATE TABLE audit_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_table     TEXT NOT NULL,
    audit_id        INTEGER NOT NULL,
    line            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    sent_at         TEXT
);
CREATE INDEX audit_outbox_due ON audit_outbox (sent_at, next_attempt_at);
