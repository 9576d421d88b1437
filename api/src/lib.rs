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
//! - [`auth`]: users, tokens, passwords and the caller extractor.
//!
//! The layer is thin: parse, authorize, call `aegis-runtime` or a stage crate, map the
//! answer and its errors (a runtime `Refusal`, a store error) to HTTP.

mod access;
#[cfg(test)]
mod alerts_tests;
#[cfg(test)]
mod approval_tests;
pub mod auth;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod detect_tests;
mod error;
#[cfg(test)]
mod executor_tests;
mod extract;
#[cfg(test)]
mod healing_tests;
#[cfg(test)]
mod ingest_tests;
mod middleware;
#[cfg(test)]
mod objects_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
#[cfg(feature = "sql")]
mod query_tests;
mod routes;
pub mod server;
mod state;
#[cfg(test)]
mod tests;

pub use error::{ApiError, ErrorCode};
pub use extract::Json;
pub use middleware::{REQUEST_ID_HEADER, RequestId};
pub use routes::{app, openapi_json};
pub use state::AppState;
