//! Aegis runtime: what runs between the stages and the HTTP layer.
//!
//! - [`healing`]: the self-healing loop — tick, score, decide, act, record, verify,
//!   leader hand-off, model lifecycle, stats ([`healing::HealingLoop`]).
//! - [`notify`]: notifications out — events read from the audit trails, queued in an
//!   outbox, delivered to Alertmanager and a signed webhook ([`notify::Notifier`]).
//! - [`guards`]: the executor behind its guards ([`guards::ExecutorService`]): namespace
//!   allowlist, policy, breaker, approvals, rate, cooldown, blast radius, intent and result
//!   rows. A refusal is a typed [`Refusal`], never an HTTP error.
//! - [`policy_service`]: the policy engine with its sources (database, folder, shadow set)
//!   and the decision audit ([`PolicyService`]).
//! - [`detector_service`]: the fitted detectors behind the detection endpoints and the loop.
//! - [`ratelimit`]: budgets per caller, login IP and action (in memory or Redis).
//! - [`tables`]: the rows behind SQL's tables ([`tables::Tables`]).
//! - [`telemetry`]: trace context on spans.
//! - [`error`]: [`Refusal`] and [`Error`].
//!
//! The API crate maps HTTP to calls of these and back; the binary builds them.

pub mod detector_service;
pub mod error;
pub mod guards;
pub mod healing;
pub mod notify;
pub mod policy_service;
pub mod ratelimit;
pub mod tables;
pub mod telemetry;
pub mod throttle;

pub use error::{Error, Refusal, RefusalKind};
pub use policy_service::{Asker, POLICY_DIR_POLL, PolicyHealth, PolicyService};

/// Who is asking, as authenticated: an id and roles (a user, a service token, the engine).
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The user id or service token id.
    pub id: &'a str,
    /// The caller's roles.
    pub roles: &'a [String],
}
