//! `/executor/*` and `/audit/logs`: signed remediation requests and the action audit.

use aegis_store::{ActionAuditQuery, ActionAuditRow, ExecutorStore};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::{ApiError, AppState, Json};

/// `POST /executor/execute`: see [`aegis_runtime::guards`] for the guards.
// The summary is the one published before the guards moved to the runtime crate: the
// document clients generate from stays byte for byte the same.
#[utoipa::path(post, operation_id = "executor_execute", path = "/executor/execute", tag = "executor",
    summary = "`POST /executor/execute`: see [`crate::executor_service`] for the guards.",
    params(("X-Aegis-Signature" = String, Header, description = "hex HMAC-SHA256 of the exact body bytes")),
    request_body(content = Object, description = "`{action, namespace, target, params, reason, timestamp, nonce, idempotency_key?}`"),
    responses((status = 200, body = Object, description = "succeeded or dry_run"), (status = 400), (status = 401),
        (status = 403, description = "namespace, policy or a refused outcome"), (status = 409, description = "replayed nonce"),
        (status = 429, description = "rate, cooldown or blast radius"), (status = 502, description = "the Kubernetes API failed")))]
pub(crate) async fn execute(
    State(state): State<AppState>,
    caller: Option<Caller>,
    crate::access::ClientIp(ip): crate::access::ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let signature = headers
        .get("x-aegis-signature")
        .and_then(|v| v.to_str().ok());
    // An anonymous request whose signature fails is a failed authentication: it costs the
    // client IP what a failed login costs, and once that budget is spent it is a 429
    // before it costs an audit row.
    if caller.is_none()
        && state.executor().check_signature(&body, signature).is_err()
        && let Err(retry_after) = state
            .limiter()
            .check(aegis_runtime::ratelimit::Class::LoginIp, &ip)
            .await
    {
        return Err(ApiError::rate_limited(retry_after));
    }
    let response = state
        .executor()
        .execute(
            state.store(),
            state.policies(),
            caller.as_ref().map(Caller::principal),
            &body,
            signature,
        )
        .await?;
    Ok((status_of(&response), Json(response)))
}

/// The status of an executed, held or refused action's answer.
pub(crate) fn status_of(response: &aegis_runtime::guards::ExecuteResponse) -> StatusCode {
    match response.status {
        "awaiting_approval" => StatusCode::ACCEPTED,
        "denied" => StatusCode::FORBIDDEN,
        "failed" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::OK,
    }
}

#[derive(Serialize)]
pub(crate) struct Signed {
    signature: String,
    algorithm: &'static str,
    header: &'static str,
}

/// `POST /executor/generate-signature`: signs the exact body bytes (admins, for manual use).
#[utoipa::path(post, operation_id = "executor_generate_signature", path = "/executor/generate-signature", tag = "executor",
    request_body(content = Object, description = "the exact body to sign"),
    responses((status = 200, body = Object), (status = 503, description = "no action secret configured")),
    security(("bearer" = [])))]
pub(crate) async fn generate_signature(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Signed>, ApiError> {
    let signature = state.executor().sign(&body).ok_or_else(|| {
        ApiError::unavailable("AEGIS_ACTION_SECRET is not set; nothing can be signed", 0)
    })?;
    Ok(Json(Signed {
        signature,
        algorithm: "HMAC-SHA256",
        header: "X-Aegis-Signature",
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    status: Option<String>,
    action: Option<String>,
    namespace: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct AuditRowView {
    #[serde(flatten)]
    row: ActionAuditRow,
    details: serde_json::Value,
}

#[derive(Serialize)]
pub(crate) struct AuditPage {
    logs: Vec<AuditRowView>,
    next_cursor: Option<String>,
}

const STATUSES: [&str; 6] = [
    "pending",
    "succeeded",
    "failed",
    "dry_run",
    "denied",
    "unknown",
];

/// `GET /audit/logs`: the executor's audit chain, newest first.
#[utoipa::path(get, operation_id = "executor_audit_logs", path = "/audit/logs", tag = "executor",
    params(("status" = Option<String>, Query), ("action" = Option<String>, Query), ("namespace" = Option<String>, Query),
        ("from" = Option<String>, Query), ("to" = Option<String>, Query), ("cursor" = Option<String>, Query),
        ("limit" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = 400)), security(("bearer" = [])))]
pub(crate) async fn audit_logs(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(s) = &p.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`status` must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let w = super::paging::window(
        p.from.as_deref(),
        p.to.as_deref(),
        p.cursor.as_deref(),
        p.limit,
    )?;
    let query = ActionAuditQuery {
        status: p.status,
        action: p.action,
        namespace: p.namespace,
        from: w.from,
        to: w.to,
        before_id: w.before_id,
        limit: w.limit,
    };
    let rows = state.store().list_action_audit(&query).await?;
    let next_cursor = super::paging::next_cursor(rows.len(), w.limit, rows.last().map(|r| r.id));
    let logs = rows
        .into_iter()
        .map(|row| AuditRowView {
            details: serde_json::from_str(&row.details).unwrap_or(serde_json::Value::Null),
            row,
        })
        .collect();
    Ok(Json(AuditPage { logs, next_cursor }))
}
