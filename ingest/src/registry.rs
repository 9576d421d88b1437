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
}

/// Most entries of the wire-bytes cache (about 0.5 KiB each); beyond it, series are still
/// resolved, through their parsed labels.
const RAW_CACHE_MAX: usize = 262_144;

impl SeriesRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many series it holds.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The labels of series `id`.
    pub fn labels(&self, id: u32) -> Option<&[(Arc<str>, Arc<str>)]> {
        self.series.get(id as usize).map(|l| &**l)
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
    pub fn resolve_raw(&self, raw: &[u8]) -> Option<u32> {
        self.raw.get(raw).copied()
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
    pub fn resolve_text(&self, key: &[u8]) -> Option<u32> {
        self.by_text.get(key).copied()
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
                    return Ok(id);
                }
            }
        }
        if self.series.len() >= limits.max_series {
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
