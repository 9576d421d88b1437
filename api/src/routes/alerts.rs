//! `POST /api/v1/alerts`: Alertmanager's webhook (payload version 4). Authenticated like
//! ingest (a service token, or the static `ingest_token`); each alert that names a workload
//! becomes a detection the self-healing loop decides on (see
//! `aegis_runtime::healing::alerts`).

use aegis_runtime::healing::{AlertOutcome, AlertmanagerPayload};
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;

use crate::{ApiError, AppState, Json};

/// The answer: what became of each alert, and a count per result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AlertsAnswer {
    /// Alerts in the payload.
    received: usize,
    /// Alerts put to the policy engine.
    acted: usize,
    /// Per alert: fingerprint, alertname, entity, result, incident and the loop's event.
    #[schema(value_type = Vec<Object>)]
    alerts: Vec<AlertOutcome>,
}

/// `POST /api/v1/alerts`.
#[utoipa::path(post, operation_id = "alerts_receive", path = "/api/v1/alerts", tag = "ingest",
    request_body(content = Object, content_type = "application/json", description = "Alertmanager webhook payload, version 4"),
    responses((status = 200, body = AlertsAnswer, description = "every alert recorded: `acted`, `duplicate`, `resolved`, `no_workload` or `unmapped`"),
        (status = 400, description = "not a version-4 Alertmanager payload, or over a limit (1,000 alerts, 64 labels, 4 KiB values)"),
        (status = 413), (status = 503, description = "the self-healing loop is not running")),
    security(("bearer" = [])))]
pub(crate) async fn receive(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<AlertsAnswer>, ApiError> {
    let payload = AlertmanagerPayload::parse(&body).map_err(ApiError::bad_request)?;
    let Some(healing) = state.healing() else {
        return Err(ApiError::unavailable(
            "the self-healing loop is not running in this process",
            30,
        ));
    };
    let alerts = healing.on_alerts(&payload).await;
    Ok(Json(AlertsAnswer {
        received: alerts.len(),
        acted: alerts.iter().filter(|a| a.result == "acted").count(),
        alerts,
    }))
}
