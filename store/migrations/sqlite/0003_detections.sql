-- Detectors: inference time of each prediction and the fitted models themselves.
-- (prediction_history, model_metrics and training_data exist since 0001.)

ALTER TABLE prediction_history ADD COLUMN latency_us BIGINT NOT NULL DEFAULT 0;
CREATE INDEX prediction_history_detector ON prediction_history (detector, created_at);

-- Fitted models (the JSON model file); the newest per kind is loaded at start, so
-- replicas and restarts share one model.
CREATE TABLE models (
    version       TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    training_rows BIGINT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX models_kind ON models (kind, created_at);
