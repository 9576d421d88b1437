//! Every metric name Aegis exports, in one place: they are part of the interface
//! (CONTRACT.md), so a rename is a breaking change and shows up in review here.

/// Samples accepted from a source (`source`).
pub const INGEST_SAMPLES_TOTAL: &str = "aegis_ingest_samples_total";
/// Log lines accepted from a source (`source`).
pub const INGEST_LOG_LINES_TOTAL: &str = "aegis_ingest_log_lines_total";
/// Ingest requests or messages refused (`source`, `reason`), and samples and log lines
/// refused one by one (`too_old`, `too_new`, `too_long`).
pub const INGEST_REJECTED_TOTAL: &str = "aegis_ingest_rejected_total";
/// HTTP requests answered (`route`, `status`).
pub const HTTP_REQUESTS_TOTAL: &str = "aegis_http_requests_total";
/// HTTP request latency in seconds (`route`).
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "aegis_http_request_duration_seconds";
/// Authentication attempts (`result`).
pub const AUTH_ATTEMPTS_TOTAL: &str = "aegis_auth_attempts_total";
/// Policy evaluations (`type`, `decision`).
pub const POLICY_EVALUATIONS_TOTAL: &str = "aegis_policy_evaluations_total";
/// Policy evaluation latency in seconds.
pub const POLICY_EVALUATION_DURATION_SECONDS: &str = "aegis_policy_evaluation_duration_seconds";
/// Detections (`detector`, `severity`).
pub const DETECTIONS_TOTAL: &str = "aegis_detections_total";
/// Model inference latency in seconds (`detector`).
pub const INFERENCE_DURATION_SECONDS: &str = "aegis_inference_duration_seconds";
/// Executor actions (`action`, `namespace`, `status`).
pub const ACTIONS_TOTAL: &str = "aegis_actions_total";
/// Executor action latency in seconds (`action`).
pub const ACTION_DURATION_SECONDS: &str = "aegis_action_duration_seconds";
/// Post-action verifications (`result`: `effective`, `ineffective`, `unknown`). Beyond
/// CONTRACT.md's list.
pub const ACTION_VERIFICATIONS_TOTAL: &str = "aegis_action_verifications_total";
/// Circuit breakers opened after ineffective actions. Beyond CONTRACT.md's list.
pub const BREAKER_TRIPS_TOTAL: &str = "aegis_breaker_trips_total";
/// Alerts received from Alertmanager (`result`: `acted`, `duplicate`, `resolved`,
/// `no_workload`, `unmapped`). Beyond CONTRACT.md's list.
pub const ALERTS_TOTAL: &str = "aegis_alerts_total";
/// Notifications delivered or retried (`sink`: `alertmanager`, `webhook`; `result`:
/// `delivered`, `retried`). Beyond CONTRACT.md's list.
pub const NOTIFICATIONS_TOTAL: &str = "aegis_notifications_total";
/// Counter: requests whose rate limit was checked in memory because Redis failed.
pub const RATELIMIT_FALLBACKS_TOTAL: &str = "aegis_ratelimit_fallbacks_total";
