//! `/api/v1/service-tokens`: long-lived, revocable bearer tokens for machines (Prometheus
//! `remote_write`, Loki clients, automation). The token is shown once, at creation.

use aegis_store::{ServiceTokenRecord, UserStore};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, hash_token, random_token};
use crate::{ApiError, AppState, Json};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateServiceToken {
    /// What the token is for, e.g. `prometheus-eu-1`.
    name: String,
    /// `service` (default) or `auditor`.
    #[serde(default)]
    role: Option<String>,
    /// Days until it expires; never when left out.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedServiceToken {
    /// The bearer token. Store it now: only its hash is kept.
    token: String,
    #[serde(flatten)]
    #[schema(inline, value_type = Object)]
    record: ServiceTokenRecord,
}

#[utoipa::path(post, operation_id = "service_token_create", path = "/api/v1/service-tokens", tag = "service tokens", request_body = CreateServiceToken,
    responses((status = 201, body = CreatedServiceToken), (status = 400)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateServiceToken>,
) -> Result<impl IntoResponse, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("`name` must be 1 to 100 characters"));
    }
    let role = body.role.as_deref().unwrap_or("service");
    // Machines never get admin or user rights through a token that does not expire by default.
    if !["service", "auditor"].contains(&role) {
        return Err(ApiError::bad_request(format!(
            "a service token's role must be `service` or `auditor`, not `{role}`"
        )));
    }
    let expires_at = body
        .expires_in_days
        .map(|d| Utc::now() + chrono::Duration::days(i64::from(d.clamp(1, 3650))));
    let token = random_token("aegs_").map_err(ApiError::internal)?;
    let record = state
        .store()
        .create_service_token(
            name,
            &hash_token(&token),
            role,
            Some(&caller.id),
            expires_at,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedServiceToken { token, record }),
    ))
}

#[utoipa::path(get, operation_id = "service_token_list", path = "/api/v1/service-tokens", tag = "service tokens",
    responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tokens = state.store().list_service_tokens().await?;
    Ok(Json(serde_json::json!({ "service_tokens": tokens })))
}

#[utoipa::path(delete, operation_id = "service_token_revoke", path = "/api/v1/service-tokens/{id}", tag = "service tokens",
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store().revoke_service_token(&id).await? {
        // Revocation on this replica takes effect at once; others within TOKEN_CACHE_TTL.
        state.token_cache().clear();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no live service token with id `{id}`"
        )))
    }
}
