//! `/api/v1/approvals`: actions an ALLOW policy with `require_approval` held back, with the
//! dry-run of what each would do; approve (the action then goes through every guard again
//! and is carried out) or reject. Who may do either is up to the `api_access` policies.

use aegis_store::Approval;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::{ApiError, AppState, Json};
use aegis_runtime::guards::ExecuteResponse;

const STATUSES: [&str; 4] = ["pending", "approved", "rejected", "expired"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
}

/// An approval as the API shows it: the stored JSON fields as JSON.
#[derive(Serialize)]
pub(super) struct ApprovalView {
    #[serde(flatten)]
    approval: Approval,
    request: Value,
    question: Value,
    dry_run: Value,
}

fn view(a: Approval) -> ApprovalView {
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(Value::Null);
    ApprovalView {
        request: parse(&a.request),
        question: parse(&a.question),
        dry_run: parse(&a.dry_run),
        approval: a,
    }
}

#[derive(Serialize)]
pub(super) struct ApprovalList {
    count: usize,
    approvals: Vec<ApprovalView>,
}

/// `GET /api/v1/approvals`: newest first; `?status=pending` for the queue.
#[utoipa::path(get, operation_id = "approvals_list", path = "/api/v1/approvals", tag = "approvals",
    params(("status" = Option<String>, Query, description = "pending, approved, rejected or expired"),
           ("limit" = Option<i64>, Query, description = "1 to 500, default 100")),
    responses((status = 200, body = Object), (status = 400)), security(("bearer" = [])))]
pub(super) async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<ApprovalList>, ApiError> {
    if let Some(s) = &params.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`status` must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be 1 to 500"));
    }
    state.executor().expire_approvals(state.store()).await?;
    let rows = state
        .store()
        .list_approvals(params.status.as_deref(), limit)
        .await?;
    let approvals: Vec<ApprovalView> = rows.into_iter().map(view).collect();
    Ok(Json(ApprovalList {
        count: approvals.len(),
        approvals,
    }))
}

/// `GET /api/v1/approvals/{id}`.
#[utoipa::path(get, operation_id = "approvals_get", path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404)), security(("bearer" = [])))]
pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    state.executor().expire_approvals(state.store()).await?;
    let a = state
        .store()
        .get_approval(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no approval with id `{id}`")))?;
    Ok(Json(view(a)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecideBody {
    /// Why, for the audit trail.
    reason: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Decided {
    approval: ApprovalView,
    /// The executor's answer, for an approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<ExecuteResponse>,
}

async fn decide(
    state: AppState,
    caller: Option<Caller>,
    id: String,
    body: Bytes,
    approve: bool,
) -> Result<Json<Decided>, ApiError> {
    let caller = caller.ok_or_else(|| ApiError::unauthenticated("a bearer token is needed"))?;
    // The body is optional: nothing, or `{"reason": "..."}`.
    let body: DecideBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecideBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let reason = body.reason;
    if reason.as_ref().is_some_and(|r| r.len() > 2_000) {
        return Err(ApiError::bad_request("`reason` may be at most 2000 bytes"));
    }
    let (approval, action) = state
        .executor()
        .decide_approval(
            state.store(),
            state.policies(),
            &id,
            approve,
            &caller.id,
            reason.as_deref(),
        )
        .await?;
    Ok(Json(Decided {
        approval: view(approval),
        action,
    }))
}

/// `POST /api/v1/approvals/{id}/approve`: the action goes through every guard again and is
/// carried out; 409 when it was decided already or has expired.
#[utoipa::path(post, operation_id = "approvals_approve", path = "/api/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path)), request_body(content = Object, description = "`{reason?}`"),
    responses((status = 200, body = Object), (status = 404), (status = 409), (status = 403), (status = 429)), security(("bearer" = [])))]
pub(super) async fn approve(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Decided>, ApiError> {
    decide(state, caller, id, body, true).await
}

/// `POST /api/v1/approvals/{id}/reject`.
#[utoipa::path(post, operation_id = "approvals_reject", path = "/api/v1/approvals/{id}/reject", tag = "approvals",
    params(("id" = String, Path)), request_body(content = Object, description = "`{reason?}`"),
    responses((status = 200, body = Object), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(super) async fn reject(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Decided>, ApiError> {
    decide(state, caller, id, body, false).await
}

#[derive(Serialize)]
pub(super) struct BreakerList {
    count: usize,
    breakers: Vec<aegis_store::Breaker>,
}

/// `GET /api/v1/breakers`: circuit breakers per target, open ones first.
#[utoipa::path(get, operation_id = "breakers_list", path = "/api/v1/breakers", tag = "breakers",
    responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(super) async fn breakers(State(state): State<AppState>) -> Result<Json<BreakerList>, ApiError> {
    let breakers = state.store().list_breakers().await?;
    Ok(Json(BreakerList {
        count: breakers.len(),
        breakers,
    }))
}

/// `POST /api/v1/breakers/{namespace}/{name}/reset`: closes a target's breaker after an
/// operator checked it; audited.
#[utoipa::path(post, operation_id = "breakers_reset", path = "/api/v1/breakers/{namespace}/{name}/reset", tag = "breakers",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404)), security(("bearer" = [])))]
pub(super) async fn reset_breaker(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<aegis_store::Breaker>, ApiError> {
    use aegis_store::AuditLog;
    let caller = caller.ok_or_else(|| ApiError::unauthenticated("a bearer token is needed"))?;
    let entity = format!("{namespace}/{name}");
    let breaker = state
        .store()
        .reset_breaker(&entity, &caller.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no breaker for `{entity}`")))?;
    state
        .store()
        .append_action_audit(&[aegis_store::NewActionAudit {
            created_at: None,
            action_id: uuid::Uuid::now_v7().to_string(),
            phase: "breaker".to_owned(),
            action: "reset".to_owned(),
            namespace,
            target: format!("deployment/{name}"),
            status: "reset".to_owned(),
            actor: Some(caller.id.clone()),
            reason: Some(format!("breaker on {entity} reset by {}", caller.id)),
            details: serde_json::json!({"entity": entity}),
        }])
        .await?;
    Ok(Json(breaker))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordParams {
    /// `namespace/workload`.
    entity: Option<String>,
    limit: Option<i64>,
}

/// A decision record as the API shows it.
#[derive(Serialize)]
pub(super) struct RecordView {
    #[serde(flatten)]
    row: aegis_store::DecisionRecord,
    record: Value,
}

fn record_view(row: aegis_store::DecisionRecord) -> RecordView {
    RecordView {
        record: serde_json::from_str(&row.record).unwrap_or(Value::Null),
        row,
    }
}

#[derive(Serialize)]
pub(super) struct RecordList {
    count: usize,
    records: Vec<RecordView>,
}

/// `GET /api/v1/decisions`: the engine's decision records, newest first.
#[utoipa::path(get, operation_id = "decisions_list", path = "/api/v1/decisions", tag = "decisions",
    params(("entity" = Option<String>, Query, description = "namespace/workload"),
           ("limit" = Option<i64>, Query, description = "1 to 500, default 50")),
    responses((status = 200, body = Object), (status = 400)), security(("bearer" = [])))]
pub(super) async fn decision_records(
    State(state): State<AppState>,
    Query(params): Query<RecordParams>,
) -> Result<Json<RecordList>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be 1 to 500"));
    }
    let rows = state
        .store()
        .list_decision_records(params.entity.as_deref(), limit)
        .await?;
    let records: Vec<RecordView> = rows.into_iter().map(record_view).collect();
    Ok(Json(RecordList {
        count: records.len(),
        records,
    }))
}

/// `GET /api/v1/decisions/{id}`: one decision record — evidence, the decision with every
/// other candidate policy's "why not", the guard state, the approval, the request and the
/// outcome. Action audit rows name it in `details.decision_record`.
#[utoipa::path(get, operation_id = "decisions_get", path = "/api/v1/decisions/{id}", tag = "decisions",
    params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404)), security(("bearer" = [])))]
pub(super) async fn decision_record(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RecordView>, ApiError> {
    let row = state
        .store()
        .decision_record(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no decision record with id `{id}`")))?;
    Ok(Json(record_view(row)))
}
