//! The router and its endpoints.

mod alerts;
mod approvals;
mod auth;
mod detect;
mod executor;
mod health;
mod ingest;
mod metrics;
mod openapi;
mod paging;
mod policies;
mod policy;
#[cfg(feature = "sql")]
pub(crate) mod query;
mod service_tokens;
mod users;

use axum::Router;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

pub use openapi::openapi_json;

use crate::AppState;
use crate::access::access;
use crate::middleware::{read_body_in_time, record_metrics, request_context, security_headers};

/// Most queries one server plans or runs at once (`POST /api/v1/query`), each on its own
/// blocking thread; one more is a 503.
pub const MAX_RUNNING_QUERIES: usize = aegis_sql::MAX_RUNNING_QUERIES;

/// Builds the whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    let max_body = state.max_body_bytes();
    let body_timeout = state.body_read_timeout();
    let cors_origins = state.cors_origins().to_vec();
    let router = Router::new()
        .route("/health", get(health::health))
        .route("/api/v1/health", get(health::health_v1))
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
        .route("/api/v1/policy/shadow", get(policy::shadow))
        .route("/executor/execute", post(executor::execute))
        .route(
            "/executor/generate-signature",
            post(executor::generate_signature),
        )
        .route("/audit/logs", get(executor::audit_logs))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/approvals/{id}", get(approvals::get))
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/reject", post(approvals::reject))
        .route("/api/v1/breakers", get(approvals::breakers))
        .route("/api/v1/decisions", get(approvals::decision_records))
        .route("/api/v1/decisions/{id}", get(approvals::decision_record))
        .route(
            "/api/v1/breakers/{namespace}/{name}/reset",
            post(approvals::reset_breaker),
        )
        .route("/api/v1/detect-anomaly", post(detect::detect_anomaly))
        .route("/api/v1/detect-failure", post(detect::detect_failure))
        .route("/api/v1/metrics/predictions", get(detect::predictions))
        .route("/api/v1/metrics/stats", get(detect::stats))
        .route("/api/v1/training-data", post(detect::add_training_data))
        .route("/api/v1/models/retrain", post(detect::retrain))
        .route("/api/v1/write", post(ingest::remote_write))
        .route("/api/v1/alerts", post(alerts::receive))
        .route("/api/v1/ingest/series", get(ingest::series))
        .route("/loki/api/v1/push", post(ingest::loki_push))
        .route("/api/v1/ingest/streams", get(ingest::streams));
    #[cfg(feature = "sql")]
    let router = router.route("/api/v1/query", post(query::query));
    router
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .url("/api/v1/openapi.json", openapi::document()),
        )
        // Only matched routes pass the front door; unknown paths are plain 404s.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access))
        .with_state(state)
        // Layers run bottom-up on the way in: request id and envelope first, so everything
        // below (limits, panics, metrics) answers in the error envelope with the id.
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(cors(&cors_origins))
        .layer(CatchPanicLayer::new())
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(move |req, next| {
            read_body_in_time(body_timeout, req, next)
        }))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn(request_context))
}

/// CORS for the configured origins; none configured means no cross-origin access at all.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use http::{HeaderName, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};

    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<http::HeaderValue> = origins
            .iter()
            .filter_map(|o| o.trim_end_matches('/').parse().ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}
