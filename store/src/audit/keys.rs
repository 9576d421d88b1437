//! The keys of the keyed audit chain (`audit_key`): secrets kept in the configuration,
//! never in the database, so that rewriting audit rows needs more than write access to it.
//!
//! The first key signs new rows, every key verifies (rotation: put the new key first and
//! keep the old one among the previous keys for as long as rows it signed are kept). Each
//! row names the key id that signed it.

use crate::Error;
use aegis_core::{chain_hash, chain_mac, chain_mac_matches};

/// Shortest accepted key, in bytes.
pub const MIN_AUDIT_KEY_BYTES: usize = 32;

/// One audit key: an id (written beside each row it signs) and its secret.
#[derive(Clone)]
pub struct AuditKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// A key from its id (1 to 32 of `A-Za-z0-9_-`) and secret (at least 32 bytes).
    pub fn new(id: &str, secret: &[u8]) -> Result<Self, Error> {
        if id.is_empty()
            || id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::AuditKey(format!(
                "audit key id `{id}` must be 1 to 32 letters, digits, `_` or `-`"
            )));
        }
        if secret.len() < MIN_AUDIT_KEY_BYTES {
            return Err(Error::AuditKey(format!(
                "audit key `{id}` has {} bytes; at least {MIN_AUDIT_KEY_BYTES} are needed",
                secret.len()
            )));
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_vec(),
        })
    }

    /// `ID:SECRET` (as configured); a bare secret gets the id `k1`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text.split_once(':') {
            Some((id, secret)) => Self::new(id, secret.as_bytes()),
            None => Self::new("k1", text.as_bytes()),
        }
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// HMAC-SHA256 of `bytes` under this key, as hex (archive records and manifests).
    pub fn mac(&self, bytes: &[u8]) -> String {
        chain_mac(&self.secret, aegis_core::GENESIS_HASH, bytes)
    }

    /// Whether `mac` is [`Self::mac`] of `bytes` (constant time).
    pub fn mac_matches(&self, bytes: &[u8], mac: &str) -> bool {
        chain_mac_matches(&self.secret, aegis_core::GENESIS_HASH, bytes, mac)
    }

    /// The link of a row under this key.
    pub(crate) fn link(&self, prev_hash: &str, canonical: &[u8]) -> String {
        chain_mac(&self.secret, prev_hash, canonical)
    }

    /// Whether `hash` is the link of a row under this key.
    pub(crate) fn verifies(&self, prev_hash: &str, canonical: &[u8], hash: &str) -> bool {
        chain_mac_matches(&self.secret, prev_hash, canonical, hash)
    }
}

/// The configured audit keys.
#[derive(Debug, Clone)]
pub struct AuditKeys {
    keys: Vec<AuditKey>,
    /// Every row must be keyed: refuse unkeyed rows anywhere in a chain (for chains keyed
    /// from their first row, or once the unkeyed prefix is archived and pruned). Without
    /// it an unkeyed prefix (rows written before `audit_key` was set) still verifies by
    /// SHA-256, guarded by the first keyed row after it, whose MAC covers its hash.
    pub keyed_only: bool,
}

impl AuditKeys {
    /// The signing key first, then the previous ones; ids must differ.
    pub fn new(keys: Vec<AuditKey>, keyed_only: bool) -> Result<Self, Error> {
        if keys.is_empty() {
            return Err(Error::AuditKey(
                "at least one audit key is needed".to_owned(),
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(Error::AuditKey(format!(
                    "audit key id `{}` is configured twice",
                    k.id
                )));
            }
        }
        Ok(Self { keys, keyed_only })
    }

    /// The key that signs new rows.
    pub fn signing(&self) -> &AuditKey {
        // `new` refuses an empty list.
        &self.keys[0]
    }

    /// The key with id `id`.
    pub fn get(&self, id: &str) -> Option<&AuditKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key id, the signing one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }
}

/// How a row is linked: by plain SHA-256 or under a key.
pub(crate) fn link(key: Option<&AuditKey>, prev_hash: &str, canonical: &[u8]) -> String {
    match key {
        Some(k) => k.link(prev_hash, canonical),
        None => chain_hash(prev_hash, canonical),
    }
}

/// Where a walk of a chain stands with keys: whether a keyed row was seen (after which an
/// unkeyed row is a rewrite) and how many rows verified by plain SHA-256.
#[derive(Debug, Default)]
pub(crate) struct KeyWalk {
    seen_keyed: bool,
    pub(crate) unkeyed: u64,
}

impl KeyWalk {
    /// Why row `id` (named key `key_id`) does not verify, or `None` when it does.
    pub(crate) fn check(
        &mut self,
        keys: Option<&AuditKeys>,
        key_id: Option<&str>,
        prev_hash: &str,
        canonical: &[u8],
        hash: &str,
    ) -> Option<String> {
        match key_id {
            Some(id) => {
                let Some(keys) = keys else {
                    return Some(format!(
                        "the row is signed with audit key `{id}`: verifying it needs audit_key"
                    ));
                };
                let Some(key) = keys.get(id) else {
                    return Some(format!(
                        "the row is signed with audit key `{id}`, which is not configured (configured: {})",
                        keys.ids().join(", ")
                    ));
                };
                self.seen_keyed = true;
                (!key.verifies(prev_hash, canonical, hash)).then(|| {
                    format!(
                        "hash does not match the row's contents under audit key `{id}`: the row was changed"
                    )
                })
            }
            None => {
                if self.seen_keyed {
                    return Some(
                        "the row is not keyed, but an earlier row is: unkeyed rows after keyed ones are a rewrite"
                            .to_owned(),
                    );
                }
                if keys.is_some_and(|k| k.keyed_only) {
                    return Some(
                        "the row is not keyed, and audit_keyed_only requires every row to be"
                            .to_owned(),
                    );
                }
                self.unkeyed += 1;
                (chain_hash(prev_hash, canonical) != hash).then(|| {
                    "hash does not match the row's contents: the row was changed".to_owned()
                })
            }
        }
    }
}
