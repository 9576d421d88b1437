//! Aegis HTTP API: one axum [`Router`](axum::Router) on one listener.
//!
//! - [`app`] builds the router from an [`AppState`]; tests drive it with
//!   `tower::ServiceExt::oneshot`, no socket needed.
//! - [`ApiError`] is the only error type handlers return; it always renders CONTRACT.md's
//!   `{"error": {"code", "message", "request_id"}}` and never leaks internals.
//! - [`Json`] is axum's JSON extractor with its rejections mapped to [`ApiError`].
//! - Every response carries `x-request-id`; every request is counted in
//!   `aegis_http_requests_total` and timed in `aegis_http_request_duration_seconds`.
//!
//! The layer is thin: parse, authorize, call the domain crate, map errors to JSON.

mod access;
#[cfg(test)]
mod approval_tests;
pub mod auth;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod detect_tests;
pub mod detector_service;
mod error;
pub mod executor_service;
#[cfg(test)]
mod executor_tests;
mod extract;
pub mod healing;
#[cfg(test)]
mod healing_tests;
mod http_client;
#[cfg(test)]
mod ingest_tests;
pub mod loki_outbox;
mod middleware;
pub mod objects;
#[cfg(test)]
mod objects_tests;
mod policy_service;
#[cfg(test)]
mod policy_tests;
pub mod pull;
#[cfg(test)]
#[cfg(feature = "sql")]
mod query_tests;
pub mod ratelimit;
mod routes;
pub mod server;
mod state;
pub mod telemetry;
#[cfg(test)]
mod tests;
mod throttle;

pub use error::{ApiError, ErrorCode};
pub use extract::Json;
pub use middleware::{REQUEST_ID_HEADER, RequestId};
pub use policy_service::{Asker, POLICY_DIR_POLL, PolicyHealth, PolicyService};
#[cfg(feature = "sql")]
pub use routes::plan_query_request;
pub use routes::{app, openapi_json};
pub use state::AppState;
