//! `/api/v1/policies`: policy CRUD; every change is a new version, old versions restore.

use aegis_policy::PolicySpec;
use aegis_store::{PolicyRecord, PolicyStore, PolicyVersion};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::{ApiError, AppState, Json};
use aegis_runtime::policy_service::{to_policy, to_write};

/// A policy as the API shows it: the document plus its identity and version.
fn view(record: &PolicyRecord) -> Value {
    let mut body = match &record.body {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    body.insert("id".into(), Value::String(record.id.clone()));
    body.insert("version".into(), Value::from(record.version));
    body.insert("source".into(), Value::String(record.source.clone()));
    body.insert("created_at".into(), serde_json::json!(record.created_at));
    body.insert("updated_at".into(), serde_json::json!(record.updated_at));
    Value::Object(body)
}

/// Parses and validates a policy document; the fields the API adds are ignored on input so a
/// client may send back what it read.
fn parse(mut body: Value) -> Result<PolicySpec, ApiError> {
    if let Value::Object(map) = &mut body {
        for key in [
            "id",
            "version",
            "source",
            "created_at",
            "updated_at",
            "createdAt",
            "updatedAt",
        ] {
            map.remove(key);
        }
    }
    let spec = PolicySpec::from_json(body)
        .map_err(|e| ApiError::bad_request(format!("invalid policy: {e}")))?;
    if spec.name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid policy: `name` must not be empty",
        ));
    }
    Ok(spec)
}

/// `If-Match: "3"` (or `3`): the version the client last read.
fn expected_version(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("`If-Match` must be a policy version, e.g. \"3\""))
}

/// Who made a change, for the version history.
fn by(caller: Option<&Caller>) -> Option<&str> {
    caller.map(|c| c.id.as_str())
}

async fn reload(state: &AppState) -> Result<(), ApiError> {
    state
        .policies()
        .reload_database()
        .await
        .map_err(ApiError::internal)
}

#[derive(Serialize)]
pub(super) struct PolicyList {
    policies: Vec<Value>,
    count: usize,
}

#[utoipa::path(get, operation_id = "policy_list", path = "/api/v1/policies", tag = "policies", responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<PolicyList>, ApiError> {
    let records = state.store().list_policies().await?;
    let policies: Vec<Value> = records.iter().map(view).collect();
    Ok(Json(PolicyList {
        count: policies.len(),
        policies,
    }))
}

#[utoipa::path(post, operation_id = "policy_create", path = "/api/v1/policies", tag = "policies", request_body = Object, responses((status = 201, body = Object), (status = 400), (status = 409)), security(("bearer" = [])))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Json(body): Json<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = parse(body)?;
    guard(&state, |db| {
        db.push(aegis_policy::Policy {
            id: "db:new".to_owned(),
            spec: spec.clone(),
            origin: aegis_policy::Origin::Database { version: 1 },
        });
    })?;
    let record = state
        .store()
        .create_policy(&to_write(&spec), "api", by(caller.as_ref()))
        .await?;
    // Compile before answering, so a 201 means "in force".
    to_policy(&record).map_err(ApiError::internal)?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(view(&record))))
}

#[utoipa::path(get, operation_id = "policy_get", path = "/api/v1/policies/{id}", tag = "policies", params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404)), security(("bearer" = [])))]
pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state
        .store()
        .get_policy(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no policy with id `{id}`")))?;
    Ok(Json(view(&record)))
}

#[utoipa::path(put, operation_id = "policy_update", path = "/api/v1/policies/{id}", tag = "policies", params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the version last read")), request_body = Object, responses((status = 200, body = Object), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let expected = expected_version(&headers)?;
    let spec = parse(body)?;
    guard(&state, |db| {
        for p in db.iter_mut().filter(|p| p.id == id) {
            p.spec = spec.clone();
        }
    })?;
    let record = state
        .store()
        .update_policy(&id, &to_write(&spec), expected, by(caller.as_ref()))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no policy with id `{id}`")))?;
    reload(&state).await?;
    Ok(Json(view(&record)))
}

#[utoipa::path(delete, operation_id = "policy_delete", path = "/api/v1/policies/{id}", tag = "policies", params(("id" = String, Path)), responses((status = 204), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Removing a deny can open what an invariant closes.
    guard(&state, |db| db.retain(|p| p.id != id))?;
    state
        .store()
        .delete_policy(&id, by(caller.as_ref()))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no policy with id `{id}`")))?;
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub(super) struct History {
    policy_id: String,
    versions: Vec<PolicyVersion>,
}

#[utoipa::path(get, operation_id = "policy_versions", path = "/api/v1/policies/{id}/versions", tag = "policies", params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404)), security(("bearer" = [])))]
pub(super) async fn versions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<History>, ApiError> {
    let versions = state.store().policy_history(&id).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no policy with id `{id}`")));
    }
    Ok(Json(History {
        policy_id: id,
        versions,
    }))
}

#[utoipa::path(post, operation_id = "policy_restore", path = "/api/v1/policies/{id}/versions/{version}/restore", tag = "policies", params(("id" = String, Path), ("version" = i64, Path)), responses((status = 200, body = Object), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(super) async fn restore(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path((id, version)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let restored = state
        .store()
        .policy_history(&id)
        .await?
        .into_iter()
        .find(|v| v.version == version)
        .and_then(|v| v.body)
        .map(PolicySpec::from_json);
    if let Some(Ok(spec)) = restored {
        guard(&state, |db| {
            db.retain(|p| p.id != id);
            db.push(aegis_policy::Policy {
                id: id.clone(),
                spec,
                origin: aegis_policy::Origin::Database { version },
            });
        })?;
    }
    let record = state
        .store()
        .restore_policy_version(&id, version, by(caller.as_ref()))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("policy `{id}` has no version {version} to restore"))
        })?;
    reload(&state).await?;
    Ok(Json(view(&record)))
}

/// Refuses a change that breaks a guard-rail invariant of the policy folder (409, naming
/// the invariant, the policy and a request that would get through).
fn guard(
    state: &AppState,
    change: impl FnOnce(&mut Vec<aegis_policy::Policy>),
) -> Result<(), ApiError> {
    state
        .policies()
        .check_invariants(change)
        .map_err(|e| ApiError::conflict(format!("refused: {e}")))
}
