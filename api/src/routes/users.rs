//! `/api/v1/users`: user management (access decided by `api_access` policies; the defaults
//! give it to admins) and `/api/v1/users/me` for everyone about themselves.

use aegis_store::{ROLES, UserPatch, UserStore};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::UserView;
use crate::auth::{Caller, CallerKind, check_password_rules};
use crate::{ApiError, AppState, Json};

const MAX_PAGE: i64 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserPage {
    users: Vec<UserView>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, operation_id = "user_list", path = "/api/v1/users", tag = "users", params(ListParams),
    responses((status = 200, body = UserPage), (status = 401), (status = 403)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserPage>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let users = state.store().list_users(p.cursor.as_deref(), limit).await?;
    let next_cursor = (users.len() as i64 == limit)
        .then(|| users.last().map(|u| u.id.clone()))
        .flatten();
    Ok(Json(UserPage {
        users: users.iter().map(UserView::from).collect(),
        next_cursor,
    }))
}

async fn found(state: &AppState, id: &str) -> Result<aegis_store::UserRecord, ApiError> {
    state
        .store()
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id `{id}`")))
}

#[utoipa::path(get, operation_id = "user_get", path = "/api/v1/users/{id}", tag = "users",
    responses((status = 200, body = UserView), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(UserView::from(&found(&state, &id).await?)))
}

/// What an admin may change on an account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminPatch {
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    #[serde(default, alias = "isActive")]
    is_active: Option<bool>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// `"name": null` clears the name; a missing `name` leaves it alone.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

fn check_roles(roles: &[String]) -> Result<(), ApiError> {
    if roles.is_empty() {
        return Err(ApiError::bad_request("`roles` must name at least one role"));
    }
    for role in roles {
        if !ROLES.contains(&role.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown role `{role}`; roles are {}",
                ROLES.join(", ")
            )));
        }
    }
    Ok(())
}

#[utoipa::path(patch, operation_id = "user_update", path = "/api/v1/users/{id}", tag = "users", request_body = AdminPatch,
    responses((status = 200, body = UserView), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<AdminPatch>,
) -> Result<Json<UserView>, ApiError> {
    found(&state, &id).await?;
    if let Some(roles) = &body.roles {
        check_roles(roles)?;
        state
            .store()
            .set_roles(&id, roles, Some(&caller.id))
            .await?;
    }
    let patch = UserPatch {
        name: body.name,
        password_hash: None,
        is_active: body.is_active,
    };
    let user = state
        .store()
        .update_user(&id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id `{id}`")))?;
    if body.is_active == Some(false) || body.roles.is_some() {
        // Sessions carry the old roles or a dead account: end them, and their access tokens
        // with them (the session check reads the revocation on the next request).
        state.store().revoke_user_refresh_tokens(&id).await?;
        state.token_cache().clear();
    }
    Ok(Json(UserView::from(&user)))
}

#[utoipa::path(delete, operation_id = "user_delete", path = "/api/v1/users/{id}", tag = "users",
    responses((status = 204), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if caller.id == id {
        return Err(ApiError::conflict("you cannot delete your own account"));
    }
    if !state.store().delete_user(&id).await? {
        return Err(ApiError::not_found(format!("no user with id `{id}`")));
    }
    state.token_cache().clear();
    Ok(StatusCode::NO_CONTENT)
}

fn own_id(caller: &Caller) -> Result<&str, ApiError> {
    match caller.kind {
        CallerKind::User => Ok(&caller.id),
        CallerKind::Service => Err(ApiError::forbidden("service tokens have no user account")),
    }
}

#[utoipa::path(get, operation_id = "user_me", path = "/api/v1/users/me", tag = "users",
    responses((status = 200, body = UserView), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(UserView::from(
        &found(&state, own_id(&caller)?).await?,
    )))
}

/// What users may change about themselves.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelfPatch {
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    /// A new password; needs `current_password`.
    #[serde(default)]
    password: Option<String>,
    #[serde(default, alias = "currentPassword")]
    current_password: Option<String>,
}

#[utoipa::path(patch, operation_id = "user_update_me", path = "/api/v1/users/me", tag = "users", request_body = SelfPatch,
    responses((status = 200, body = UserView), (status = 400), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SelfPatch>,
) -> Result<Json<UserView>, ApiError> {
    let me = found(&state, own_id(&caller)?).await?;
    let mut patch = UserPatch {
        name: body.name,
        ..Default::default()
    };
    if let Some(password) = body.password {
        let current = body.current_password.ok_or_else(|| {
            ApiError::bad_request("changing the password needs `current_password`")
        })?;
        check_password_rules(&password, &me.email).map_err(ApiError::bad_request)?;
        let hasher = state.auth().hasher.clone();
        let phc = me.password_hash.clone();
        let (ok, new_hash) = tokio::task::spawn_blocking(move || {
            let ok = hasher.verify(&current, Some(&phc));
            (ok, ok.then(|| hasher.hash(&password)))
        })
        .await
        .map_err(ApiError::internal)?;
        if !ok {
            return Err(ApiError::unauthenticated("`current_password` is wrong"));
        }
        patch.password_hash = Some(
            new_hash
                .transpose()
                .map_err(ApiError::internal)?
                .unwrap_or_default(),
        );
    }
    let changed_password = patch.password_hash.is_some();
    let user = state
        .store()
        .update_user(&me.id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("your account no longer exists"))?;
    if changed_password {
        state.store().revoke_user_refresh_tokens(&me.id).await?;
        state.token_cache().clear();
    }
    Ok(Json(UserView::from(&user)))
}
