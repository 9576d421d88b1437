-- Circuit breakers per remediation target: actions judged ineffective in a row after
-- post-action verification; at the configured count the breaker opens and the engine stops
-- acting on the target until an operator resets it.
CREATE TABLE breakers (
    entity      TEXT PRIMARY KEY,
    ineffective BIGINT NOT NULL DEFAULT 0,
    open        BOOLEAN NOT NULL DEFAULT FALSE,
    opened_at   TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL,
    reset_by    TEXT,
    reset_at    TIMESTAMPTZ
);
