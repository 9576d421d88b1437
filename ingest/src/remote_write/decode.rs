//! The two decoders. Both walk the protobuf once, borrow every string from the input, and
//! append (series id, timestamp, value) to [`Samples`].

use smallvec::SmallVec;

use crate::DecodeError;
use crate::registry::{SeriesLimits, SeriesRegistry};
use crate::wire::{FIXED64, LEN, Reader, VARINT};

/// Decoded samples as columns (what becomes an Arrow batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// Series ids from the registry.
    pub series_id: Vec<u32>,
    /// Milliseconds since the epoch.
    pub timestamp_ms: Vec<i64>,
    /// Values.
    pub value: Vec<f64>,
}

impl Samples {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.series_id.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.series_id.is_empty()
    }

    /// Keeps the samples whose timestamps `window` takes; the others are counted in
    /// `refused`. One pass, and none at all when every sample is inside (the usual case).
    pub fn retain_window(
        &mut self,
        window: &crate::admission::TimeWindow,
        refused: &mut crate::admission::Refused,
    ) {
        if self
            .timestamp_ms
            .iter()
            .all(|&t| window.check_ms(t).is_none())
        {
            return;
        }
        let mut kept = 0;
        for i in 0..self.len() {
            let t = self.timestamp_ms[i];
            if let Some(reason) = window.check_ms(t) {
                refused.note(reason, self.series_id[i], t, 0);
                continue;
            }
            self.series_id[kept] = self.series_id[i];
            self.timestamp_ms[kept] = t;
            self.value[kept] = self.value[i];
            kept += 1;
        }
        self.series_id.truncate(kept);
        self.timestamp_ms.truncate(kept);
        self.value.truncate(kept);
    }

    /// Empties the columns, keeping their capacity.
    pub fn clear(&mut self) {
        self.series_id.clear();
        self.timestamp_ms.clear();
        self.value.clear();
    }
}

/// What one request carried (the 2.0 `X-Prometheus-Remote-Write-*-Written` headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Series in the request.
    pub series: u64,
    /// Float samples written.
    pub samples: u64,
    /// Native histogram samples (accepted and counted; not stored yet).
    pub histograms: u64,
    /// Exemplars (accepted and counted; not stored yet).
    pub exemplars: u64,
    /// Metadata entries.
    pub metadata: u64,
    /// Samples outside the time window, not taken (`samples` does not count them).
    pub refused: crate::admission::Refused,
}

type LabelScratch<'a> = SmallVec<[(&'a str, &'a str); 32]>;

/// Reads a `Sample { double value = 1; int64 timestamp = 2; }`.
#[inline]
fn sample(buf: &[u8]) -> Result<(f64, i64), DecodeError> {
    let mut r = Reader::new(buf);
    let (mut value, mut ts) = (0.0, 0);
    while let Some((field, wt)) = r.field()? {
        match (field, wt) {
            (1, FIXED64) => value = f64::from_bits(r.fixed64()?),
            (2, VARINT) => ts = r.varint()? as i64,
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok((value, ts))
}

/// Sorts labels by name when a sender did not (1.0 says senders must; not all do).
fn ensure_sorted(labels: &mut LabelScratch<'_>) {
    if labels.windows(2).any(|w| w[0].0 > w[1].0) {
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
}

/// Decodes an uncompressed `prometheus.WriteRequest`.
pub fn decode_v1(
    buf: &[u8],
    registry: &mut SeriesRegistry,
    limits: &SeriesLimits,
    out: &mut Samples,
) -> Result<WriteStats, DecodeError> {
    let mut stats = WriteStats::default();
    let mut r = Reader::new(buf);
    let mut labels: LabelScratch<'_> = SmallVec::new();
    let mut samples: SmallVec<[(f64, i64); 4]> = SmallVec::new();
    while let Some((field, wt)) = r.field()? {
        match (field, wt) {
            (1, LEN) => {
                stats.series += 1;
                labels.clear();
                samples.clear();
                let mut ts = Reader::new(r.bytes()?);
                // The wire bytes of the labels, when they are contiguous (as every sender
                // writes them): the key of the registry's fast path.
                let (mut first, mut last, mut contiguous) = (None::<usize>, 0usize, true);
                let mut label_msgs: SmallVec<[&[u8]; 32]> = SmallVec::new();
                while let Some((f, w)) = ts.field()? {
                    match (f, w) {
                        (1, LEN) => {
                            // The field key is one byte for field 1 / wire type 2.
                            let start = ts.pos() - 1;
                            match first {
                                None => first = Some(start),
                                Some(_) if start != last => contiguous = false,
                                Some(_) => {}
                            }
                            // Parsed only when the series is not known yet (below).
                            label_msgs.push(ts.bytes()?);
                            last = ts.pos();
                        }
                        (2, LEN) => samples.push(sample(ts.bytes()?)?),
                        (3, LEN) => {
                            ts.skip(LEN)?;
                            stats.exemplars += 1;
                        }
                        (4, LEN) => {
                            ts.skip(LEN)?;
                            stats.histograms += 1;
                        }
                        (_, w) => ts.skip(w)?,
                    }
                }
                if samples.is_empty() {
                    continue;
                }
                let raw = match (first, contiguous) {
                    (Some(start), true) => ts.buf().get(start..last),
                    _ => None,
                };
                let id = match raw.and_then(|raw| registry.resolve_raw(raw)) {
                    Some(id) => id,
                    None => {
                        for msg in &label_msgs {
                            let mut l = Reader::new(msg);
                            let (mut name, mut value) = ("", "");
                            while let Some((lf, lw)) = l.field()? {
                                match (lf, lw) {
                                    (1, LEN) => name = l.str()?,
                                    (2, LEN) => value = l.str()?,
                                    (_, lw) => l.skip(lw)?,
                                }
                            }
                            labels.push((name, value));
                        }
                        ensure_sorted(&mut labels);
                        let id = registry.resolve(&labels, limits)?;
                        if let Some(raw) = raw {
                            registry.remember_raw(raw, id);
                        }
                        id
                    }
                };
                for &(value, t) in &samples {
                    out.series_id.push(id);
                    out.timestamp_ms.push(t);
                    out.value.push(value);
                }
                stats.samples += samples.len() as u64;
            }
            (3, LEN) => {
                r.skip(LEN)?;
                stats.metadata += 1;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(stats)
}

/// Reads packed (or, as protobuf allows, unpacked) `repeated uint32` references.
#[inline]
fn refs(r: &mut Reader<'_>, wt: u8, into: &mut SmallVec<[u32; 64]>) -> Result<(), DecodeError> {
    if wt == LEN {
        let mut p = Reader::new(r.bytes()?);
        while !p.is_empty() {
            into.push(
                u32::try_from(p.varint()?)
                    .map_err(|_| DecodeError::Malformed("symbol reference out of range"))?,
            );
        }
    } else {
        into.push(
            u32::try_from(r.varint()?)
                .map_err(|_| DecodeError::Malformed("symbol reference out of range"))?,
        );
    }
    Ok(())
}

/// Decodes an uncompressed `io.prometheus.write.v2.Request`.
pub fn decode_v2(
    buf: &[u8],
    registry: &mut SeriesRegistry,
    limits: &SeriesLimits,
    out: &mut Samples,
) -> Result<WriteStats, DecodeError> {
    // Symbols come first on the wire from well-behaved senders, but protobuf does not promise
    // field order: collect them in one pass, then read the series in a second.
    // Raw bytes: UTF-8 is checked only for series not seen before (a known series' bytes were
    // checked when it was first seen).
    let mut symbols: Vec<&[u8]> = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((field, wt)) = r.field()? {
        match (field, wt) {
            (4, LEN) => symbols.push(r.bytes()?),
            (_, wt) => r.skip(wt)?,
        }
    }
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(DecodeError::Invalid(
            "the first symbol must be the empty string".into(),
        ));
    }
    let raw_symbol = |i: u32| -> Result<&[u8], DecodeError> {
        symbols.get(i as usize).copied().ok_or_else(|| {
            DecodeError::Invalid(format!(
                "symbol reference {i} is outside the table of {}",
                symbols.len()
            ))
        })
    };
    let symbol = |i: u32| -> Result<&str, DecodeError> {
        std::str::from_utf8(raw_symbol(i)?)
            .map_err(|_| DecodeError::Malformed("symbol is not UTF-8"))
    };
    let mut key: Vec<u8> = Vec::with_capacity(1024);
    let mut stats = WriteStats::default();
    let mut r = Reader::new(buf);
    let mut label_refs: SmallVec<[u32; 64]> = SmallVec::new();
    let mut labels: LabelScratch<'_> = SmallVec::new();
    let mut samples: SmallVec<[(f64, i64); 4]> = SmallVec::new();
    while let Some((field, wt)) = r.field()? {
        if (field, wt) != (5, LEN) {
            r.skip(wt)?;
            continue;
        }
        stats.series += 1;
        label_refs.clear();
        labels.clear();
        samples.clear();
        let mut ts = Reader::new(r.bytes()?);
        while let Some((f, w)) = ts.field()? {
            match (f, w) {
                (1, LEN | VARINT) => refs(&mut ts, w, &mut label_refs)?,
                (2, LEN) => samples.push(sample(ts.bytes()?)?),
                (3, LEN) => {
                    ts.skip(LEN)?;
                    stats.histograms += 1;
                }
                (4, LEN) => {
                    ts.skip(LEN)?;
                    stats.exemplars += 1;
                }
                (5, LEN) => {
                    ts.skip(LEN)?;
                    stats.metadata += 1;
                }
                (_, w) => ts.skip(w)?,
            }
        }
        if !label_refs.len().is_multiple_of(2) {
            return Err(DecodeError::Invalid(
                "labels_refs must hold name/value pairs".into(),
            ));
        }
        if samples.is_empty() {
            continue;
        }
        // Fast path: the series by its label text.
        key.clear();
        for pair in label_refs.chunks_exact(2) {
            key.extend_from_slice(raw_symbol(pair[0])?);
            key.push(0xff);
            key.extend_from_slice(raw_symbol(pair[1])?);
            key.push(0xfe);
        }
        let id = match registry.resolve_text(&key) {
            Some(id) => id,
            None => {
                for pair in label_refs.chunks_exact(2) {
                    labels.push((symbol(pair[0])?, symbol(pair[1])?));
                }
                ensure_sorted(&mut labels);
                let id = registry.resolve(&labels, limits)?;
                registry.remember_text(&key, id);
                id
            }
        };
        for &(value, t) in &samples {
            out.series_id.push(id);
            out.timestamp_ms.push(t);
            out.value.push(value);
        }
        stats.samples += samples.len() as u64;
    }
    Ok(stats)
}
