-- One record per remediation the engine decided: the evidence, the policy decision with
-- every other candidate's "why not", the guard state, the approval, the request and the
-- outcome. The action audit rows of the action name it (`details.decision_record`).
CREATE TABLE decision_records (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    entity      TEXT NOT NULL,
    incident    BIGINT,
    action_id   TEXT,
    approval_id TEXT,
    outcome     TEXT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX decision_records_entity ON decision_records (entity, created_at);
