//! Errors of the detectors: the caller's data or model file versus a fault.

/// Result with the detectors' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while fitting, scoring or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input data cannot be used (shape, non-finite values, too few rows).
    #[error("{0}")]
    InvalidInput(String),
    /// Parameters out of range.
    #[error("{0}")]
    InvalidParams(String),
    /// The data's feature schema differs from the model's.
    #[error("feature schema mismatch: {0}")]
    SchemaMismatch(String),
    /// A model or dataset file is malformed.
    #[error("{0}")]
    Format(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}
