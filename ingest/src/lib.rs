//! Aegis ingest: what Prometheus and Loki clients send, turned into Arrow record batches.
//!
//! - [`remote_write`]: Prometheus remote write 1.0 and 2.0, decoded from the request buffer
//!   without copying strings ([`remote_write::decode_v1`], [`remote_write::decode_v2`]), with
//!   snappy bodies inflated only after their declared size passed the limit.
//! - [`SeriesRegistry`]: label sets to stable series ids; names and values interned once.
//! - [`samples_to_batch`]: sample columns to an Arrow `RecordBatch` (`series_id`,
//!   `timestamp_ms`, `value`).
//! - [`loki`]: Loki push bodies (JSON and protobuf + snappy).
//! - [`kafka`]: the Kafka consumer feeding the same pipeline.
//! - [`pipeline`]: [`Ingest`], decoded samples and lines through admission into batches.
//! - [`admission`]: the time and size bounds every sample and line passes.
//! - [`pull`]: pull mode, polling Prometheus and Loki `query_range` for setups that cannot push.

pub mod admission;
mod batch;
pub mod kafka;
pub mod loki;
pub mod pipeline;
pub mod pull;
pub(crate) mod registry;
pub mod remote_write;
mod wire;

pub use admission::{Admission, Reason, Refused, TimeWindow};
pub use batch::{sample_schema, samples_to_batch};
pub use pipeline::{
    BatchKind, Compression, Ingest, IngestError, IngestLimits, LatestSamples, LokiFormat,
    PulledSeries, RemoteWriteVersion, SampleBatch,
};
pub use registry::{SeriesLimits, SeriesRegistry};
pub use wire::encode;

/// Why a body was refused; each maps to a 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid protobuf or snappy (400).
    #[error("malformed body: {0}")]
    Malformed(&'static str),
    /// Valid encoding, invalid content (400).
    #[error("invalid body: {0}")]
    Invalid(String),
    /// A label or series limit (400).
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// Larger than allowed once decompressed (413).
    #[error("the body inflates to {size} bytes; at most {max} are accepted")]
    TooLarge {
        /// Declared decompressed size.
        size: usize,
        /// The limit.
        max: usize,
    },
}
