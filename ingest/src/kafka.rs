//! Kafka: a consumer-group member that feeds the same queue as the HTTP endpoints.
//!
//! Message formats, told apart by the `content-type` header when present, else by the first
//! byte: remote-write protobuf (snappy `prometheus.WriteRequest`), the JSON sample format of
//! prometheus-kafka-adapter (`{"timestamp", "value", "name", "labels"}`), and JSON log lines
//! (`{"timestamp", "line", "labels"}`).
//!
//! Delivery is at least once: offsets are committed only after the batch they belong to is
//! in the engine's queue; while that queue is full the assigned partitions are paused. A message that does not decode is counted and logged with its
//! topic, partition and offset, then skipped; it never stops the consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde::Deserialize;

use crate::DecodeError;
use crate::pipeline::Ingest;

/// Where to consume from.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,...`.
    pub brokers: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Consumer group.
    pub group: String,
    /// Messages per batch at most.
    pub batch_max: usize,
    /// How long a batch may wait for more messages.
    pub batch_wait: Duration,
}

/// What the consumer has done.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Messages consumed (poison included).
    pub messages: AtomicU64,
    /// Samples handed to the engine.
    pub samples: AtomicU64,
    /// Log lines handed to the engine.
    pub log_lines: AtomicU64,
    /// Messages skipped because they did not decode.
    pub poison: AtomicU64,
    /// Offset commits done.
    pub commits: AtomicU64,
    /// Times the partitions were paused because the engine's queue was full.
    pub pauses: AtomicU64,
}

#[derive(Deserialize)]
struct AdapterSample {
    timestamp: String,
    value: serde_json::Value,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct JsonLine {
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    line: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

fn parse_time_ns(v: &serde_json::Value) -> Result<i64, DecodeError> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or(DecodeError::Malformed("timestamp out of range")),
        serde_json::Value::String(s) => s.parse::<i64>().or_else(|_| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| {
                    DecodeError::Invalid(format!(
                        "timestamp `{}` is neither nanoseconds nor RFC 3339",
                        crate::registry::truncate(s, 40)
                    ))
                })
        }),
        _ => Err(DecodeError::Malformed(
            "timestamp must be a string or a number",
        )),
    }
}

/// One decoded message, still owned, waiting for its batch.
pub(crate) enum Decoded {
    RemoteWrite(Vec<u8>),
    Sample {
        labels: Vec<(String, String)>,
        ts_ms: i64,
        value: f64,
    },
    Line {
        labels: Vec<(String, String)>,
        ts_ns: i64,
        line: String,
    },
}

fn decode_message(payload: &[u8], content_type: Option<&str>) -> Result<Decoded, DecodeError> {
    let json = match content_type {
        Some(ct) if ct.starts_with("application/json") => true,
        Some(ct) if ct.starts_with("application/x-protobuf") => false,
        _ => payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    if !json {
        return Ok(Decoded::RemoteWrite(payload.to_vec()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Invalid(format!("JSON: {e}")))?;
    if value.get("line").is_some() {
        let l: JsonLine = serde_json::from_value(value)
            .map_err(|e| DecodeError::Invalid(format!("JSON log line: {e}")))?;
        let ts_ns = match &l.timestamp {
            Some(t) => parse_time_ns(t)?,
            None => {
                return Err(DecodeError::Invalid(
                    "a JSON log line needs `timestamp`".into(),
                ));
            }
        };
        return Ok(Decoded::Line {
            labels: l.labels.into_iter().collect(),
            ts_ns,
            line: l.line,
        });
    }
    let s: AdapterSample = serde_json::from_value(value)
        .map_err(|e| DecodeError::Invalid(format!("JSON sample: {e}")))?;
    let value = match &s.value {
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or(DecodeError::Malformed("value out of range"))?,
        serde_json::Value::String(v) => v.parse::<f64>().map_err(|_| {
            DecodeError::Invalid(format!(
                "value `{}` is not a number",
                crate::registry::truncate(v, 40)
            ))
        })?,
        _ => {
            return Err(DecodeError::Invalid(
                "`value` must be a number or a numeric string".into(),
            ));
        }
    };
    let ts_ms = parse_time_ns(&serde_json::Value::String(s.timestamp.clone()))? / 1_000_000;
    let mut labels = s.labels;
    if let Some(name) = s.name {
        labels.entry("__name__".into()).or_insert(name);
    }
    Ok(Decoded::Sample {
        labels: labels.into_iter().collect(),
        ts_ms,
        value,
    })
}

/// Consumes until `stop` resolves. Returns an error only when the consumer cannot be set up.
pub async fn run(
    settings: KafkaSettings,
    ingest: Ingest,
    stats: Arc<KafkaStats>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .map_err(|e| format!("kafka consumer: {e}"))?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| format!("subscribing to {topics:?}: {e}"))?;
    tokio::pin!(stop);
    loop {
        // Collect a batch.
        let mut decoded: Vec<Decoded> = Vec::new();
        let mut offsets: Vec<(String, i32, i64)> = Vec::new();
        let started = Instant::now();
        while decoded.len() < settings.batch_max {
            let left = settings.batch_wait.saturating_sub(started.elapsed());
            let message = tokio::select! {
                () = &mut stop => return Ok(()),
                m = tokio::time::timeout(left, consumer.recv()) => m,
            };
            let message = match message {
                Err(_) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                Ok(Ok(m)) => m,
            };
            stats.messages.fetch_add(1, Ordering::Relaxed);
            offsets.push((
                message.topic().to_owned(),
                message.partition(),
                message.offset(),
            ));
            let content_type = message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok().map(str::to_owned))
            });
            match message
                .payload()
                .map(|p| decode_message(p, content_type.as_deref()))
            {
                Some(Ok(d)) => decoded.push(d),
                Some(Err(e)) => {
                    stats.poison.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), error = %e, "skipping a Kafka message that does not decode");
                }
                None => {
                    stats.poison.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        "skipping an empty Kafka message"
                    );
                }
            }
        }
        if offsets.is_empty() {
            continue;
        }
        // Into the engine's queue, then commit. While the queue is full the assigned
        // partitions are paused, so librdkafka stops fetching too, and resumed afterwards.
        let paused = if ingest.queue_full() {
            match consumer.assignment() {
                Ok(assignment) => match consumer.pause(&assignment) {
                    Ok(()) => {
                        stats.pauses.fetch_add(1, Ordering::Relaxed);
                        Some(assignment)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pausing Kafka partitions failed");
                        None
                    }
                },
                Err(_) => None,
            }
        } else {
            None
        };
        let queued = ingest.kafka_batch(decoded).await;
        if let Some(assignment) = paused
            && let Err(e) = consumer.resume(&assignment)
        {
            tracing::warn!(error = %e, "resuming Kafka partitions failed");
        }
        match queued {
            Ok((samples, lines, bad)) => {
                stats.samples.fetch_add(samples, Ordering::Relaxed);
                stats.log_lines.fetch_add(lines, Ordering::Relaxed);
                stats.poison.fetch_add(bad, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "the engine's queue is closed; stopping the Kafka consumer without committing");
                return Ok(());
            }
        }
        // Commit the next offset of every partition in the batch, explicitly.
        let mut next: std::collections::BTreeMap<(String, i32), i64> =
            std::collections::BTreeMap::new();
        for (topic, partition, offset) in offsets {
            let entry = next.entry((topic, partition)).or_insert(offset + 1);
            *entry = (*entry).max(offset + 1);
        }
        let mut list = rdkafka::TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            if let Err(e) =
                list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
            {
                tracing::warn!(error = %e, topic, partition, "building the Kafka commit failed");
            }
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            // A rebalance took a partition: its next owner reads these again (at least once).
            Err(e) => {
                tracing::warn!(error = %e, "committing Kafka offsets failed; the messages will be read again")
            }
        }
    }
}

impl Ingest {
    /// Turns a batch of Kafka messages into engine batches and waits for room in the queue.
    /// Returns samples, log lines and messages that failed to decode at this stage.
    async fn kafka_batch(
        &self,
        messages: Vec<Decoded>,
    ) -> Result<(u64, u64, u64), crate::IngestError> {
        let decoded = self.decode_kafka(messages);
        crate::pipeline::count_refused("kafka", &decoded.sample_refusals);
        crate::pipeline::count_refused("kafka", &decoded.line_refusals);
        self.warn_refused("kafka", &decoded.sample_refusals, false);
        self.warn_refused("kafka", &decoded.line_refusals, true);
        for batch in decoded.batches {
            self.enqueue_wait(batch).await?;
        }
        Ok((decoded.samples, decoded.lines, decoded.bad))
    }
}

pub(crate) use self::decoded::{KafkaDecoded, decode_kafka_messages};
pub(crate) use Decoded as DecodedMessage;

mod decoded {
    use super::Decoded;
    use crate::pipeline::{BatchKind, SampleBatch};
    use crate::registry::{SeriesLimits, SeriesRegistry};
    use crate::remote_write::{Samples, decode_v1, snappy_decompress};

    /// What a batch of messages became.
    pub(crate) struct KafkaDecoded {
        /// At most two batches (samples, lines).
        pub batches: Vec<SampleBatch>,
        /// Samples taken.
        pub samples: u64,
        /// Lines taken.
        pub lines: u64,
        /// Messages whose content was refused.
        pub bad: u64,
        /// Samples outside the time window.
        pub sample_refusals: crate::Refused,
        /// Lines outside the time window or over the length cap.
        pub line_refusals: crate::Refused,
    }

    /// Decodes owned messages into at most two batches (samples, lines); samples and lines
    /// `admission` refuses are counted and skipped, like any other refused content.
    pub(crate) fn decode_kafka_messages(
        messages: Vec<Decoded>,
        series: &mut SeriesRegistry,
        streams: &mut SeriesRegistry,
        limits: &SeriesLimits,
        max_decompressed: usize,
        admission: &crate::Admission,
    ) -> KafkaDecoded {
        let mut samples = Samples::default();
        let mut lines = crate::loki::LogLines::with_rules(crate::loki::LineRules::now(admission));
        let mut bad = 0;
        for m in messages {
            let ok = match m {
                Decoded::RemoteWrite(body) => snappy_decompress(&body, max_decompressed)
                    .and_then(|raw| decode_v1(&raw, series, limits, &mut samples).map(drop)),
                Decoded::Sample {
                    labels,
                    ts_ms,
                    value,
                } => {
                    let borrowed: Vec<(&str, &str)> = labels
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    series.resolve(&borrowed, limits).map(|id| {
                        samples.series_id.push(id);
                        samples.timestamp_ms.push(ts_ms);
                        samples.value.push(value);
                    })
                }
                Decoded::Line {
                    labels,
                    ts_ns,
                    line,
                } => {
                    let borrowed: Vec<(&str, &str)> = labels
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    streams.resolve(&borrowed, limits).map(|id| {
                        crate::loki::push_line_pub(&mut lines, id, ts_ns, &line);
                    })
                }
            };
            if let Err(e) = ok {
                bad += 1;
                tracing::warn!(error = %e, "skipping a Kafka message whose content is refused");
            }
        }
        let mut sample_refusals = crate::Refused::default();
        samples.retain_window(&admission.window_now(), &mut sample_refusals);
        let line_refusals = lines.refused;
        let (n_samples, n_lines) = (samples.len() as u64, lines.len() as u64);
        let mut out = Vec::new();
        if !samples.is_empty()
            && let Ok(batch) = crate::samples_to_batch(samples, crate::sample_schema())
        {
            out.push(SampleBatch {
                source: "kafka",
                kind: BatchKind::Samples,
                batch,
            });
        }
        if !lines.is_empty()
            && let Ok(batch) = crate::loki::logs_to_batch(lines, crate::loki::log_schema())
        {
            out.push(SampleBatch {
                source: "kafka",
                kind: BatchKind::Logs,
                batch,
            });
        }
        KafkaDecoded {
            batches: out,
            samples: n_samples,
            lines: n_lines,
            bad,
            sample_refusals,
            line_refusals,
        }
    }
}
