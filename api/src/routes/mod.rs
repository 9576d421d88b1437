//! The router and its endpoints.

mod health;
mod metrics;
mod policies;
mod policy;

use axum::Router;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::AppState;
use crate::middleware::{record_metrics, request_context};

/// Builds the whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    let max_body = state.max_body_bytes();
    Router::new()
        .route("/health", get(health::health))
        .route("/api/v1/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/api/v1/policies",
            get(policies::list).post(policies::create),
        )
        .route(
            "/api/v1/policies/{id}",
            get(policies::get)
                .put(policies::update)
                .delete(policies::delete),
        )
        .route("/api/v1/policies/{id}/versions", get(policies::versions))
        .route(
            "/api/v1/policies/{id}/versions/{version}/restore",
            post(policies::restore),
        )
        .route("/api/v1/policy/evaluate", post(policy::evaluate))
        .route(
            "/api/v1/policy/emergency-stop",
            get(policy::stop_status).post(policy::emergency_stop),
        )
        .route("/api/v1/policy/resume", post(policy::resume))
        .route("/api/v1/policy/audit/logs", get(policy::audit_logs))
        .with_state(state)
        // Layers run bottom-up on the way in: request id and envelope first, so everything
        // below (limits, panics, metrics) answers in the error envelope with the id.
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(CatchPanicLayer::new())
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn(request_context))
}
