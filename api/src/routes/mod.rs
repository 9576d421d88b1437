//! The router and its endpoints.

mod auth;
mod health;
mod metrics;
mod policies;
mod policy;
mod service_tokens;
mod users;

use axum::Router;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::AppState;
use crate::access::access;
use crate::middleware::{record_metrics, request_context};

/// Builds the whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    let max_body = state.max_body_bytes();
    Router::new()
        .route("/health", get(health::health))
        .route("/api/v1/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/auth/signup", post(auth::signup))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/users", get(users::list))
        .route("/api/v1/users/me", get(users::me).patch(users::update_me))
        .route(
            "/api/v1/users/{id}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route(
            "/api/v1/service-tokens",
            get(service_tokens::list).post(service_tokens::create),
        )
        .route(
            "/api/v1/service-tokens/{id}",
            axum::routing::delete(service_tokens::revoke),
        )
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
        // Only matched routes pass the front door; unknown paths are plain 404s.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access))
        .with_state(state)
        // Layers run bottom-up on the way in: request id and envelope first, so everything
        // below (limits, panics, metrics) answers in the error envelope with the id.
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(CatchPanicLayer::new())
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn(request_context))
}
