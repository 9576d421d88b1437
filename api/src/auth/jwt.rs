//! JWT access tokens: HS256 only, `kid` in every header, several keys for rotation.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The one algorithm accepted; a token naming any other (`none`, RS256, ...) is refused.
pub const ALGORITHM: Algorithm = Algorithm::HS256;
/// Shortest accepted signing secret, in bytes (HS256 wants at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// One signing key.
#[derive(Clone)]
pub struct JwtKey {
    /// Its id, written to the `kid` header.
    pub kid: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// A key from its id and secret; secrets shorter than 32 bytes are refused.
    pub fn new(kid: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let kid = kid.into();
        let secret = secret.into();
        if kid.is_empty() || kid.len() > 64 {
            return Err("a key id must be 1 to 64 characters".to_owned());
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret of key `{kid}` has {} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
                secret.len()
            ));
        }
        Ok(Self { kid, secret })
    }

    /// A key with a random 256-bit secret (when none is configured: tokens die with the
    /// process).
    pub fn random(kid: impl Into<String>) -> Self {
        let mut secret = Vec::with_capacity(32);
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            kid: kid.into(),
            secret,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user (or service token) id.
    pub sub: String,
    /// The caller's roles.
    pub roles: Vec<String>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// The login session (refresh-token family) the token belongs to: logout, a role or
    /// account change end the session, and with it every access token it issued. Tokens
    /// without one are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Why a token was refused (all answer 401; the kind goes to the log and the metrics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT, or a header that does not parse (including `alg: none`).
    #[error("malformed token")]
    Malformed,
    /// A `kid` no configured key has, or none.
    #[error("unknown signing key")]
    UnknownKey,
    /// Signature, algorithm, issuer, audience, expiry or not-before failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// The key set: the first key signs, every key verifies (so old tokens keep working while a
/// new key is rolled out).
#[derive(Clone)]
pub struct JwtKeys {
    keys: Vec<JwtKey>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl JwtKeys {
    /// A key set; at least one key, ids unique.
    pub fn new(keys: Vec<JwtKey>, issuer: &str, audience: &str) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("at least one signing key is needed".to_owned());
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(format!("key id `{}` is configured twice", k.kid));
            }
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A set of one key.
    pub fn single(key: JwtKey, issuer: &str, audience: &str) -> Self {
        Self {
            keys: vec![key],
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// The signing key's id.
    pub fn signing_kid(&self) -> &str {
        self.keys.first().map_or("", |k| k.kid.as_str())
    }

    /// Issues an access token for `sub` with `roles`, valid for `ttl`.
    pub fn issue(
        &self,
        sub: &str,
        roles: &[String],
        sid: &str,
        ttl: Duration,
    ) -> Result<(String, AccessClaims), JwtError> {
        let key = self.keys.first().ok_or(JwtError::UnknownKey)?;
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            sub: sub.to_owned(),
            roles: roles.to_vec(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs() as i64,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            sid: Some(sid.to_owned()),
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.secret))
            .map_err(|e| JwtError::Sign(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verifies a token: algorithm, `kid`, signature, `iss`, `aud`, `exp`, `nbf`.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(JwtError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.ok_or(JwtError::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(JwtError::UnknownKey)?;
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(
            token,
            &DecodingKey::from_secret(&key.secret),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(|e| JwtError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn keys(kid: &str, secret: &[u8]) -> JwtKeys {
        JwtKeys::new(
            vec![JwtKey::new(kid, secret.to_vec()).unwrap()],
            "aegis",
            "aegis-api",
        )
        .unwrap()
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn round_trip_and_rotation() {
        let old = keys("k1", SECRET);
        let (token, claims) = old
            .issue("u1", &["admin".into()], "s1", Duration::from_secs(60))
            .unwrap();
        assert_eq!(old.verify(&token).unwrap(), claims);
        // After rotation (k2 signs, k1 still verifies) old tokens keep working.
        let rotated = JwtKeys::new(
            vec![
                JwtKey::new("k2", OTHER.to_vec()).unwrap(),
                JwtKey::new("k1", SECRET.to_vec()).unwrap(),
            ],
            "aegis",
            "aegis-api",
        )
        .unwrap();
        assert_eq!(rotated.verify(&token).unwrap().sub, "u1");
        let (new, _) = rotated
            .issue("u2", &[], "s1", Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
            Some("k2")
        );
        assert_eq!(old.verify(&new), Err(JwtError::UnknownKey));
    }

    #[test]
    fn refuses_none_wrong_key_tampering_expiry_and_audience() {
        let k = keys("k1", SECRET);
        let (token, _) = k
            .issue("u1", &["user".into()], "s1", Duration::from_secs(60))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert!(k.verify(&format!("{none_header}.{}.", parts[1])).is_err());

        assert!(matches!(
            keys("k1", OTHER).verify(&token),
            Err(JwtError::Invalid(_))
        ));

        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["roles"] = serde_json::json!(["admin"]);
        let forged = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert!(matches!(
            k.verify(&format!("{}.{forged}.{}", parts[0], parts[2])),
            Err(JwtError::Invalid(_))
        ));

        let (expired, _) = k.issue("u1", &[], "s1", Duration::from_secs(0)).unwrap();
        let mut claims = k.verify(&expired).unwrap();
        claims.exp -= 3600;
        claims.nbf -= 7200;
        let mut header = Header::new(ALGORITHM);
        header.kid = Some("k1".into());
        let stale =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(matches!(k.verify(&stale), Err(JwtError::Invalid(_))));

        let other_aud = JwtKeys::new(
            vec![JwtKey::new("k1", SECRET.to_vec()).unwrap()],
            "aegis",
            "someone-else",
        )
        .unwrap();
        let (foreign, _) = other_aud
            .issue("u1", &[], "s1", Duration::from_secs(60))
            .unwrap();
        assert!(matches!(k.verify(&foreign), Err(JwtError::Invalid(_))));

        let mut hs512 = Header::new(Algorithm::HS512);
        hs512.kid = Some("k1".into());
        let wrong_alg =
            jsonwebtoken::encode(&hs512, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(matches!(k.verify(&wrong_alg), Err(JwtError::Invalid(_))));
        assert_eq!(k.verify("not.a.jwt"), Err(JwtError::Malformed));
        assert!(JwtKey::new("k", b"short".to_vec()).is_err());
    }
}
