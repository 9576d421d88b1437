//! The series registry: every label set gets a stable id; label names and values are
//! interned once, so a series seen before costs a hash and a comparison, not an allocation.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::DecodeError;

/// Limits on series, checked before anything is stored.
#[derive(Debug, Clone, Copy)]
pub struct SeriesLimits {
    /// Labels per series.
    pub max_labels: usize,
    /// Bytes per label name.
    pub max_name_len: usize,
    /// Bytes per label value.
    pub max_value_len: usize,
    /// Distinct series the registry holds.
    pub max_series: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_labels: 64,
            max_name_len: 256,
            max_value_len: 2_048,
            max_series: 1_000_000,
        }
    }
}

type Labels = Box<[(Arc<str>, Arc<str>)]>;

/// Label sets to series ids.
#[derive(Debug, Default)]
pub struct SeriesRegistry {
    by_hash: HashMap<u64, Vec<u32>, foldhash::fast::FixedState>,
    series: Vec<Labels>,
    strings: std::collections::HashSet<Arc<str>, foldhash::fast::FixedState>,
    hasher: foldhash::fast::FixedState,
    /// The encoded label bytes of a 1.0 series to its id: a series seen before is found with
    /// one hash and one comparison of its wire bytes, without parsing its labels again.
    raw: HashMap<Box<[u8]>, u32, foldhash::fast::FixedState>,
    /// A 2.0 series' label text (name, 0xff, value, 0xfe, ...) to its id: 0xff and 0xfe
    /// never occur in UTF-8, so the key is unambiguous, and a known key needs no parsing.
    by_text: HashMap<Box<[u8]>, u32, foldhash::fast::FixedState>,
    /// Per id: the registry clock (seconds) when the series was last resolved.
    seen: Vec<u32>,
    /// Per id: the label hash (to find its `by_hash` entry when it is evicted).
    hashes: Vec<u64>,
    /// Series held (ids of evicted series stay unused: an id always means one label set).
    live: usize,
    /// The clock [`Self::set_now`] last set: seconds since the epoch, truncated to u32.
    now: u32,
}

/// Most entries of the wire-bytes cache (about 0.5 KiB each); beyond it, series are still
/// resolved, through their parsed labels.
const RAW_CACHE_MAX: usize = 262_144;

impl SeriesRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ids handed out so far (evicted ones included): ids are `0..len()`.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no id was handed out.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Series held now (not evicted).
    pub fn live(&self) -> usize {
        self.live
    }

    /// The labels of series `id`; `None` for an unknown or evicted id.
    pub fn labels(&self, id: u32) -> Option<&[(Arc<str>, Arc<str>)]> {
        self.series
            .get(id as usize)
            .filter(|l| !l.is_empty())
            .map(|l| &**l)
    }

    /// Sets the clock resolutions are stamped with (seconds since the epoch); ingest sets
    /// it once per request.
    pub fn set_now(&mut self, secs: i64) {
        self.now = u32::try_from(secs.max(0)).unwrap_or(u32::MAX);
    }

    #[inline]
    fn touch(&mut self, id: u32) {
        if let Some(seen) = self.seen.get_mut(id as usize) {
            *seen = self.now;
        }
    }

    /// Forgets every series not resolved since `cutoff_secs` (the registry clock): its
    /// labels, caches and interned strings nobody else holds are freed, and its id is never
    /// handed out again (a series that comes back gets a new one). Returns the evicted ids,
    /// for whoever keeps state per id (the engine's routes). A cardinality burst is
    /// otherwise kept for the life of the process.
    pub fn evict_idle(&mut self, cutoff_secs: i64) -> Vec<u32> {
        let cutoff = u32::try_from(cutoff_secs.max(0)).unwrap_or(u32::MAX);
        let evicted: Vec<u32> = (0..self.series.len())
            .filter(|&i| !self.series[i].is_empty() && self.seen[i] < cutoff)
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        if evicted.is_empty() {
            return evicted;
        }
        let gone: std::collections::HashSet<u32> = evicted.iter().copied().collect();
        for &id in &evicted {
            let i = id as usize;
            self.series[i] = Box::default();
            self.live -= 1;
            let hash = self.hashes[i];
            if let Some(ids) = self.by_hash.get_mut(&hash) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    self.by_hash.remove(&hash);
                }
            }
        }
        self.raw.retain(|_, id| !gone.contains(id));
        self.by_text.retain(|_, id| !gone.contains(id));
        // Strings only the intern set still holds belonged to evicted series alone.
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        evicted
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(existing) = self.strings.get(s) {
            return Arc::clone(existing);
        }
        let owned: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&owned));
        owned
    }

    /// The series whose encoded labels are exactly `raw`, if it was seen before.
    #[inline]
    pub fn resolve_raw(&mut self, raw: &[u8]) -> Option<u32> {
        let id = self.raw.get(raw).copied()?;
        self.touch(id);
        Some(id)
    }

    /// Remembers that the encoded labels `raw` belong to series `id` (already resolved and
    /// checked through [`Self::resolve`]).
    pub fn remember_raw(&mut self, raw: &[u8], id: u32) {
        if self.raw.len() < RAW_CACHE_MAX {
            self.raw.insert(raw.into(), id);
        }
    }

    /// The series whose label text key (see the field's documentation) is `key`.
    #[inline]
    pub fn resolve_text(&mut self, key: &[u8]) -> Option<u32> {
        let id = self.by_text.get(key).copied()?;
        self.touch(id);
        Some(id)
    }

    /// Remembers the label text key of `series` (already resolved and checked).
    pub fn remember_text(&mut self, key: &[u8], series: u32) {
        if self.by_text.len() < RAW_CACHE_MAX {
            self.by_text.insert(key.into(), series);
        }
    }

    /// The id of `labels` (sorted by name, checked against `limits`), registering it when new.
    #[inline]
    pub fn resolve(
        &mut self,
        labels: &[(&str, &str)],
        limits: &SeriesLimits,
    ) -> Result<u32, DecodeError> {
        if labels.len() > limits.max_labels {
            return Err(DecodeError::Limit(format!(
                "a series has {} labels; at most {} are accepted",
                labels.len(),
                limits.max_labels
            )));
        }
        let mut h = self.hasher.build_hasher();
        for (i, (name, value)) in labels.iter().enumerate() {
            if name.is_empty() {
                return Err(DecodeError::Invalid("a label name is empty".into()));
            }
            if name.len() > limits.max_name_len || value.len() > limits.max_value_len {
                return Err(DecodeError::Limit(format!(
                    "label `{}` is longer than allowed (names {} bytes, values {} bytes)",
                    truncate(name, 64),
                    limits.max_name_len,
                    limits.max_value_len
                )));
            }
            if i > 0 && labels[i - 1].0 >= *name {
                return Err(DecodeError::Invalid(format!(
                    "label names must be unique and sorted; `{}` follows `{}`",
                    truncate(name, 64),
                    truncate(labels[i - 1].0, 64)
                )));
            }
            h.write(name.as_bytes());
            h.write_u8(0xff);
            h.write(value.as_bytes());
            h.write_u8(0xfe);
        }
        let hash = h.finish();
        if let Some(candidates) = self.by_hash.get(&hash) {
            for &id in candidates {
                let stored = &self.series[id as usize];
                if stored.len() == labels.len()
                    && stored
                        .iter()
                        .zip(labels)
                        .all(|((n, v), (bn, bv))| **n == **bn && **v == **bv)
                {
                    self.touch(id);
                    return Ok(id);
                }
            }
        }
        if self.live >= limits.max_series {
            return Err(DecodeError::Limit(format!(
                "the registry holds {} series, its limit",
                limits.max_series
            )));
        }
        let id = u32::try_from(self.series.len())
            .map_err(|_| DecodeError::Limit("too many series".into()))?;
        let stored: Labels = labels
            .iter()
            .map(|(n, v)| (self.intern(n), self.intern(v)))
            .collect();
        self.series.push(stored);
        self.seen.push(self.now);
        self.hashes.push(hash);
        self.live += 1;
        self.by_hash.entry(hash).or_default().push(id);
        Ok(id)
    }
}

/// At most `max` bytes of `s`, on a character boundary (for messages).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 27, attack 7: the registry forgets idle series, frees what only they held, and
    /// never hands an evicted id to another label set.
    #[test]
    fn idle_series_are_evicted_and_their_ids_never_reused() {
        let limits = SeriesLimits {
            max_series: 3,
            ..SeriesLimits::default()
        };
        let mut r = SeriesRegistry::new();
        r.set_now(1_000);
        let a = r
            .resolve(&[("__name__", "cpu"), ("pod", "a")], &limits)
            .unwrap();
        let b = r
            .resolve(&[("__name__", "cpu"), ("pod", "b")], &limits)
            .unwrap();
        r.remember_raw(b"raw-a", a);
        r.remember_text(b"text-a", a);
        let burst: Vec<u32> = (0..1)
            .map(|i| {
                r.resolve(
                    &[("__name__", "cpu"), ("pod", &format!("burst-{i}"))],
                    &limits,
                )
                .unwrap()
            })
            .collect();
        assert!(
            r.resolve(&[("__name__", "cpu"), ("pod", "c")], &limits)
                .is_err(),
            "full"
        );
        r.set_now(5_000);
        assert_eq!(r.resolve_raw(b"raw-a"), Some(a));
        let evicted = r.evict_idle(4_000);
        assert_eq!(evicted, [vec![b], burst.clone()].concat());
        assert_eq!((r.live(), r.len()), (1, 3));
        assert!(r.labels(b).is_none());
        assert!(!r.strings.iter().any(|s| &**s == "burst-0"), "freed");
        assert!(r.strings.iter().any(|s| &**s == "cpu"), "still held by `a`");
        // Room again; a series that comes back gets a new id.
        let b2 = r
            .resolve(&[("__name__", "cpu"), ("pod", "b")], &limits)
            .unwrap();
        assert!(b2 > b && b2 as usize == r.len() - 1);
        assert_eq!(r.resolve_text(b"text-a"), Some(a));
        // An evicted id's caches are gone with it.
        r.set_now(9_000);
        let evicted = r.evict_idle(8_000);
        assert_eq!(evicted, [a, b2]);
        assert_eq!(r.resolve_raw(b"raw-a"), None);
        assert_eq!(r.resolve_text(b"text-a"), None);
        assert_eq!(r.live(), 0);
    }
}
