//! Compiling policies into an immutable [`Snapshot`] and evaluating requests against it.
//!
//! Evaluation order is the contract the reference evaluator repeats: candidates are sorted by
//! priority (highest first), then DENY before ALLOW, then id; within a policy the checks run
//! type, action, resource, roles, time, metadata (keys in sorted order, operators as
//! written) and stop at the first that fails. The first match decides; an evaluation error
//! anywhere among the candidates makes the decision DENY (fail closed).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use smallvec::SmallVec;

use crate::glob::Glob;
use crate::model::{Effect, MetaCondition, PolicySpec, PolicyType, TimeWindow};
use crate::request::{ConditionError, Request, lookup};

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// The database, at this version.
    Database {
        /// The policy's current version.
        version: i64,
    },
    /// A file in the policy folder.
    File {
        /// The file, relative to the folder.
        path: String,
    },
    /// Built into Aegis (tests, demos).
    Builtin,
}

/// A policy with its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Unique among the policies compiled together.
    pub id: String,
    /// The policy.
    pub spec: PolicySpec,
    /// Where it came from.
    pub origin: Origin,
}

/// What a decision reports about a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    /// The policy's id.
    pub id: String,
    /// The policy's name.
    pub name: String,
    /// Its priority.
    pub priority: i32,
    /// Its effect.
    pub effect: Effect,
    /// Where it came from.
    pub origin: Origin,
    /// Whether its ALLOW waits for an approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<crate::model::ApprovalRule>,
}

/// Compiling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Two policies share an id.
    #[error("two policies have the id `{0}`")]
    DuplicateId(String),
    /// More policies than the index can address.
    #[error("too many policies: {0} (at most {max})", max = u32::MAX)]
    TooMany(usize),
}

struct Compiled {
    info: PolicyInfo,
    actions: Box<[Glob]>,
    resources: Box<[Glob]>,
    roles: Box<[Box<str>]>,
    time: Option<TimeWindow>,
    metadata: Box<[(Box<str>, MetaCondition)]>,
}

/// Why a condition failed to evaluate: which policy, which metadata key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EvalFault {
    policy: u32,
    key: u32,
    error: ConditionError,
}

impl Compiled {
    /// Roles, time and metadata; `Err` on an evaluation error.
    #[inline]
    fn conditions_hold(
        &self,
        req: &Request,
        at: DateTime<Utc>,
    ) -> Result<bool, (u32, ConditionError)> {
        if !self.roles.is_empty() && !self.roles.iter().any(|r| req.context.has_role(r)) {
            return Ok(false);
        }
        if let Some(window) = &self.time
            && !window.contains(at)
        {
            return Ok(false);
        }
        for (i, (key, condition)) in self.metadata.iter().enumerate() {
            match condition.holds(lookup(&req.context.metadata, key)) {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => return Err((i as u32, e)),
            }
        }
        Ok(true)
    }
}

#[derive(Default)]
struct TypeIndex {
    /// Policies naming the action literally, in evaluation order.
    by_action: HashMap<Box<str>, Box<[u32]>>,
    /// Policies with at least one wildcard action pattern, in evaluation order.
    wildcard: Box<[u32]>,
}

/// An immutable, compiled policy set. Cheap to share; never changes once built.
pub struct Snapshot {
    policies: Box<[Compiled]>,
    index: [TypeIndex; 2],
    generation: u64,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("policies", &self.policies.len())
            .field("generation", &self.generation)
            .finish()
    }
}

/// The order in which policies are considered: priority high to low, DENY first, then id.
fn order_key(p: &Policy) -> (std::cmp::Reverse<i32>, u8, &str) {
    let effect = match p.spec.effect {
        Effect::Deny => 0,
        Effect::Allow => 1,
    };
    (std::cmp::Reverse(p.spec.priority), effect, p.id.as_str())
}

impl Snapshot {
    /// A snapshot with no policies: every request is denied.
    pub fn empty() -> Self {
        Self {
            policies: Box::new([]),
            index: Default::default(),
            generation: 0,
        }
    }

    /// Compiles `policies` (disabled ones are left out) into a snapshot.
    pub fn compile(policies: &[Policy], generation: u64) -> Result<Self, CompileError> {
        let mut seen = HashSet::new();
        for p in policies {
            if !seen.insert(p.id.as_str()) {
                return Err(CompileError::DuplicateId(p.id.clone()));
            }
        }
        if policies.len() > u32::MAX as usize {
            return Err(CompileError::TooMany(policies.len()));
        }
        let mut enabled: Vec<&Policy> = policies.iter().filter(|p| p.spec.enabled).collect();
        enabled.sort_by(|a, b| order_key(a).cmp(&order_key(b)));

        let compiled: Vec<Compiled> = enabled
            .iter()
            .map(|p| Compiled {
                info: PolicyInfo {
                    id: p.id.clone(),
                    name: p.spec.name.clone(),
                    priority: p.spec.priority,
                    effect: p.spec.effect,
                    origin: p.origin.clone(),
                    require_approval: p.spec.require_approval,
                },
                actions: p
                    .spec
                    .actions
                    .patterns()
                    .iter()
                    .map(|a| Glob::new(a.as_str()))
                    .collect(),
                resources: p
                    .spec
                    .resources
                    .iter()
                    .map(|r| Glob::new(r.as_str()))
                    .collect(),
                roles: p
                    .spec
                    .conditions
                    .roles
                    .iter()
                    .map(|r| r.as_str().into())
                    .collect(),
                time: p.spec.conditions.time.clone(),
                metadata: p
                    .spec
                    .conditions
                    .metadata
                    .iter()
                    .map(|(k, c)| (k.as_str().into(), c.clone()))
                    .collect(),
            })
            .collect();

        let mut index: [TypeIndex; 2] = Default::default();
        for policy_type in PolicyType::ALL {
            let mut by_action: HashMap<Box<str>, Vec<u32>> = HashMap::new();
            let mut wildcard = Vec::new();
            for (i, p) in enabled.iter().enumerate() {
                if p.spec.policy_type != policy_type {
                    continue;
                }
                let i = i as u32;
                for a in p.spec.actions.patterns() {
                    if a.is_literal() {
                        let list = by_action.entry(a.as_str().into()).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    } else if wildcard.last() != Some(&i) {
                        wildcard.push(i);
                    }
                }
            }
            index[policy_type.index()] = TypeIndex {
                by_action: by_action.into_iter().map(|(k, v)| (k, v.into())).collect(),
                wildcard: wildcard.into(),
            };
        }
        Ok(Self {
            policies: compiled.into(),
            index,
            generation,
        })
    }

    /// How many (enabled) policies the snapshot holds.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// True when the snapshot holds no policy.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The number the snapshot was compiled with; higher is newer.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The compiled policies, in evaluation order.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyInfo> {
        self.policies.iter().map(|p| &p.info)
    }

    /// Decides `req` at time `at`. With `emergency_stop`, a self-healing ALLOW becomes DENY.
    ///
    /// Lock-free and I/O-free; allocates only when more than eight policies match.
    pub fn evaluate(
        self: &Arc<Self>,
        req: &Request,
        at: DateTime<Utc>,
        emergency_stop: bool,
    ) -> Decision {
        let started = Instant::now();
        let index = &self.index[req.policy_type.index()];
        let literal: &[u32] = index.by_action.get(req.action.as_str()).map_or(&[], |l| l);
        let wildcard: &[u32] = &index.wildcard;

        let mut matched: SmallVec<[u32; 8]> = SmallVec::new();
        let mut fault: Option<EvalFault> = None;
        // Merge the two sorted candidate lists; a policy in both is visited once.
        let (mut l, mut w) = (0, 0);
        loop {
            let (i, check_action) = match (literal.get(l), wildcard.get(w)) {
                (Some(&a), Some(&b)) if a == b => {
                    l += 1;
                    w += 1;
                    (a, false)
                }
                (Some(&a), Some(&b)) if a < b => {
                    l += 1;
                    (a, false)
                }
                (_, Some(&b)) => {
                    w += 1;
                    (b, true)
                }
                (Some(&a), None) => {
                    l += 1;
                    (a, false)
                }
                (None, None) => break,
            };
            let p = &self.policies[i as usize];
            if check_action && !p.actions.iter().any(|g| g.matches(&req.action)) {
                continue;
            }
            if !p.resources.iter().any(|g| g.matches(&req.resource)) {
                continue;
            }
            match p.conditions_hold(req, at) {
                Ok(true) => matched.push(i),
                Ok(false) => {}
                Err((key, error)) => {
                    if fault.is_none() {
                        fault = Some(EvalFault {
                            policy: i,
                            key,
                            error,
                        });
                    }
                }
            }
        }

        let outcome = match (fault, matched.first()) {
            (Some(f), _) => Outcome::Error(f),
            (None, None) => Outcome::NoMatch,
            (None, Some(&first)) => match self.policies[first as usize].info.effect {
                Effect::Deny => Outcome::Denied(first),
                Effect::Allow if emergency_stop && req.policy_type == PolicyType::SelfHealing => {
                    Outcome::EmergencyStop(first)
                }
                Effect::Allow => Outcome::Allowed(first),
            },
        };
        Decision {
            snapshot: Arc::clone(self),
            policy_type: req.policy_type,
            outcome,
            matched,
            elapsed: started.elapsed(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed(u32),
    Denied(u32),
    NoMatch,
    EmergencyStop(u32),
    Error(EvalFault),
}

/// Why a decision came out the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// An ALLOW policy decided.
    Allowed,
    /// A DENY policy decided.
    Denied,
    /// No policy matched: default deny.
    NoMatch,
    /// An ALLOW was overruled by the emergency stop.
    EmergencyStop,
    /// A condition could not be evaluated: fail closed.
    Error,
}

/// The answer to a [`Request`]: a value that explains itself.
#[derive(Clone)]
pub struct Decision {
    snapshot: Arc<Snapshot>,
    policy_type: PolicyType,
    outcome: Outcome,
    matched: SmallVec<[u32; 8]>,
    elapsed: Duration,
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("decision", &self.decision())
            .field("reason", &self.reason())
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

impl Decision {
    /// True when the request may proceed.
    pub fn allowed(&self) -> bool {
        matches!(self.outcome, Outcome::Allowed(_))
    }

    /// `ALLOW` or `DENY`.
    pub fn decision(&self) -> &'static str {
        if self.allowed() { "ALLOW" } else { "DENY" }
    }

    /// Whether this ALLOW must wait for a person's approval: the deciding policy asks for
    /// one and its rule applies to `req` (see [`crate::ApprovalRule`]).
    pub fn needs_approval(&self, req: &Request) -> bool {
        match self.outcome {
            Outcome::Allowed(i) => self
                .info(i)
                .require_approval
                .is_some_and(|r| r.applies(&req.context.metadata)),
            _ => false,
        }
    }

    /// The policy type asked about.
    pub fn policy_type(&self) -> PolicyType {
        self.policy_type
    }

    /// Why, as a kind.
    pub fn kind(&self) -> DecisionKind {
        match self.outcome {
            Outcome::Allowed(_) => DecisionKind::Allowed,
            Outcome::Denied(_) => DecisionKind::Denied,
            Outcome::NoMatch => DecisionKind::NoMatch,
            Outcome::EmergencyStop(_) => DecisionKind::EmergencyStop,
            Outcome::Error(_) => DecisionKind::Error,
        }
    }

    fn info(&self, i: u32) -> &PolicyInfo {
        &self.snapshot.policies[i as usize].info
    }

    /// The deciding policy: the ALLOW or DENY that decided, the ALLOW the emergency stop
    /// overruled, or the policy whose condition failed to evaluate.
    pub fn policy(&self) -> Option<&PolicyInfo> {
        match self.outcome {
            Outcome::Allowed(i) | Outcome::Denied(i) | Outcome::EmergencyStop(i) => {
                Some(self.info(i))
            }
            Outcome::Error(f) => Some(self.info(f.policy)),
            Outcome::NoMatch => None,
        }
    }

    /// Every policy that matched, in evaluation order.
    pub fn matching(&self) -> impl Iterator<Item = &PolicyInfo> {
        self.matched.iter().map(|&i| self.info(i))
    }

    /// How long evaluation took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The generation of the snapshot that decided.
    pub fn generation(&self) -> u64 {
        self.snapshot.generation
    }

    /// Why, in words.
    pub fn reason(&self) -> String {
        match self.outcome {
            Outcome::Allowed(i) => {
                let p = self.info(i);
                format!("allowed by policy `{}` (priority {})", p.name, p.priority)
            }
            Outcome::Denied(i) => {
                let p = self.info(i);
                format!("denied by policy `{}` (priority {})", p.name, p.priority)
            }
            Outcome::NoMatch => "no policy matched; denied by default".to_owned(),
            Outcome::EmergencyStop(i) => format!(
                "emergency stop is active: self-healing actions are denied (policy `{}` would allow)",
                self.info(i).name
            ),
            Outcome::Error(f) => {
                let p = &self.snapshot.policies[f.policy as usize];
                let key = p.metadata.get(f.key as usize).map_or("?", |(k, _)| k);
                let what = match f.error {
                    ConditionError::NotANumber => "is not a number",
                };
                format!(
                    "policy `{}` could not be evaluated: metadata `{key}` {what}; denied (fail closed)",
                    p.info.name
                )
            }
        }
    }
}
