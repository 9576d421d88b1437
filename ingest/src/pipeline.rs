//! [`Ingest`]: decoded requests become Arrow batches on a bounded channel to the engine.
//!
//! A full channel refuses the request ([`IngestError::Overloaded`], HTTP 503 with
//! `Retry-After`) instead of queueing without bound or dropping: the sender retries, and
//! what was acknowledged is in the channel.

use std::sync::{Arc, Mutex};

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::SchemaRef;
use tokio::sync::mpsc;

use crate::remote_write::{Samples, WriteStats, decode_v1, decode_v2, snappy_decompress};
use crate::{DecodeError, SeriesLimits, SeriesRegistry, sample_schema, samples_to_batch};

/// Which remote write protocol a body uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteWriteVersion {
    /// `prometheus.WriteRequest` (1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (2.0).
    V2,
}

/// One pulled series: its labels and `(timestamp_ms, value)` points.
pub type PulledSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

/// What a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Samples: `series_id`, `timestamp_ms`, `value`.
    Samples,
    /// Log lines: `stream_id`, `timestamp_ns`, `line`, `level`.
    Logs,
}

/// A batch for the engine.
#[derive(Debug, Clone)]
pub struct SampleBatch {
    /// Where it came from (`remote_write`, `loki`, `kafka`, ...).
    pub source: &'static str,
    /// Samples or log lines.
    pub kind: BatchKind,
    /// The rows.
    pub batch: RecordBatch,
}

/// The encodings of a Loki push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LokiFormat {
    /// `logproto.PushRequest`.
    Protobuf,
    /// The JSON form.
    Json,
}

/// How a Loki push body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not at all.
    None,
    /// Snappy block format.
    Snappy,
    /// gzip.
    Gzip,
}

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The body is bad (4xx).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The engine's queue is full: retry later (503).
    #[error("the ingest queue is full; retry shortly")]
    Overloaded,
    /// The engine is gone (shutting down).
    #[error("ingest is shutting down")]
    Closed,
    /// Pull mode could not ask its source (unreachable, an error answer, a body it cannot read).
    #[error("{0}")]
    Pull(String),
}

/// Limits of the ingest path.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Series limits.
    pub series: SeriesLimits,
    /// Largest decompressed body, in bytes.
    pub max_decompressed: usize,
    /// The time window and line cap every sample and line must meet.
    pub admission: crate::Admission,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            series: SeriesLimits::default(),
            max_decompressed: crate::remote_write::DEFAULT_MAX_DECOMPRESSED,
            admission: crate::Admission::default(),
        }
    }
}

/// The ingest front: decoding, the series registry, the queue to the engine.
#[derive(Debug, Clone)]
pub struct Ingest {
    registry: Arc<Mutex<SeriesRegistry>>,
    streams: Arc<Mutex<SeriesRegistry>>,
    queue: mpsc::Sender<SampleBatch>,
    limits: IngestLimits,
    schema: SchemaRef,
}

impl Ingest {
    /// An ingest front whose queue holds `capacity` batches; the receiver is the engine's.
    pub fn new(capacity: usize, limits: IngestLimits) -> (Self, mpsc::Receiver<SampleBatch>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                registry: Arc::new(Mutex::new(SeriesRegistry::new())),
                streams: Arc::new(Mutex::new(SeriesRegistry::new())),
                queue,
                limits,
                schema: sample_schema(),
            },
            rx,
        )
    }

    /// The series registry (read it to name series).
    pub fn registry(&self) -> &Arc<Mutex<SeriesRegistry>> {
        &self.registry
    }

    /// Takes a snappy-compressed remote write body.
    pub fn remote_write(
        &self,
        body: &[u8],
        version: RemoteWriteVersion,
    ) -> Result<WriteStats, IngestError> {
        // Refuse early when the queue is already full: no work spent on a body that cannot
        // be taken.
        if self.queue.capacity() == 0 {
            return Err(IngestError::Overloaded);
        }
        thread_local! {
            /// The inflated body, reused by every request this thread decodes.
            static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut samples = Samples::default();
        let stats = RAW.with(|raw| {
            let mut raw = raw.borrow_mut();
            crate::remote_write::snappy_decompress_into(
                body,
                self.limits.max_decompressed,
                &mut raw,
            )?;
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            registry.set_now(chrono::Utc::now().timestamp());
            let stats = match version {
                RemoteWriteVersion::V1 => {
                    decode_v1(&raw, &mut registry, &self.limits.series, &mut samples)?
                }
                RemoteWriteVersion::V2 => {
                    decode_v2(&raw, &mut registry, &self.limits.series, &mut samples)?
                }
            };
            // Do not keep a huge buffer around after an unusually large request.
            if raw.capacity() > 16 << 20 {
                *raw = Vec::new();
            }
            Ok::<_, IngestError>(stats)
        })?;
        let mut stats = stats;
        samples.retain_window(&self.limits.admission.window_now(), &mut stats.refused);
        stats.samples = stats.samples.saturating_sub(stats.refused.total());
        count_refused("remote_write", &stats.refused);
        if samples.is_empty() {
            return Ok(stats);
        }
        let batch = samples_to_batch(samples, self.schema.clone())
            .map_err(|e| IngestError::Decode(DecodeError::Invalid(e.to_string())))?;
        self.enqueue(SampleBatch {
            source: "remote_write",
            kind: BatchKind::Samples,
            batch,
        })?;
        Ok(stats)
    }

    fn enqueue(&self, batch: SampleBatch) -> Result<(), IngestError> {
        match self.queue.try_send(batch) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(IngestError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(IngestError::Closed),
        }
    }

    /// Takes a Loki push body.
    pub fn loki_push(
        &self,
        body: &[u8],
        format: LokiFormat,
        compression: Compression,
    ) -> Result<crate::loki::PushStats, IngestError> {
        if self.queue.capacity() == 0 {
            return Err(IngestError::Overloaded);
        }
        let max = self.limits.max_decompressed;
        let inflated;
        let raw: &[u8] = match compression {
            Compression::None => body,
            Compression::Snappy => {
                inflated = snappy_decompress(body, max)?;
                &inflated
            }
            Compression::Gzip => {
                inflated = crate::loki::gunzip(body, max)?;
                &inflated
            }
        };
        let mut lines =
            crate::loki::LogLines::with_rules(crate::loki::LineRules::now(&self.limits.admission));
        let stats = {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            streams.set_now(chrono::Utc::now().timestamp());
            match format {
                LokiFormat::Protobuf => {
                    crate::loki::decode_proto(raw, &mut streams, &self.limits.series, &mut lines)?
                }
                LokiFormat::Json => {
                    crate::loki::decode_json(raw, &mut streams, &self.limits.series, &mut lines)?
                }
            }
        };
        count_refused("loki", &stats.refused);
        if lines.is_empty() {
            return Ok(stats);
        }
        let batch = crate::loki::logs_to_batch(lines, crate::loki::log_schema())
            .map_err(|e| IngestError::Decode(DecodeError::Invalid(e.to_string())))?;
        self.enqueue(SampleBatch {
            source: "loki",
            kind: BatchKind::Logs,
            batch,
        })?;
        Ok(stats)
    }

    /// True when the queue to the engine has no room.
    pub fn queue_full(&self) -> bool {
        self.queue.capacity() == 0
    }

    /// Waits for room in the queue (the Kafka consumer's back-pressure).
    pub async fn enqueue_wait(&self, batch: SampleBatch) -> Result<(), IngestError> {
        self.queue
            .send(batch)
            .await
            .map_err(|_| IngestError::Closed)
    }

    /// Decodes owned Kafka messages under the registries' locks.
    pub(crate) fn decode_kafka(
        &self,
        messages: Vec<crate::kafka::DecodedMessage>,
    ) -> crate::kafka::KafkaDecoded {
        let mut series = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let now = chrono::Utc::now().timestamp();
        series.set_now(now);
        streams.set_now(now);
        crate::kafka::decode_kafka_messages(
            messages,
            &mut series,
            &mut streams,
            &self.limits.series,
            self.limits.max_decompressed,
            &self.limits.admission,
        )
    }

    /// Takes samples pulled from a Prometheus `query_range` (labels, then `(ms, value)`),
    /// waiting for room in the queue: a poller can wait, unlike an HTTP sender.
    pub async fn pulled_samples(&self, series: Vec<PulledSeries>) -> Result<u64, IngestError> {
        let mut samples = Samples::default();
        {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            registry.set_now(chrono::Utc::now().timestamp());
            for (mut labels, points) in series {
                labels.sort();
                let borrowed: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let id = registry.resolve(&borrowed, &self.limits.series)?;
                for (t, v) in points {
                    samples.series_id.push(id);
                    samples.timestamp_ms.push(t);
                    samples.value.push(v);
                }
            }
        }
        let mut refused = crate::Refused::default();
        samples.retain_window(&self.limits.admission.window_now(), &mut refused);
        count_refused("prometheus_pull", &refused);
        self.warn_refused("prometheus_pull", &refused, false);
        let n = samples.len() as u64;
        if n == 0 {
            return Ok(0);
        }
        let batch = samples_to_batch(samples, self.schema.clone())
            .map_err(|e| IngestError::Decode(DecodeError::Invalid(e.to_string())))?;
        self.enqueue_wait(SampleBatch {
            source: "prometheus_pull",
            kind: BatchKind::Samples,
            batch,
        })
        .await?;
        Ok(n)
    }

    /// Takes log streams pulled from a Loki `query_range` (the JSON push shape).
    pub async fn pulled_logs(&self, push_json: &[u8]) -> Result<u64, IngestError> {
        let mut lines =
            crate::loki::LogLines::with_rules(crate::loki::LineRules::now(&self.limits.admission));
        let stats = {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            streams.set_now(chrono::Utc::now().timestamp());
            crate::loki::decode_json(push_json, &mut streams, &self.limits.series, &mut lines)?
        };
        count_refused("loki_pull", &stats.refused);
        self.warn_refused("loki_pull", &stats.refused, true);
        if lines.is_empty() {
            return Ok(0);
        }
        let batch = crate::loki::logs_to_batch(lines, crate::loki::log_schema())
            .map_err(|e| IngestError::Decode(DecodeError::Invalid(e.to_string())))?;
        self.enqueue_wait(SampleBatch {
            source: "loki_pull",
            kind: BatchKind::Logs,
            batch,
        })
        .await?;
        Ok(stats.lines)
    }

    /// The stream registry of log lines.
    pub fn streams(&self) -> &Arc<Mutex<SeriesRegistry>> {
        &self.streams
    }

    /// Forgets series and log streams nothing was received for in `idle` (see
    /// [`SeriesRegistry::evict_idle`]); returns the evicted series ids and stream ids, for
    /// the state kept per id downstream.
    pub fn evict_idle(&self, idle: std::time::Duration) -> (Vec<u32>, Vec<u32>) {
        let cutoff = chrono::Utc::now()
            .timestamp()
            .saturating_sub(i64::try_from(idle.as_secs()).unwrap_or(i64::MAX));
        let series = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evict_idle(cutoff);
        let streams = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evict_idle(cutoff);
        (series, streams)
    }

    /// The admission rules in force.
    pub fn admission(&self) -> &crate::Admission {
        &self.limits.admission
    }

    /// A sentence naming the first refused sample (or log entry, `logs`) by its labels; `None`
    /// when nothing was refused.
    pub fn describe_refused(&self, refused: &crate::Refused, logs: bool) -> Option<String> {
        let (registry, what) = if logs {
            (&self.streams, "entry")
        } else {
            (&self.registry, "sample")
        };
        let registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        refused.describe(what, &registry, &self.limits.admission)
    }

    /// Logs what a source without an answer to give (Kafka, pull mode) refused: at most once
    /// a minute per process, so a skewed sender costs a line, not a flood.
    pub(crate) fn warn_refused(&self, source: &str, refused: &crate::Refused, logs: bool) {
        static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        if refused.is_empty() {
            return;
        }
        {
            let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Some(text) = self.describe_refused(refused, logs) {
            tracing::warn!(
                source,
                refused = refused.total(),
                "{text} (logged once a minute at most)"
            );
        }
    }
}

/// Counts refused samples and lines in `aegis_ingest_rejected_total{source, reason}`.
pub(crate) fn count_refused(source: &'static str, refused: &crate::Refused) {
    for (reason, n) in refused.by_reason() {
        metrics::counter!(aegis_core::metric_names::INGEST_REJECTED_TOTAL,
            "source" => source, "reason" => reason.as_str())
        .increment(n);
    }
}

/// The latest sample of every series: what the engine's windows will hold, kept here until
/// the engine lands so ingest can be observed end to end.
#[derive(Debug, Default)]
pub struct LatestSamples {
    /// Indexed by series id (ids are dense): `i64::MIN` marks a series not seen yet.
    latest: Vec<(i64, f64)>,
    seen: usize,
    /// Samples consumed in total.
    pub samples: u64,
    /// Log lines consumed in total.
    pub log_lines: u64,
}

impl LatestSamples {
    /// Folds a batch in (log batches only count their lines).
    pub fn apply_batch(&mut self, batch: &SampleBatch) {
        match batch.kind {
            BatchKind::Samples => self.apply(&batch.batch),
            BatchKind::Logs => self.log_lines += batch.batch.num_rows() as u64,
        }
    }

    /// Folds a sample batch in.
    pub fn apply(&mut self, batch: &RecordBatch) {
        let (Some(ids), Some(ts), Some(vs)) = (
            batch.column(0).as_any().downcast_ref::<UInt32Array>(),
            batch.column(1).as_any().downcast_ref::<Int64Array>(),
            batch.column(2).as_any().downcast_ref::<Float64Array>(),
        ) else {
            return;
        };
        for i in 0..batch.num_rows() {
            let id = ids.value(i) as usize;
            if id >= self.latest.len() {
                self.latest.resize(id + 1, (i64::MIN, 0.0));
            }
            let entry = &mut self.latest[id];
            if entry.0 == i64::MIN {
                self.seen += 1;
            }
            if ts.value(i) >= entry.0 {
                *entry = (ts.value(i), vs.value(i));
            }
        }
        self.samples += batch.num_rows() as u64;
    }

    /// The latest `(timestamp_ms, value)` of series `id`.
    pub fn get(&self, id: u32) -> Option<(i64, f64)> {
        self.latest
            .get(id as usize)
            .copied()
            .filter(|e| e.0 != i64::MIN)
    }

    /// Forgets the latest samples of series the registry evicted.
    pub fn forget(&mut self, ids: &[u32]) {
        for &id in ids {
            if let Some(entry) = self.latest.get_mut(id as usize)
                && entry.0 != i64::MIN
            {
                *entry = (i64::MIN, 0.0);
                self.seen -= 1;
            }
        }
    }

    /// Series seen.
    pub fn len(&self) -> usize {
        self.seen
    }

    /// True when no series was seen.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{encode_v1, encode_v2, realistic_series};

    fn snappy(b: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(b).unwrap()
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_dropping() {
        let (ingest, mut rx) = Ingest::new(
            2,
            IngestLimits {
                admission: crate::Admission::unbounded(),
                ..IngestLimits::default()
            },
        );
        let body = snappy(&encode_v1(&realistic_series(10, 1, 0)));
        assert_eq!(
            ingest
                .remote_write(&body, RemoteWriteVersion::V1)
                .unwrap()
                .samples,
            10
        );
        let v2 = snappy(&encode_v2(&realistic_series(10, 1, 0)));
        assert_eq!(
            ingest
                .remote_write(&v2, RemoteWriteVersion::V2)
                .unwrap()
                .samples,
            10
        );
        assert_eq!(
            ingest.remote_write(&body, RemoteWriteVersion::V1),
            Err(IngestError::Overloaded)
        );
        let mut latest = LatestSamples::default();
        latest.apply(&rx.recv().await.unwrap().batch);
        latest.apply(&rx.recv().await.unwrap().batch);
        assert_eq!(
            (latest.len(), latest.samples),
            (10, 20),
            "v1 and v2 name the same series"
        );
        assert!(
            ingest.remote_write(&body, RemoteWriteVersion::V1).is_ok(),
            "room again"
        );
    }

    /// Issue 30: Kafka counts and skips samples and lines outside the time window (and
    /// lines over the cap); the rest of the batch is taken.
    #[test]
    fn kafka_skips_and_counts_what_admission_refuses() {
        use crate::kafka::DecodedMessage as D;
        let (ingest, _rx) = Ingest::new(4, IngestLimits::default());
        let now = chrono::Utc::now().timestamp_millis();
        let labels = || vec![("__name__".to_owned(), "cpu".to_owned())];
        let decoded = ingest.decode_kafka(vec![
            D::Sample {
                labels: labels(),
                ts_ms: now,
                value: 1.0,
            },
            D::Sample {
                labels: labels(),
                ts_ms: now + 365 * 86_400_000,
                value: 2.0,
            },
            D::Sample {
                labels: labels(),
                ts_ms: now - 30 * 86_400_000,
                value: 3.0,
            },
            D::Line {
                labels: labels(),
                ts_ns: now * 1_000_000,
                line: "ok".into(),
            },
            D::Line {
                labels: labels(),
                ts_ns: now * 1_000_000,
                line: "x".repeat(300 * 1024),
            },
        ]);
        assert_eq!((decoded.samples, decoded.lines, decoded.bad), (1, 1, 0));
        let s = decoded.sample_refusals;
        assert_eq!((s.too_new, s.too_old, s.too_long), (1, 1, 0));
        assert_eq!(decoded.line_refusals.too_long, 1);
        let text = ingest.describe_refused(&s, false).unwrap();
        assert!(text.contains(r#"{__name__="cpu"}"#), "{text}");
    }
}
