//! `/api/v1/policy/*`: evaluate, the emergency stop, and the decision audit.

use aegis_core::metric_names;
use aegis_policy::{PolicyType, Request};
use aegis_store::{PolicyAuditQuery, PolicyAuditRow, PolicyStore};
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::paging;
use crate::auth::Caller;
use crate::{ApiError, AppState, Json, RequestId};

/// Longest action or resource accepted, in bytes.
const MAX_NAME_LEN: usize = 512;
/// Most roles a request's context may name.
const MAX_ROLES: usize = 32;

#[derive(Serialize)]
struct PolicyRef {
    id: String,
    name: String,
}

#[derive(Serialize)]
struct MatchingPolicy {
    id: String,
    name: String,
    priority: i32,
    effect: &'static str,
}

#[derive(Serialize)]
pub(super) struct EvaluateResponse {
    allowed: bool,
    decision: &'static str,
    reason: String,
    policy: Option<PolicyRef>,
    matching_policies: Vec<MatchingPolicy>,
    kind: aegis_policy::DecisionKind,
    emergency_stop: bool,
    evaluated_in_us: u64,
    evaluated_in_ns: u64,
    evaluated_at: DateTime<Utc>,
    /// With `?explain=true`: every candidate policy and why it did or did not decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates: Option<Vec<aegis_policy::explain::Candidate>>,
}

/// Query of `POST /api/v1/policy/evaluate`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct EvaluateQuery {
    /// Explain every candidate policy ("why not").
    #[serde(default)]
    explain: bool,
}

#[utoipa::path(post, operation_id = "policy_evaluate", path = "/api/v1/policy/evaluate", tag = "policy", params(("explain" = Option<bool>, Query, description = "also list every candidate policy and why it did or did not decide")), request_body = Object, responses((status = 200, body = Object), (status = 400)), security(("bearer" = [])))]
pub(super) async fn evaluate(
    State(state): State<AppState>,
    caller: Option<Caller>,
    request_id: Option<axum::Extension<RequestId>>,
    Query(query): Query<EvaluateQuery>,
    Json(req): Json<Request>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    for (field, value) in [("action", &req.action), ("resource", &req.resource)] {
        if value.is_empty() || value.len() > MAX_NAME_LEN {
            return Err(ApiError::bad_request(format!(
                "`{field}` must be 1 to {MAX_NAME_LEN} bytes long"
            )));
        }
    }
    // The subject named in the context is recorded with the decision: bounded like names.
    let subject = [req.context.user_id.as_deref(), req.context.role.as_deref()];
    if subject.iter().flatten().any(|v| v.len() > MAX_NAME_LEN)
        || req.context.roles.len() > MAX_ROLES
        || req.context.roles.iter().any(|r| r.len() > MAX_NAME_LEN)
    {
        return Err(ApiError::bad_request(format!(
            "`context.user_id`, `context.role` and each of `context.roles` (at most {MAX_ROLES}) must be at most {MAX_NAME_LEN} bytes long"
        )));
    }
    let service = state.policies();
    // `context.time` asks "what if it were then?"; without it, now.
    let at = req.context.time.unwrap_or_else(Utc::now);
    let decision = service.engine().evaluate_at(&req, at);
    metrics::histogram!(metric_names::POLICY_EVALUATION_DURATION_SECONDS)
        .record(decision.elapsed().as_secs_f64());
    metrics::counter!(metric_names::POLICY_EVALUATIONS_TOTAL,
        "type" => req.policy_type.as_str(), "decision" => decision.decision())
    .increment(1);
    service
        .record(
            &req,
            &decision,
            request_id.map(|r| r.0.0.clone()),
            caller
                .as_ref()
                .map(|c| aegis_runtime::Asker::of(c.principal())),
        )
        .await?;
    let elapsed = decision.elapsed();
    let candidates = query.explain.then(|| {
        let (mut policies, files) = service.engine().sources();
        policies.extend(files);
        aegis_policy::explain::explain(&policies, &req, at, &decision)
    });
    Ok(Json(EvaluateResponse {
        candidates,
        allowed: decision.allowed(),
        decision: decision.decision(),
        reason: decision.reason(),
        policy: decision.policy().map(|p| PolicyRef {
            id: p.id.clone(),
            name: p.name.clone(),
        }),
        matching_policies: decision
            .matching()
            .map(|p| MatchingPolicy {
                id: p.id.clone(),
                name: p.name.clone(),
                priority: p.priority,
                effect: p.effect.as_decision(),
            })
            .collect(),
        kind: decision.kind(),
        emergency_stop: service.engine().is_stopped(),
        evaluated_in_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        evaluated_in_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        evaluated_at: at,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StopRequest {
    /// Why, for the audit trail.
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize)]
pub(super) struct StopStatus {
    emergency_stop: bool,
    since: Option<DateTime<Utc>>,
}

fn status(state: &AppState) -> StopStatus {
    let since = state.policies().stopped_since();
    StopStatus {
        emergency_stop: state.policies().engine().is_stopped(),
        since,
    }
}

#[utoipa::path(get, operation_id = "policy_stop_status", path = "/api/v1/policy/emergency-stop", tag = "policy", responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(super) async fn stop_status(State(state): State<AppState>) -> Json<StopStatus> {
    Json(status(&state))
}

async fn switch(
    state: &AppState,
    caller: Option<Caller>,
    on: bool,
    request_id: Option<axum::Extension<RequestId>>,
    body: axum::body::Bytes,
) -> Result<Json<StopStatus>, ApiError> {
    // The body is optional: an empty POST works from a pager at 3 a.m.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<StopRequest>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?
            .reason
    };
    state
        .policies()
        .set_emergency_stop(
            on,
            caller.map(|c| c.id),
            reason,
            request_id.map(|r| r.0.0.clone()),
        )
        .await?;
    Ok(Json(status(state)))
}

#[utoipa::path(post, operation_id = "policy_emergency_stop", path = "/api/v1/policy/emergency-stop", tag = "policy", request_body(content = Object, description = "optional `{\"reason\": \"...\"}`"), responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(super) async fn emergency_stop(
    State(state): State<AppState>,
    caller: Option<Caller>,
    request_id: Option<axum::Extension<RequestId>>,
    body: axum::body::Bytes,
) -> Result<Json<StopStatus>, ApiError> {
    switch(&state, caller, true, request_id, body).await
}

#[utoipa::path(post, operation_id = "policy_resume", path = "/api/v1/policy/resume", tag = "policy", request_body(content = Object, description = "optional `{\"reason\": \"...\"}`"), responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(super) async fn resume(
    State(state): State<AppState>,
    caller: Option<Caller>,
    request_id: Option<axum::Extension<RequestId>>,
    body: axum::body::Bytes,
) -> Result<Json<StopStatus>, ApiError> {
    switch(&state, caller, false, request_id, body).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    decision: Option<String>,
    #[serde(rename = "type", alias = "policy_type")]
    policy_type: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct AuditPage {
    logs: Vec<PolicyAuditRow>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, operation_id = "policy_audit_logs", path = "/api/v1/policy/audit/logs", tag = "policy", params(("decision" = Option<String>, Query), ("type" = Option<String>, Query), ("action" = Option<String>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query), ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, body = Object), (status = 400)), security(("bearer" = [])))]
pub(super) async fn audit_logs(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let decision = p
        .decision
        .map(|d| match d.to_ascii_uppercase().as_str() {
            "ALLOW" => Ok("ALLOW".to_owned()),
            "DENY" => Ok("DENY".to_owned()),
            _ => Err(ApiError::bad_request(format!(
                "`decision` must be ALLOW or DENY, not `{d}`"
            ))),
        })
        .transpose()?;
    let policy_type = p
        .policy_type
        .map(|t| {
            t.parse::<PolicyType>()
                .map(|t| t.as_str().to_owned())
                .map_err(ApiError::bad_request)
        })
        .transpose()?;
    let w = paging::window(
        p.from.as_deref(),
        p.to.as_deref(),
        p.cursor.as_deref(),
        p.limit,
    )?;
    let query = PolicyAuditQuery {
        decision,
        policy_type,
        action: p.action,
        from: w.from,
        to: w.to,
        before_id: w.before_id,
        limit: w.limit,
    };
    let logs = state.store().list_policy_audit(&query).await?;
    let next_cursor = paging::next_cursor(logs.len(), w.limit, logs.last().map(|r| r.id));
    Ok(Json(AuditPage { logs, next_cursor }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ShadowParams {
    /// Only decisions where the shadow set differs from the live one.
    #[serde(default)]
    differs: bool,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct ShadowList {
    count: usize,
    decisions: Vec<aegis_store::ShadowDecision>,
}

/// `GET /api/v1/policy/shadow`: the shadow policy set's answers next to the live ones,
/// newest first (`?differs=true` for the differences only).
#[utoipa::path(get, operation_id = "policy_shadow", path = "/api/v1/policy/shadow", tag = "policy",
    params(("differs" = Option<bool>, Query), ("limit" = Option<i64>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, body = Object), (status = 400)), security(("bearer" = [])))]
pub(super) async fn shadow(
    State(state): State<AppState>,
    Query(params): Query<ShadowParams>,
) -> Result<Json<ShadowList>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be 1 to 1000"));
    }
    let decisions = state
        .store()
        .list_shadow_decisions(params.differs, limit)
        .await?;
    Ok(Json(ShadowList {
        count: decisions.len(),
        decisions,
    }))
}
