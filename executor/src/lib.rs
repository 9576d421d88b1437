//! Aegis executor: remediations exactly as kubectl performs them, through the `kube` client,
//! or a dry run that says what it would have done.
//!
//! - [`ActionRequest`]: the signed body of `POST /executor/execute`, validated strictly.
//! - [`signature`]: `X-Aegis-Signature`, HMAC-SHA256 of the exact body bytes.
//! - [`Executor`]: `restart_pod` (`kubectl rollout restart`, or deleting a controller-owned
//!   pod), `scale_deployment` (scale subresource within [`ScaleLimits`]) and
//!   `rollback_deployment` (`kubectl rollout undo`), each ending in an [`Outcome`].
//!
//! - [`Error`]: what can go wrong before an action reaches the cluster.
//!
//! This crate only talks to the cluster; the guards in front of it (allowlist, policy,
//! rate, cooldown, blast radius) and the audit around it are `aegis-runtime`'s.

mod cluster;
mod error;
mod request;
pub mod signature;
#[cfg(feature = "testing")]
pub mod testing;

pub use cluster::{Executor, Outcome, ScaleLimits, Status};
pub use error::Error;
pub use request::{Action, ActionRequest, InvalidRequest, Params, TargetKind, namespace_allowed};
