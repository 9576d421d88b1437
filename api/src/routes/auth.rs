//! `/api/v1/auth/*`: signup, login, refresh (rotation with reuse detection), logout.

use aegis_core::metric_names;
use aegis_store::{NewRefreshToken, NewUser, RotateOutcome, UserRecord, UserStore};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::access::ClientIp;
use crate::auth::{check_password_rules, hash_token, normalise_email, random_token};
use crate::{ApiError, AppState, Json};
use aegis_runtime::ratelimit::Class;

/// What signup accepts. Unknown fields (`roles`, `role`, `is_admin`, ...) are refused, so a
/// signup body cannot ask for more than the `user` role.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupRequest {
    email: String,
    password: String,
    #[serde(default)]
    name: Option<String>,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserView {
    id: String,
    email: String,
    name: Option<String>,
    roles: Vec<String>,
    is_active: bool,
    created_at: chrono::DateTime<Utc>,
    updated_at: chrono::DateTime<Utc>,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            roles: u.roles.clone(),
            is_active: u.is_active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    #[serde(alias = "refreshToken")]
    refresh_token: String,
}

/// Tokens handed out by login and refresh.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    user: UserView,
}

fn auth_metric(result: &'static str) {
    metrics::counter!(metric_names::AUTH_ATTEMPTS_TOTAL, "result" => result).increment(1);
}

#[utoipa::path(post, operation_id = "auth_signup", path = "/api/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = UserView), (status = 400), (status = 403), (status = 429)))]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<SignupRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.auth().settings.signup_enabled {
        return Err(ApiError::forbidden(
            "signup is turned off on this server (signup_enabled = false); an admin creates accounts",
        ));
    }
    // A signup costs an argon2 hash: it spends the client IP's login budget, so one client
    // cannot hash without bound.
    if let Err(retry_after) = state.limiter().check(Class::LoginIp, &ip).await {
        auth_metric("rate_limited");
        return Err(ApiError::rate_limited(retry_after));
    }
    let email = normalise_email(&body.email).map_err(ApiError::bad_request)?;
    check_password_rules(&body.password, &email).map_err(ApiError::bad_request)?;
    let name = body
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::bad_request(
            "`name` may be at most 200 characters",
        ));
    }
    // Hashed before the lookup, whether or not the email is taken: the answer's timing
    // must not tell either.
    let password_hash = state
        .auth()
        .hasher
        .hash_signup_async(body.password)
        .await
        .map_err(ApiError::internal)?;
    let new = NewUser {
        email,
        name,
        password_hash,
        roles: vec!["user".to_owned()],
    };
    let user = match state.store().create_user(&new, Some("signup")).await {
        Ok(user) => user,
        // An existing account gets the answer a new one gets, so signup cannot be used to
        // find out who has an account; nothing is changed and the owner's password stays.
        Err(aegis_store::Error::Conflict(_)) => {
            tracing::info!(
                "signup for an email that already has an account: answered as created, nothing changed"
            );
            decoy(&new)
        }
        Err(e) => return Err(e.into()),
    };
    auth_metric("signup");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// What a signup for a taken email answers: the shape of a fresh account, a fresh id.
fn decoy(new: &NewUser) -> UserRecord {
    let at = Utc::now();
    UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email: new.email.clone(),
        name: new.name.clone(),
        password_hash: String::new(),
        is_active: true,
        roles: new.roles.clone(),
        created_at: at,
        updated_at: at,
    }
}

/// Issues an access token and the first refresh token of a new family (a new session).
async fn issue(state: &AppState, user: &UserRecord) -> Result<TokenResponse, ApiError> {
    let (token, record) = new_refresh(state, &user.id)?;
    state.store().insert_refresh_token(&record).await?;
    tokens(state, user, &record.family_id, token)
}

/// A new refresh token for `user_id`; its family is its own id (a rotation keeps the
/// presented token's family instead, which the store takes from that token's row).
fn new_refresh(state: &AppState, user_id: &str) -> Result<(String, NewRefreshToken), ApiError> {
    let token = random_token("aegr_").map_err(ApiError::internal)?;
    let id = uuid::Uuid::now_v7().to_string();
    let ttl = chrono::Duration::from_std(state.auth().settings.refresh_ttl)
        .map_err(ApiError::internal)?;
    let record = NewRefreshToken {
        family_id: id.clone(),
        id,
        user_id: user_id.to_owned(),
        token_hash: hash_token(&token),
        expires_at: Utc::now() + ttl,
    };
    Ok((token, record))
}

/// The token response; the access token names its session (`family`), so ending the session
/// ends the access token too.
fn tokens(
    state: &AppState,
    user: &UserRecord,
    family: &str,
    refresh_token: String,
) -> Result<TokenResponse, ApiError> {
    let settings = &state.auth().settings;
    let (access_token, _) = settings
        .keys
        .issue(&user.id, &user.roles, family, settings.access_ttl)
        .map_err(ApiError::internal)?;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: settings.access_ttl.as_secs(),
        user: UserView::from(user),
    })
}

const BAD_LOGIN: &str = "invalid email or password";

#[utoipa::path(post, operation_id = "auth_login", path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401), (status = 429)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    // An unusable email still costs a hash, so it answers like a wrong password.
    let email = normalise_email(&body.email).unwrap_or_else(|_| body.email.trim().to_lowercase());
    for (class, key) in [
        (Class::LoginIp, ip.as_str()),
        (Class::LoginAccount, email.as_str()),
    ] {
        if let Err(retry_after) = state.limiter().check(class, key).await {
            auth_metric("rate_limited");
            return Err(ApiError::rate_limited(retry_after));
        }
    }
    let user = state.store().user_by_email(&email).await?;
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state.auth().hasher.verify_async(body.password, phc).await;
    let user = match user {
        Some(u) if verified && u.is_active => u,
        _ => {
            auth_metric("failure");
            return Err(ApiError::unauthenticated(BAD_LOGIN));
        }
    };
    auth_metric("success");
    Ok(Json(issue(&state, &user).await?))
}

#[utoipa::path(post, operation_id = "auth_refresh", path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401)))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let presented = hash_token(&body.refresh_token);
    // Owner and family of the next token come from the presented token's row.
    let (next_token, next) = new_refresh(&state, "")?;
    match state
        .store()
        .rotate_refresh_token(&presented, &next)
        .await?
    {
        RotateOutcome::Rotated { user_id, family_id } => {
            let user = state.store().user_by_id(&user_id).await?;
            match user {
                Some(u) if u.is_active => {
                    auth_metric("refresh");
                    Ok(Json(tokens(&state, &u, &family_id, next_token)?))
                }
                _ => {
                    state.store().revoke_user_refresh_tokens(&user_id).await?;
                    state.token_cache().clear();
                    auth_metric("failure");
                    Err(ApiError::unauthenticated("the account is disabled"))
                }
            }
        }
        RotateOutcome::Reused { user_id, family_id } => {
            tracing::warn!(%user_id, %family_id, "refresh token reuse: the whole token family is revoked");
            state.token_cache().clear();
            auth_metric("refresh_reuse");
            Err(ApiError::unauthenticated(
                "this refresh token was already used; every session of this login is revoked, log in again",
            ))
        }
        RotateOutcome::Invalid => {
            auth_metric("failure");
            Err(ApiError::unauthenticated(
                "the refresh token is unknown, expired or revoked",
            ))
        }
    }
}

#[utoipa::path(post, operation_id = "auth_logout", path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    // Unknown tokens answer the same, so logout cannot be used to probe for tokens.
    state
        .store()
        .revoke_refresh_family(&hash_token(&body.refresh_token))
        .await?;
    // The session's access tokens end with it.
    state.token_cache().clear();
    auth_metric("logout");
    Ok(StatusCode::NO_CONTENT)
}
