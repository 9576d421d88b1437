-- Notifications (Alertmanager, a signed webhook): events read from the audit trails by a
-- cursor and queued here in the same transaction that moves the cursor, so each event is
-- queued once and a receiver's outage delays deliveries but loses none.
CREATE TABLE notification_cursors (
    source  TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);

CREATE TABLE notification_outbox (
    id              BIGSERIAL PRIMARY KEY,
    event           TEXT NOT NULL,
    sink            TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ,
    last_error      TEXT
);
CREATE INDEX notification_outbox_due ON notification_outbox (sent_at, next_attempt_at);
