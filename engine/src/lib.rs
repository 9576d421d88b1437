//! Aegis engine: per-series windows, per-entity features, the tick's incidents, and the
//! streaming detector with its backtest and scoring.
//!
//! - [`Engine`]: samples routed to their workload's windows; a tick scores the entities
//!   with new data and reports newly opened incidents as [`Detection`]s.
//! - [`Entity`]: the workload a series or stream describes, from Kubernetes labels
//!   ([`resolve_entity`]: deployment labels, kube-state-metrics owners, pod names).
//! - [`SeriesWindow`]: a ring buffer of one series at a fixed resolution over a fixed span;
//!   late, duplicate and out-of-order samples handled, gaps kept as missing.
//! - [`features`]: the per-window kernels (last, mean, std, min, max, slope, rate, z-score
//!   against a baseline, EWMA), skipping missing slots.
//! - [`Incidents`]: one incident per entity with hysteresis, so a flapping signal acts once.
//! - [`matrix`]: the per-tick feature matrix, one row per entity, built straight from the
//!   windows into the buffer the detectors score.
//! - [`StreamingDetector`]: the univariate streaming detector: shape features per point, a
//!   streaming isolation forest, an anomaly likelihood, new extremes; one score per point
//!   from the past alone. `aegis backtest` runs it per file; the engine runs it on every
//!   workload metric, per-series state ([`Series`]) with forests pooled per metric
//!   ([`Pool`]), so a backtest says what the live loop would have said.
//! - [`backtest`]: recorded CSV series (files or folders) through the detector in event
//!   time; [`nab`]: NAB v1.1's scoring of the results; [`time`]: the timestamp forms read.
//!
//! It depends on `aegis-core` and on `aegis-detectors` (the forest it scores with), not on
//! ingest, store or API; the self-healing loop that drives it is in `aegis-runtime`.

pub mod backtest;
mod engine;
mod entity;
pub mod features;
mod incidents;
mod live;
pub mod matrix;
pub mod nab;
mod stream;
pub mod time;
mod window;

pub use engine::{
    DEFAULT_METRICS, Detection, Engine, EngineConfig, EngineCounters, Phase, TickInput,
};
pub use entity::{Entity, resolve as resolve_entity};
pub use incidents::{Hysteresis, Incidents, Transition};
pub use live::{MetricScores, StreamPoint};
pub use stream::{ModelKind, Offer, Pool, Series, StreamConfig, StreamScore, StreamingDetector};
pub use window::{Insert, SeriesWindow};
