//! The executor's errors.

/// What can go wrong before an action reaches the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] crate::InvalidRequest),
    /// No client for the cluster: an unreadable kubeconfig, no in-cluster account, bad TLS.
    #[error("{0}")]
    Connect(String),
}
