//! Aegis engine: per-series windows, per-entity features, the tick loop that scores,
//! decides and acts, and SQL over recent data.
//!
//! Built so far:
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
//! - [`StreamingDetector`]: the univariate detector the loop and `aegis backtest` share —
//!   features per point, warm-up, periodic retraining on recent normal rows, scores in
//!   event time.
//!
//! It depends on `aegis-core` and `aegis-detectors`, not on ingest, store or API.

pub mod backtest;
mod engine;
mod entity;
pub mod features;
mod incidents;
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
pub use stream::{StreamConfig, StreamScore, StreamingDetector};
pub use window::{Insert, SeriesWindow};
