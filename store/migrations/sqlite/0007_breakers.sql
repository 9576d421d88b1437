-- Circuit breakers per remediation target: actions judged ineffective in a row after
-- post-action verification; at the configured count the breaker opens and the engine stops
-- acting on the target until an operator resets it.
CREATE TABLE breakers (
    entity      TEXT PRIMARY KEY,
    ineffective INTEGER NOT NULL DEFAULT 0,
    open        BOOLEAN NOT NULL DEFAULT FALSE,
    opened_at   TEXT,
    updated_at  TEXT NOT NULL,
    reset_by    TEXT,
    reset_at    TEXT
);
