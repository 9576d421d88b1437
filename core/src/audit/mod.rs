//! The audit hash chain: each row's hash covers the previous row's hash and a canonical
//! encoding of the row, so changing, removing or reordering a row is detectable later.
//!
//! Two kinds of link: [`chain_hash`] (plain SHA-256, which anyone can recompute, so it
//! shows accidents and tampering by those who do not know the algorithm) and
//! [`chain_mac`] (HMAC-SHA256 under a key kept outside the database, so rewriting rows
//! needs the key).

mod canonical;

pub use canonical::Canonical;

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row of every chain: 64 zero hex digits.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over the previous hash and the row's canonical bytes, as lowercase hex.
///
/// The previous hash is fed as its 64 ASCII hex digits followed by a newline, so the
/// encoding is unambiguous whatever the canonical bytes start with.
pub fn chain_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical);
    hex::encode(hasher.finalize())
}

/// The HMAC-SHA256 state over the bytes [`chain_hash`] hashes.
fn keyed_link(key: &[u8], prev_hash: &str, canonical: &[u8]) -> hmac::Hmac<Sha256> {
    use hmac::Mac;
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = <hmac::Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(prev_hash.as_bytes());
    mac.update(b"\n");
    mac.update(canonical);
    mac
}

/// HMAC-SHA256 under `key` over the same bytes as [`chain_hash`], as lowercase hex.
pub fn chain_mac(key: &[u8], prev_hash: &str, canonical: &[u8]) -> String {
    use hmac::Mac;
    hex::encode(
        keyed_link(key, prev_hash, canonical)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `hex_mac` is [`chain_mac`] of these bytes, compared in constant time.
pub fn chain_mac_matches(key: &[u8], prev_hash: &str, canonical: &[u8], hex_mac: &str) -> bool {
    use hmac::Mac;
    hex::decode(hex_mac).is_ok_and(|expected| {
        keyed_link(key, prev_hash, canonical)
            .verify_slice(&expected)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_is_deterministic_and_depends_on_both_inputs() {
        let a = chain_hash(GENESIS_HASH, b"row");
        assert_eq!(a, chain_hash(GENESIS_HASH, b"row"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, chain_hash(GENESIS_HASH, b"row2"));
        assert_ne!(a, chain_hash(&a, b"row"));
    }

    #[test]
    fn the_keyed_link_needs_the_key() {
        let a = chain_mac(b"key one", GENESIS_HASH, b"row");
        assert_eq!(a.len(), 64);
        assert_ne!(a, chain_hash(GENESIS_HASH, b"row"));
        assert_ne!(a, chain_mac(b"key two", GENESIS_HASH, b"row"));
        assert!(chain_mac_matches(b"key one", GENESIS_HASH, b"row", &a));
        assert!(!chain_mac_matches(b"key two", GENESIS_HASH, b"row", &a));
        assert!(!chain_mac_matches(b"key one", GENESIS_HASH, b"row2", &a));
        assert!(!chain_mac_matches(
            b"key one",
            GENESIS_HASH,
            b"row",
            "not hex"
        ));
        // hmac.new(b"key", b"0" * 64 + b"\n" + b"abc", sha256), computed with Python.
        assert_eq!(
            chain_mac(b"key", GENESIS_HASH, b"abc"),
            "43c929df4fc187be395b2a042c4766c84428dde81afe7fbf3440de66ee3ff616"
        );
    }

    #[test]
    fn chain_hash_matches_known_vector() {
        // sha256("0" * 64 + "\n" + "abc"), computed independently with Python's hashlib.
        let expected = "ac10ec504bb4ed3d77c3b3d1cf8fc534a2f6658185a64fc00b24a1afce46cec3";
        assert_eq!(chain_hash(GENESIS_HASH, b"abc"), expected);
    }
}
