//! Loki push decoding into log-line columns.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Int64Array, RecordBatch, UInt32Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use super::labels::parse_labels;
use crate::DecodeError;
use crate::registry::{SeriesLimits, SeriesRegistry};
use crate::wire::{LEN, Reader, VARINT};

/// Decoded log lines as columns.
#[derive(Debug, Default)]
pub struct LogLines {
    /// Stream ids from the stream registry.
    pub stream_id: Vec<u32>,
    /// Nanoseconds since the epoch.
    pub timestamp_ns: Vec<i64>,
    /// The lines.
    pub line: StringBuilder,
    /// `error`, `warn`, `info`, `debug`, `fatal`, or null when no level is recognisable.
    pub level: StringBuilder,
    /// What a line must meet to be taken (by default everything is).
    pub rules: LineRules,
    /// Lines not taken, by reason.
    pub refused: crate::admission::Refused,
}

/// What a log line must meet to be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRules {
    /// Timestamps taken.
    pub window: crate::admission::TimeWindow,
    /// Longest line taken, in bytes.
    pub max_line_bytes: usize,
}

impl Default for LineRules {
    fn default() -> Self {
        Self {
            window: crate::admission::TimeWindow::ALL,
            max_line_bytes: usize::MAX,
        }
    }
}

impl LineRules {
    /// The rules of `admission` now.
    pub fn now(admission: &crate::admission::Admission) -> Self {
        Self {
            window: admission.window_now(),
            max_line_bytes: admission.max_line_bytes,
        }
    }
}

impl LogLines {
    /// Empty columns that take only lines meeting `rules`.
    pub fn with_rules(rules: LineRules) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// Lines held.
    pub fn len(&self) -> usize {
        self.stream_id.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.stream_id.is_empty()
    }
}

/// What one push carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Streams.
    pub streams: u64,
    /// Lines taken.
    pub lines: u64,
    /// Lines not taken (outside the time window, over the length cap).
    pub refused: crate::admission::Refused,
}

/// The schema of log batches.
pub fn log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream_id", DataType::UInt32, false),
        Field::new("timestamp_ns", DataType::Int64, false),
        Field::new("line", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, true),
    ]))
}

/// Moves decoded lines into a record batch.
pub fn logs_to_batch(mut lines: LogLines, schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt32Array::from(lines.stream_id)),
            Arc::new(Int64Array::from(lines.timestamp_ns)),
            Arc::new(lines.line.finish()),
            Arc::new(lines.level.finish()),
        ],
    )
}

/// Inflates a gzip body, refusing more than `max` bytes.
pub fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    // The gzip trailer holds the inflated size (mod 2^32): reserving it once avoids the
    // doubling copies of a growing buffer (a 50 MB body would peak near 100 MB).
    let declared = body
        .len()
        .checked_sub(4)
        .and_then(|at| body.get(at..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, |t| u32::from_le_bytes(t) as usize);
    let mut out = Vec::with_capacity(declared.min(max.saturating_add(1)));
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Malformed("gzip: corrupt stream"))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge {
            size: out.len(),
            max,
        });
    }
    Ok(out)
}

fn normalise(level: &str) -> Option<&'static str> {
    match level.to_ascii_lowercase().as_str() {
        "error" | "err" | "eror" => Some("error"),
        "warn" | "warning" => Some("warn"),
        "info" | "information" | "notice" => Some("info"),
        "debug" | "trace" | "dbug" => Some("debug"),
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => Some("fatal"),
        _ => None,
    }
}

/// The level of a line: from metadata or stream labels when given, else `level=X`,
/// `"level":"X"` or a leading `ERROR`/`WARN`/... in the first 128 bytes.
fn detect_level(line: &str, hint: Option<&str>) -> Option<&'static str> {
    if let Some(level) = hint.and_then(normalise) {
        return Some(level);
    }
    let head = crate::registry::truncate(line, 128);
    for key in ["level=", "\"level\":\"", "\"level\": \"", "lvl="] {
        if let Some(at) = head.find(key) {
            let rest = &head[at + key.len()..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if let Some(level) = normalise(&word) {
                return Some(level);
            }
        }
    }
    head.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(4)
        .find_map(|w| {
            (w.len() >= 4 && w.chars().all(|c| c.is_ascii_uppercase()))
                .then(|| normalise(w))
                .flatten()
        })
}

/// Appends a line whose level is detected from its text (Kafka JSON lines); false when
/// the rules refused it.
pub(crate) fn push_line_pub(out: &mut LogLines, stream: u32, ts: i64, line: &str) -> bool {
    push_line(out, stream, ts, line, None)
}

/// Appends a line that meets the rules (else counts it refused); true when taken.
fn push_line(out: &mut LogLines, stream: u32, ts: i64, line: &str, hint: Option<&str>) -> bool {
    use crate::admission::Reason;
    let reason = if line.len() > out.rules.max_line_bytes {
        Some(Reason::TooLong)
    } else {
        out.rules.window.check_ns(ts)
    };
    if let Some(reason) = reason {
        out.refused
            .note(reason, stream, ts.div_euclid(1_000_000), line.len());
        return false;
    }
    out.stream_id.push(stream);
    out.timestamp_ns.push(ts);
    out.line.append_value(line);
    out.level.append_option(detect_level(line, hint));
    true
}

/// Stream labels to an id (labels owned, since they are parsed from a string).
fn stream_id(
    labels: &[(String, String)],
    registry: &mut SeriesRegistry,
    limits: &SeriesLimits,
) -> Result<u32, DecodeError> {
    let borrowed: Vec<(&str, &str)> = labels
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    registry.resolve(&borrowed, limits)
}

fn level_label(labels: &[(String, String)]) -> Option<&str> {
    labels
        .iter()
        .find(|(n, _)| n == "level" || n == "detected_level")
        .map(|(_, v)| v.as_str())
}

/// Decodes an uncompressed `logproto.PushRequest`.
pub fn decode_proto(
    buf: &[u8],
    registry: &mut SeriesRegistry,
    limits: &SeriesLimits,
    out: &mut LogLines,
) -> Result<PushStats, DecodeError> {
    let mut stats = PushStats::default();
    let mut r = Reader::new(buf);
    while let Some((field, wt)) = r.field()? {
        if (field, wt) != (1, LEN) {
            r.skip(wt)?;
            continue;
        }
        stats.streams += 1;
        let mut s = Reader::new(r.bytes()?);
        let mut labels = None;
        let mut entries: Vec<&[u8]> = Vec::new();
        while let Some((f, w)) = s.field()? {
            match (f, w) {
                (1, LEN) => labels = Some(parse_labels(s.str()?)?),
                (2, LEN) => entries.push(s.bytes()?),
                (_, w) => s.skip(w)?,
            }
        }
        let labels = labels.ok_or_else(|| DecodeError::Invalid("a stream has no labels".into()))?;
        let id = stream_id(&labels, registry, limits)?;
        let stream_level = level_label(&labels);
        for entry in entries {
            let mut e = Reader::new(entry);
            let (mut ts, mut line, mut meta_level) = (0i64, "", None);
            while let Some((f, w)) = e.field()? {
                match (f, w) {
                    (1, LEN) => {
                        let mut t = Reader::new(e.bytes()?);
                        let (mut secs, mut nanos) = (0i64, 0i64);
                        while let Some((tf, tw)) = t.field()? {
                            match (tf, tw) {
                                (1, VARINT) => secs = t.varint()? as i64,
                                (2, VARINT) => nanos = i64::from(t.varint()? as i32),
                                (_, tw) => t.skip(tw)?,
                            }
                        }
                        ts = secs.saturating_mul(1_000_000_000).saturating_add(nanos);
                    }
                    (2, LEN) => line = e.str()?,
                    (3, LEN) => {
                        let mut m = Reader::new(e.bytes()?);
                        let (mut name, mut value) = ("", "");
                        while let Some((mf, mw)) = m.field()? {
                            match (mf, mw) {
                                (1, LEN) => name = m.str()?,
                                (2, LEN) => value = m.str()?,
                                (_, mw) => m.skip(mw)?,
                            }
                        }
                        if name == "level" || name == "detected_level" {
                            meta_level = Some(value);
                        }
                    }
                    (_, w) => e.skip(w)?,
                }
            }
            if push_line(out, id, ts, line, meta_level.or(stream_level)) {
                stats.lines += 1;
            }
        }
    }
    stats.refused = out.refused;
    Ok(stats)
}

#[derive(Deserialize)]
struct JsonPush<'a> {
    #[serde(borrow)]
    streams: Vec<JsonStream<'a>>,
}

#[derive(Deserialize)]
struct JsonStream<'a> {
    #[serde(borrow, default)]
    stream: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    #[serde(borrow, default)]
    values: Vec<JsonEntry<'a>>,
}

/// `["<unix ns>", "line"]` or `["<unix ns>", "line", {"structured": "metadata"}]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonEntry<'a> {
    WithMeta(
        #[serde(borrow)] Cow<'a, str>,
        #[serde(borrow)] Cow<'a, str>,
        #[serde(borrow)] BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    ),
    Plain(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] Cow<'a, str>),
}

/// Decodes the JSON form of a push.
pub fn decode_json(
    buf: &[u8],
    registry: &mut SeriesRegistry,
    limits: &SeriesLimits,
    out: &mut LogLines,
) -> Result<PushStats, DecodeError> {
    let push: JsonPush<'_> =
        serde_json::from_slice(buf).map_err(|e| DecodeError::Invalid(format!("JSON push: {e}")))?;
    let mut stats = PushStats::default();
    for stream in push.streams {
        stats.streams += 1;
        let labels: Vec<(String, String)> = stream
            .stream
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let id = stream_id(&labels, registry, limits)?;
        let stream_level = level_label(&labels);
        for entry in stream.values {
            let (ts, line, meta) = match &entry {
                JsonEntry::WithMeta(ts, line, meta) => (ts, line, Some(meta)),
                JsonEntry::Plain(ts, line) => (ts, line, None),
            };
            let ts: i64 = ts.parse().map_err(|_| {
                DecodeError::Invalid(format!(
                    "timestamp `{}` is not nanoseconds since the epoch",
                    crate::registry::truncate(ts, 40)
                ))
            })?;
            let meta_level = meta
                .and_then(|m| m.get("level").or_else(|| m.get("detected_level")))
                .map(|v| v.as_ref());
            if push_line(out, id, ts, line, meta_level.or(stream_level)) {
                stats.lines += 1;
            }
        }
    }
    stats.refused = out.refused;
    Ok(stats)
}

/// Encodes a `logproto.PushRequest` (tests, load generators): streams of `(labels text,
/// [(timestamp_ns, line)])`.
pub fn encode_proto(streams: &[(String, Vec<(i64, String)>)]) -> Vec<u8> {
    use crate::wire::encode::{bytes, int64};
    let mut out = Vec::new();
    for (labels, entries) in streams {
        let mut s = Vec::new();
        bytes(&mut s, 1, labels.as_bytes());
        for (ts, line) in entries {
            let mut t = Vec::new();
            int64(&mut t, 1, ts.div_euclid(1_000_000_000));
            int64(&mut t, 2, ts.rem_euclid(1_000_000_000));
            let mut e = Vec::new();
            bytes(&mut e, 1, &t);
            bytes(&mut e, 2, line.as_bytes());
            bytes(&mut s, 2, &e);
        }
        bytes(&mut out, 1, &s);
    }
    out
}
