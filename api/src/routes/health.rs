//! `GET /health` and `GET /api/v1/health`.

use std::time::Duration;

use aegis_store::DatabaseHealth;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::{AppState, Json};

/// How long the database check may take before the database counts as down.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    components: Components,
}

#[derive(Serialize)]
struct Components {
    database: DatabaseHealth,
    executor: ExecutorHealth,
    policies: aegis_runtime::PolicyHealth,
}

#[derive(Serialize)]
struct ExecutorHealth {
    status: &'static str,
    mode: &'static str,
}

/// Component status: 200 with `status: ok` when everything works, 503 with
/// `status: degraded` (and the failing component's error) when not, so a load balancer or
/// readiness probe can act on the status code alone.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "all components ok", body = Object), (status = 503, description = "the database is down", body = Object)))]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.store().health()).await
    {
        Ok(health) => health,
        Err(_) => DatabaseHealth {
            status: "down",
            backend: state.store().backend(),
            schema_version: None,
            latency_ms: None,
            error: Some(format!(
                "no answer within {}s",
                DATABASE_CHECK_TIMEOUT.as_secs()
            )),
        },
    };
    // A database that is down makes the process unable to serve (503); a policy source
    // that failed to load leaves the previous policies in force and shows as `degraded`.
    // A stalled decision audit writer is the other: no evaluation can be answered.
    let ok = database.status == "ok" && !state.policies().audit_stalled();
    let policies = state.policies().health();
    let all_ok = ok && policies.status == "ok";
    let body = Health {
        status: if all_ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started().elapsed().as_secs(),
        components: Components {
            database,
            executor: ExecutorHealth {
                status: "ok",
                mode: state.executor_mode().as_str(),
            },
            policies,
        },
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The same answer under the API prefix.
#[utoipa::path(get, path = "/api/v1/health", tag = "operations", responses((status = 200, description = "all components ok", body = Object), (status = 503, description = "the database is down", body = Object)))]
pub(super) async fn health_v1(state: State<AppState>) -> Response {
    health(state).await
}
