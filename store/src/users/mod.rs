//! Users, their roles, refresh tokens (rotation with reuse detection) and service tokens.
//!
//! Secrets never reach this module in the clear: passwords arrive as argon2 hashes, tokens as
//! SHA-256 hashes of high-entropy random values.

mod repo;
#[cfg(test)]
mod tests;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;

/// The roles Aegis knows, as seeded by the migrations.
pub const ROLES: [&str; 4] = ["admin", "user", "auditor", "service"];

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserRecord {
    /// The user's id (a UUID).
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// The argon2 PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// Whether the user may log in.
    pub is_active: bool,
    /// Role names, sorted as in [`ROLES`].
    pub roles: Vec<String>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A user to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// The argon2 PHC string.
    pub password_hash: String,
    /// Role names (each one of [`ROLES`]).
    pub roles: Vec<String>,
}

/// Changes to a user; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPatch {
    /// New display name (`Some(None)` clears it).
    pub name: Option<Option<String>>,
    /// New argon2 PHC string.
    pub password_hash: Option<String>,
    /// Activate or deactivate.
    pub is_active: Option<bool>,
}

/// A refresh token to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRefreshToken {
    /// The token's id.
    pub id: String,
    /// Its owner.
    pub user_id: String,
    /// The rotation family (the id of the first token of a login).
    pub family_id: String,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was valid; it is now used and the new one stored.
    Rotated {
        /// The owner.
        user_id: String,
        /// The rotation family (the login session) the new token belongs to.
        family_id: String,
    },
    /// The token had already been used: the whole family is now revoked (RFC 9700).
    Reused {
        /// The owner.
        user_id: String,
        /// The revoked family.
        family_id: String,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

/// A service token as stored (without its hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceTokenRecord {
    /// The token's id.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Its role (`service` unless an admin chose another).
    pub role: String,
    /// Who created it.
    pub created_by: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Storing users and their credentials.
pub trait UserStore {
    /// Creates a user; an email already in use is a conflict.
    fn create_user(
        &self,
        user: &NewUser,
        granted_by: Option<&str>,
    ) -> impl Future<Output = Result<UserRecord>> + Send;

    /// The user with this (normalised) email.
    fn user_by_email(&self, email: &str)
    -> impl Future<Output = Result<Option<UserRecord>>> + Send;

    /// The user with this id.
    fn user_by_id(&self, id: &str) -> impl Future<Output = Result<Option<UserRecord>>> + Send;

    /// Users by id, at most `limit`, after `after_id` (cursor).
    fn list_users(
        &self,
        after_id: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<UserRecord>>> + Send;

    /// Applies `patch`; `None` when there is no such user.
    fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
    ) -> impl Future<Output = Result<Option<UserRecord>>> + Send;

    /// Replaces the user's roles; `None` when there is no such user.
    fn set_roles(
        &self,
        id: &str,
        roles: &[String],
        granted_by: Option<&str>,
    ) -> impl Future<Output = Result<Option<UserRecord>>> + Send;

    /// Deletes a user (and, by cascade, their roles and refresh tokens).
    fn delete_user(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Stores a refresh token.
    fn insert_refresh_token(
        &self,
        token: &NewRefreshToken,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Presents the token with `token_hash`: rotates it to `next`, or detects reuse.
    fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next: &NewRefreshToken,
    ) -> impl Future<Output = Result<RotateOutcome>> + Send;

    /// Revokes the family of the token with `token_hash` (logout); false when unknown.
    fn revoke_refresh_family(&self, token_hash: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Whether a login session is still live: the user exists and is active, and the refresh
    /// family `family_id` is theirs and not revoked (logout, reuse, role or account change).
    fn session_is_live(
        &self,
        user_id: &str,
        family_id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Revokes every refresh token of a user (password change, deactivation).
    fn revoke_user_refresh_tokens(&self, user_id: &str)
    -> impl Future<Output = Result<u64>> + Send;

    /// Stores a service token.
    fn create_service_token(
        &self,
        name: &str,
        token_hash: &str,
        role: &str,
        created_by: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<ServiceTokenRecord>> + Send;

    /// The live (unrevoked, unexpired) service token with this hash. Lookups do not write
    /// (`last_used_at` stays unset) so that authenticating stays a read at ingest rates.
    fn use_service_token(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<Option<ServiceTokenRecord>>> + Send;

    /// Every service token, newest first.
    fn list_service_tokens(&self) -> impl Future<Output = Result<Vec<ServiceTokenRecord>>> + Send;

    /// Revokes a service token; false when unknown or already revoked.
    fn revoke_service_token(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;
}
