-- Actions an ALLOW policy with `require_approval` holds back until a person approves or
-- rejects them; a pending approval past `expires_at` is a rejection (status `expired`).
-- Every transition is also written to the action audit chain; this table is the queue.
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    entity       TEXT NOT NULL,
    action       TEXT NOT NULL,
    policy       TEXT,
    requested_by TEXT,
    request      TEXT NOT NULL,
    question     TEXT NOT NULL,
    dry_run      TEXT NOT NULL,
    decided_by   TEXT,
    decided_at   TIMESTAMPTZ,
    reason       TEXT,
    action_id    TEXT
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_created ON approvals (created_at);
