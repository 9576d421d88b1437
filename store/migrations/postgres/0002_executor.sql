-- Executor guards that must survive restarts and be shared by replicas.

-- Nonces of signed requests, remembered past the timestamp window so a replay is refused.
CREATE TABLE executor_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX executor_nonces_expires ON executor_nonces (expires_at);

-- The first answer to each idempotency key.
CREATE TABLE executor_idempotency (
    idempotency_key TEXT PRIMARY KEY,
    action_id       TEXT NOT NULL,
    status          TEXT NOT NULL,
    response        TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX action_audit_logs_target ON action_audit_logs (namespace, target, created_at);
