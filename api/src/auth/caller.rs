//! [`Caller`]: who is asking, as established by the auth middleware.

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::ApiError;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A JWT access token of a user.
    User,
    /// A service token (or the static ingest token).
    Service,
}

/// The authenticated caller of a protected route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id, or the service token id.
    pub id: String,
    /// The caller's roles.
    pub roles: Vec<String>,
    /// How it authenticated.
    pub kind: CallerKind,
}

impl Caller {
    /// The caller as the runtime knows it: id and roles.
    pub fn principal(&self) -> aegis_runtime::Principal<'_> {
        aegis_runtime::Principal {
            id: &self.id,
            roles: &self.roles,
        }
    }

    /// True when the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("this endpoint needs a bearer token"))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}
