-- Actions a replica that is not the leader decided and allowed: the leader claims and
-- executes them through its guards, so a detection on any replica (Kafka partitions split
-- between them) is acted on by exactly one.
CREATE TABLE engine_handoffs (
    id         BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    entity     TEXT NOT NULL,
    request    TEXT NOT NULL,
    question   TEXT NOT NULL,
    claimed_at TIMESTAMPTZ
);
CREATE INDEX engine_handoffs_open ON engine_handoffs (id) WHERE claimed_at IS NULL;
