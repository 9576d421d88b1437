//! Authentication: passwords (argon2id), JWT access tokens with rotating keys, opaque refresh
//! and service tokens, and the [`Caller`] every protected handler sees.

mod caller;
mod jwt;
mod password;
mod secrets;
mod token_cache;

pub use caller::{Caller, CallerKind};
pub use jwt::{AccessClaims, JwtError, JwtKey, JwtKeys};
pub use password::{PasswordHasher, check_password_rules, normalise_email};
pub use secrets::{hash_token, random_token};
pub use token_cache::{TOKEN_CACHE_TTL, TokenCache};

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Token lifetimes and issuer settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Signing and verification keys; the first signs.
    pub keys: JwtKeys,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// A static bearer token accepted on the ingest endpoints (role `service`).
    pub ingest_token: Option<String>,
    /// Ingest endpoints take requests without any token (a trusted network).
    pub ingest_open: bool,
    /// Anyone may create a `user` account with `POST /api/v1/auth/signup`.
    pub signup_enabled: bool,
    /// Unit tests mint access tokens for users the store does not hold; only they skip the
    /// session check (the integration tests and every build run it).
    #[cfg(test)]
    pub(crate) skip_session_check: bool,
}

impl AuthSettings {
    /// 15-minute access tokens, 7-day refresh tokens (the figures).
    pub fn new(keys: JwtKeys) -> Self {
        Self {
            keys,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            ingest_token: None,
            ingest_open: false,
            signup_enabled: true,
            #[cfg(test)]
            skip_session_check: false,
        }
    }
}

/// Everything authentication needs at run time.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Keys, lifetimes, the ingest token.
    pub settings: AuthSettings,
    /// Password hashing.
    pub hasher: PasswordHasher,
}

impl Auth {
    /// Auth with a random signing key (tokens die with the process) and OWASP hashing.
    pub fn ephemeral() -> Self {
        let keys = JwtKeys::single(JwtKey::random("ephemeral"), "aegis", "aegis-api");
        Self {
            settings: AuthSettings::new(keys),
            hasher: PasswordHasher::owasp(),
        }
    }
}

/// A key id derived from the secret, so every replica given the same secret agrees on it
/// without configuring ids.
pub fn derived_kid(secret: &[u8]) -> String {
    format!("k{}", &hex::encode(Sha256::digest(secret))[..12])
}
