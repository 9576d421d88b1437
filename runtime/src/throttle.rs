//! [`Throttle`]: lets a log line through at most once per period, for conditions that
//! would otherwise log once per request (a database or Redis outage under load).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// At most one pass per period, across threads; usable in a `static`.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Unix seconds of the last pass; 0 before the first.
    last: AtomicI64,
}

impl Throttle {
    /// A throttle that lets the first call through.
    pub const fn new() -> Self {
        Self {
            last: AtomicI64::new(0),
        }
    }

    /// True when `every` has passed since the last `true` (or on the first call); only one
    /// of several racing callers gets it.
    pub fn ready(&self, every: Duration) -> bool {
        let now = chrono::Utc::now().timestamp();
        let last = self.last.load(Ordering::Relaxed);
        now - last >= every.as_secs() as i64
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_period() {
        let t = Throttle::new();
        assert!(t.ready(Duration::from_secs(30)));
        assert!(!t.ready(Duration::from_secs(30)));
        assert!(t.ready(Duration::ZERO));
    }
}
