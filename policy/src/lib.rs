//! Aegis policy engine: decides every self-healing action and every protected API call.
//!
//! - [`PolicySpec`]: a policy as written (CONTRACT.md "Policy"), validated while it is read.
//! - [`Snapshot`]: policies compiled into an immutable, indexed form; [`Snapshot::evaluate`]
//!   never locks, never does I/O and allocates only when more than eight policies match.
//! - [`PolicyEngine`]: the snapshot in force behind an atomic pointer, swapped on change, and
//!   the emergency stop.
//! - [`Decision`]: the answer as a value: allowed, decision, reason, the deciding policy,
//!   every matching policy, and how long evaluation took.
//! - [`files`]: reading YAML/JSON policy folders with `file:line:column` diagnostics;
//!   [`check`]: static warnings; [`testing`]: `opa test`-style test cases.
//! - [`reference`]: the decision rule as a plain loop, which the compiled evaluator must
//!   agree with (property tests).
//!
//! Rule: among enabled policies whose type, action, resource and conditions match, the
//! highest priority with a match decides; there, DENY overrides ALLOW; no match is DENY; an
//! evaluation error is DENY. The crate does no I/O beyond reading policy files on request.

pub mod check;
mod defaults;
mod engine;
pub mod explain;
pub mod files;
mod glob;
pub mod invariants;
mod model;
pub mod reference;
mod request;
mod snapshot;
pub mod testing;
#[cfg(test)]
mod tests;

pub use defaults::{DEFAULT_POLICIES_YAML, DEFAULT_POLICY_TESTS_YAML, default_policies};
pub use engine::PolicyEngine;
pub use files::{Diagnostic, Level, PolicySet, load_policies};
pub use glob::glob_match_reference;
pub use model::{
    Actions, ApprovalRule, Conditions, Day, Effect, MatchRegex, MetaCondition, OPERATORS, Op,
    Pattern, PolicySpec, PolicyType, Scalar, SeverityLevel, TimeOfDay, TimeWindow, Timezone,
};
pub use request::{ConditionError, Context, Request};
pub use snapshot::{CompileError, Decision, DecisionKind, Origin, Policy, PolicyInfo, Snapshot};
