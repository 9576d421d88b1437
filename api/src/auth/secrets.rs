//! Random tokens and their at-rest hashes.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A new 256-bit random token, base64url without padding, with a readable prefix
/// (`aegr_` refresh, `aegs_` service) so leaked tokens are easy to grep for.
pub fn random_token(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// SHA-256 of a token, hex. The tokens carry 256 bits of entropy, so a fast hash is safe at
/// rest (nothing to brute-force) and keeps lookups cheap.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
