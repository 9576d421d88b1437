//! What ingest takes: samples and log lines inside a time window around now, log lines up
//! to a length.
//!
//! Prometheus refuses samples outside its TSDB's bounds and Loki refuses lines older than
//! `reject_old_samples_max_age` or newer than `creation_grace_period`, and lines longer than
//! `max_line_size`. Aegis does the same at the door, for every source (remote write, Loki
//! push, Kafka, pull mode): one sample stamped years ahead (a skewed clock, a bad export)
//! must not be stored as real, nor drag a series' window into the future. What is refused
//! is counted by reason and the first refused entry is named, so the sender's operator can
//! find it; the rest of the request is taken.

use std::fmt::Write as _;
use std::time::Duration;

use crate::SeriesRegistry;

/// The admission rules (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Oldest sample or line taken, before now (`max_sample_age`).
    pub max_sample_age: Duration,
    /// Newest sample or line taken, after now (`future_grace`).
    pub future_grace: Duration,
    /// Longest log line taken, in bytes (`max_log_line_bytes`).
    pub max_line_bytes: usize,
}

impl Default for Admission {
    /// A week back and ten minutes ahead (Loki's `reject_old_samples_max_age` and
    /// `creation_grace_period`), lines up to 256 KiB (Loki's `max_line_size`).
    fn default() -> Self {
        Self {
            max_sample_age: Duration::from_secs(7 * 24 * 3600),
            future_grace: Duration::from_secs(600),
            max_line_bytes: 256 * 1024,
        }
    }
}

impl Admission {
    /// No time bounds and no line cap (tests and tools replaying recorded data).
    pub fn unbounded() -> Self {
        Self {
            max_sample_age: Duration::MAX,
            future_grace: Duration::MAX,
            max_line_bytes: usize::MAX,
        }
    }

    /// The window of timestamps taken at `now_ms`, in milliseconds since the epoch.
    pub fn window_at(&self, now_ms: i64) -> TimeWindow {
        // Durations past what i64 milliseconds hold mean "no bound" on that side.
        let ms = |d: Duration| i64::try_from(d.as_millis()).ok();
        TimeWindow {
            min_ms: ms(self.max_sample_age).map_or(i64::MIN, |a| now_ms.saturating_sub(a)),
            max_ms: ms(self.future_grace).map_or(i64::MAX, |g| now_ms.saturating_add(g)),
        }
    }

    /// The window of timestamps taken now.
    pub fn window_now(&self) -> TimeWindow {
        self.window_at(chrono::Utc::now().timestamp_millis())
    }
}

/// Timestamps taken: `[min_ms, max_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Oldest taken.
    pub min_ms: i64,
    /// Newest taken.
    pub max_ms: i64,
}

impl TimeWindow {
    /// Every timestamp.
    pub const ALL: Self = Self {
        min_ms: i64::MIN,
        max_ms: i64::MAX,
    };

    /// Why `ts_ms` is not taken, if it is not.
    #[inline]
    pub fn check_ms(&self, ts_ms: i64) -> Option<Reason> {
        if ts_ms < self.min_ms {
            Some(Reason::TooOld)
        } else if ts_ms > self.max_ms {
            Some(Reason::TooNew)
        } else {
            None
        }
    }

    /// [`Self::check_ms`] for nanoseconds (log lines).
    #[inline]
    pub fn check_ns(&self, ts_ns: i64) -> Option<Reason> {
        self.check_ms(ts_ns.div_euclid(1_000_000))
    }
}

/// Why an entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than `max_sample_age`.
    TooOld,
    /// Further ahead than `future_grace`.
    TooNew,
    /// A log line over `max_log_line_bytes`.
    TooLong,
}

impl Reason {
    /// The `reason` label of `aegis_ingest_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooOld => "too_old",
            Self::TooNew => "too_new",
            Self::TooLong => "too_long",
        }
    }
}

/// The first refused entry of a request, kept to name it in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedEntry {
    /// Why.
    pub reason: Reason,
    /// Its series or stream id.
    pub series: u32,
    /// Its timestamp, in milliseconds.
    pub timestamp_ms: i64,
    /// A line's length in bytes (0 for samples).
    pub bytes: usize,
}

/// What one request had refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    /// Entries older than the window.
    pub too_old: u64,
    /// Entries newer than the window.
    pub too_new: u64,
    /// Lines over the length cap.
    pub too_long: u64,
    /// The first of them.
    pub first: Option<RefusedEntry>,
}

impl Refused {
    /// Counts one refused entry.
    pub fn note(&mut self, reason: Reason, series: u32, timestamp_ms: i64, bytes: usize) {
        match reason {
            Reason::TooOld => self.too_old += 1,
            Reason::TooNew => self.too_new += 1,
            Reason::TooLong => self.too_long += 1,
        }
        self.first.get_or_insert(RefusedEntry {
            reason,
            series,
            timestamp_ms,
            bytes,
        });
    }

    /// Entries refused in all.
    pub fn total(&self) -> u64 {
        self.too_old + self.too_new + self.too_long
    }

    /// True when nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The counts by reason (for `aegis_ingest_rejected_total`), zeros left out.
    pub fn by_reason(&self) -> impl Iterator<Item = (Reason, u64)> {
        [
            (Reason::TooOld, self.too_old),
            (Reason::TooNew, self.too_new),
            (Reason::TooLong, self.too_long),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
    }

    /// Adds another request part's refusals (the first entry stays the earliest noted).
    pub fn merge(&mut self, other: &Self) {
        self.too_old += other.too_old;
        self.too_new += other.too_new;
        self.too_long += other.too_long;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    /// A sentence for the sender naming the first refused entry by its labels (`what` is
    /// `sample` or `entry`), with the counts and the rules; `None` when nothing was refused.
    pub fn describe(
        &self,
        what: &str,
        registry: &SeriesRegistry,
        admission: &Admission,
    ) -> Option<String> {
        let first = self.first?;
        let labels = registry.labels(first.series).map_or_else(
            || format!("#{}", first.series),
            |labels| {
                let mut s = String::from("{");
                for (i, (n, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    let _ = write!(s, "{n}=\"{}\"", crate::registry::truncate(v, 120));
                }
                s.push('}');
                s
            },
        );
        let at = chrono::DateTime::from_timestamp_millis(first.timestamp_ms).map_or_else(
            || format!("{} ms", first.timestamp_ms),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        let why = match first.reason {
            Reason::TooOld => format!(
                "is older than max_sample_age ({} s before now)",
                admission.max_sample_age.as_secs()
            ),
            Reason::TooNew => format!(
                "is further ahead than future_grace ({} s after now)",
                admission.future_grace.as_secs()
            ),
            Reason::TooLong => format!(
                "is {} bytes long; max_log_line_bytes is {}",
                first.bytes, admission.max_line_bytes
            ),
        };
        let mut text = format!("the {what} for {labels} at {at} {why}");
        let total = self.total();
        if total > 1 {
            let _ = write!(
                text,
                "; {total} refused in all ({} too old, {} too new, {} too long)",
                self.too_old, self.too_new, self.too_long
            );
        }
        text.push_str("; the rest of the request was taken");
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_now_minus_the_age_to_now_plus_the_grace() {
        let a = Admission::default();
        let now = 1_700_000_000_000;
        let w = a.window_at(now);
        assert_eq!(w.check_ms(now), None);
        assert_eq!(w.check_ms(now + 600_000), None);
        assert_eq!(w.check_ms(now + 600_001), Some(Reason::TooNew));
        assert_eq!(w.check_ms(now - 7 * 24 * 3_600_000), None);
        assert_eq!(
            w.check_ms(now - 7 * 24 * 3_600_000 - 1),
            Some(Reason::TooOld)
        );
        assert_eq!(
            w.check_ns((now + 600_001) * 1_000_000),
            Some(Reason::TooNew)
        );
        let all = Admission::unbounded().window_at(now);
        assert_eq!(all.check_ms(i64::MIN), None);
        assert_eq!(all.check_ms(i64::MAX), None);
    }

    #[test]
    fn refusals_are_counted_and_the_first_is_named() {
        let mut registry = SeriesRegistry::new();
        let id = registry
            .resolve(
                &[("__name__", "cpu"), ("pod", "api-1")],
                &crate::SeriesLimits::default(),
            )
            .unwrap();
        let mut r = Refused::default();
        assert!(
            r.describe("sample", &registry, &Admission::default())
                .is_none()
        );
        r.note(Reason::TooNew, id, 1_983_000_000_000, 0);
        r.note(Reason::TooOld, id, 0, 0);
        assert_eq!((r.too_new, r.too_old, r.total()), (1, 1, 2));
        let text = r
            .describe("sample", &registry, &Admission::default())
            .unwrap();
        assert!(text.contains(r#"{__name__="cpu", pod="api-1"}"#), "{text}");
        assert!(text.contains("2032-11-02T09:20:00.000Z"), "{text}");
        assert!(text.contains("future_grace"), "{text}");
        assert!(text.contains("2 refused in all"), "{text}");
    }
}
