-- A shadow policy set's answer next to the live one for every recorded decision: what a
-- candidate set would have done, never acted on.
CREATE TABLE shadow_decisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at      TEXT NOT NULL,
    policy_type     TEXT NOT NULL,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    user_id         TEXT,
    live_decision   TEXT NOT NULL,
    live_policy     TEXT,
    shadow_decision TEXT NOT NULL,
    shadow_policy   TEXT,
    differs         BOOLEAN NOT NULL,
    context         TEXT NOT NULL
);
CREATE INDEX shadow_decisions_created ON shadow_decisions (created_at);
