//! A short-lived cache of verified service tokens, so a Prometheus sending dozens of
//! requests a second costs one database lookup every few seconds, not one per request.
//! A revoked token keeps working for at most [`TOKEN_CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Caller;

/// How long a verified token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Tokens cached at most (far above any real number of machines).
const MAX_ENTRIES: usize = 10_000;

/// Token hash → caller, with expiry.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl TokenCache {
    /// The caller of a token hash verified less than [`TOKEN_CACHE_TTL`] ago.
    pub fn get(&self, hash: &str) -> Option<Caller> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(c, _)| c.clone())
    }

    /// Whether `hash` was verified within `max_age` (an expired entry counts until it is
    /// evicted: for when the database cannot be asked again).
    pub fn seen_within(&self, hash: &str, max_age: Duration) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .is_some_and(|(_, at)| at.elapsed() < max_age)
    }

    /// Remembers a verified token.
    pub fn put(&self, hash: String, caller: Caller) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash, (caller, Instant::now()));
    }

    /// Forgets every entry (a token was revoked here: no need to wait out the TTL).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
