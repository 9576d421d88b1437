//! Aegis detectors: the isolation forest, the random-forest failure classifier, Drain log
//! templates, severity and recommended actions.
//!
//! - [`IsolationForest`]: Liu, Ting and Zhou's isolation forest (and the extended,
//!   hyperplane variant), trees stored flat as complete binary trees so scoring is a
//!   branch-free loop over contiguous memory, several rows per tree at once, rows split
//!   across rayon.
//! - [`RandomForest`]: CART trees (Gini, bootstrap, feature subsampling) with class
//!   probabilities and an out-of-bag estimate; [`FailureClassifier`] names a failure type
//!   from [`FAILURE_FEATURES`], trained out of the box on [`synthetic::failure_training_set`].
//! - [`Drain`]: an online log template miner; [`LogWindow`] turns a window of lines into
//!   the log features (error/warn rate, new templates, crash signatures).
//! - [`assess`]: severity, a recommended action with confidence, and an explanation.
//! - [`ModelFile`]: versioned persistence carrying the feature schema, so a model never
//!   scores data of another shape; [`Reservoir`] keeps recent normal rows for retraining.
//!
//! This crate does no I/O beyond reading model and dataset files; it depends only on
//! `aegis-core`, so the crate graph stays one-way.

mod drain;
mod error;
mod failure;
mod forest;
mod iforest;
pub mod mat;
mod matrix;
pub mod metrics;
mod model;
mod reservoir;
mod rng;
mod severity;
pub mod synthetic;

pub use drain::{CrashSignature, Drain, DrainConfig, LogFeatures, LogWindow, TemplateId};
pub use error::{Error, Result};
pub use failure::{
    FAILURE_FEATURES, FailureClassifier, FailurePrediction, FailureType, HEALTHY_DEFAULTS,
    apply_log_features,
};
pub use forest::{ClassMetrics, RandomForest, RandomForestParams};
pub use iforest::{IsolationForest, IsolationForestParams, average_path_length};
pub use matrix::{Matrix, MatrixView};
pub use model::{ModelFile, ModelKind, ModelPayload};
pub use reservoir::Reservoir;
pub use severity::{
    Assessment, Contribution, Recommendation, RecommendedAction, Severity, assess, severity_of,
    severity_score,
};
