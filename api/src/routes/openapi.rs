//! The OpenAPI document (`/api/v1/openapi.json`), generated from the handlers' annotations,
//! and Swagger UI at `/docs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    approvals, auth, detect, executor, health, ingest, metrics, policies, policy, service_tokens,
    users,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT access token or aegs_ service token")
                    .build(),
            ),
        );
    }
}

/// Every endpoint Aegis serves.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aegis",
        description = "Policy-driven self-healing infrastructure: ingest, detect, decide, remediate, audit. \
                       Errors are always `{\"error\": {\"code\", \"message\", \"request_id\"}}`."
    ),
    modifiers(&BearerAuth),
    paths(
        health::health,
        health::health_v1,
        metrics::metrics,
        auth::signup,
        auth::login,
        auth::refresh,
        auth::logout,
        users::list,
        users::get,
        users::update,
        users::delete,
        users::me,
        users::update_me,
        service_tokens::create,
        service_tokens::list,
        service_tokens::revoke,
        policies::list,
        policies::create,
        policies::get,
        policies::update,
        policies::delete,
        policies::versions,
        policies::restore,
        policy::evaluate,
        policy::stop_status,
        policy::emergency_stop,
        policy::resume,
        policy::audit_logs,
        policy::shadow,
        executor::execute,
        executor::generate_signature,
        executor::audit_logs,
        approvals::list,
        approvals::get,
        approvals::approve,
        approvals::reject,
        approvals::breakers,
        approvals::reset_breaker,
        approvals::decision_records,
        approvals::decision_record,
        detect::detect_anomaly,
        detect::detect_failure,
        detect::predictions,
        detect::stats,
        detect::add_training_data,
        detect::retrain,
        ingest::remote_write,
        super::alerts::receive,
        ingest::series,
        ingest::loki_push,
        ingest::streams,
    ),
    tags(
        (name = "operations", description = "health and metrics"),
        (name = "auth", description = "signup, login, token refresh and logout"),
        (name = "users", description = "user management and the caller's own account"),
        (name = "service tokens", description = "bearer tokens for machines"),
        (name = "policies", description = "policy CRUD with versions"),
        (name = "policy", description = "evaluation, emergency stop, decision audit"),
        (name = "executor", description = "signed remediation requests and the action audit"),
        (name = "approvals", description = "actions held for a person's approval"),
        (name = "breakers", description = "circuit breakers of targets whose actions did not help"),
        (name = "decisions", description = "the engine's decision records: evidence, decision, why not, guards, outcome"),
        (name = "ingest", description = "Prometheus remote write and Loki push"),
        (name = "detectors", description = "anomaly and failure detection, prediction history, model statistics"),
    )
)]
pub(crate) struct ApiDoc;

/// `POST /api/v1/query`, present when the `sql` feature is.
#[cfg(feature = "sql")]
#[derive(OpenApi)]
#[openapi(paths(super::query::query))]
struct QueryDoc;

/// The whole document: every endpoint this build serves.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    #[allow(unused_mut, reason = "only the `sql` build adds paths")]
    let mut doc = ApiDoc::openapi();
    #[cfg(feature = "sql")]
    doc.merge(QueryDoc::openapi());
    doc
}

/// The document as JSON text.
pub fn openapi_json() -> String {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}"))
}
