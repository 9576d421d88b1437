//! The reference evaluator: the decision rule of CONTRACT.md written as plainly as possible,
//! a loop over every policy with no index, no precompiled globs and no early exit. The
//! compiled [`Snapshot`](crate::Snapshot) must agree with it on every input; property tests
//! check that.

use chrono::{DateTime, Utc};

use crate::glob::glob_match_reference;
use crate::model::{Effect, PolicyType};
use crate::request::{Request, lookup};
use crate::snapshot::{DecisionKind, Policy};

/// What the reference evaluator decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceDecision {
    /// Why.
    pub kind: DecisionKind,
    /// The deciding (or failing) policy's id.
    pub policy_id: Option<String>,
    /// Every matching policy's id, in evaluation order.
    pub matching: Vec<String>,
}

enum Verdict {
    Match,
    NoMatch,
    Error,
}

fn verdict(policy: &Policy, req: &Request, at: DateTime<Utc>) -> Verdict {
    let spec = &policy.spec;
    let applies = spec.enabled
        && spec.policy_type == req.policy_type
        && spec
            .actions
            .patterns()
            .iter()
            .any(|a| glob_match_reference(a.as_str(), &req.action))
        && spec
            .resources
            .iter()
            .any(|r| glob_match_reference(r.as_str(), &req.resource));
    if !applies {
        return Verdict::NoMatch;
    }
    let c = &spec.conditions;
    if !c.roles.is_empty() && !c.roles.iter().any(|r| req.context.has_role(r)) {
        return Verdict::NoMatch;
    }
    if let Some(window) = &c.time
        && !window.contains(at)
    {
        return Verdict::NoMatch;
    }
    for (key, condition) in &c.metadata {
        match condition.holds(lookup(&req.context.metadata, key)) {
            Ok(true) => {}
            Ok(false) => return Verdict::NoMatch,
            Err(_) => return Verdict::Error,
        }
    }
    Verdict::Match
}

/// Decides `req` by looking at every policy.
pub fn evaluate(
    policies: &[Policy],
    req: &Request,
    at: DateTime<Utc>,
    emergency_stop: bool,
) -> ReferenceDecision {
    let rank = |p: &Policy| {
        (
            std::cmp::Reverse(p.spec.priority),
            p.spec.effect == Effect::Allow,
            p.id.clone(),
        )
    };
    let mut matches: Vec<&Policy> = Vec::new();
    let mut errors: Vec<&Policy> = Vec::new();
    for policy in policies {
        match verdict(policy, req, at) {
            Verdict::Match => matches.push(policy),
            Verdict::Error => errors.push(policy),
            Verdict::NoMatch => {}
        }
    }
    matches.sort_by_key(|p| rank(p));
    errors.sort_by_key(|p| rank(p));
    let matching = matches.iter().map(|p| p.id.clone()).collect();

    if let Some(failed) = errors.first() {
        return ReferenceDecision {
            kind: DecisionKind::Error,
            policy_id: Some(failed.id.clone()),
            matching,
        };
    }
    let Some(top) = matches.first() else {
        return ReferenceDecision {
            kind: DecisionKind::NoMatch,
            policy_id: None,
            matching,
        };
    };
    // At the highest matching priority, any DENY wins.
    let top_priority = top.spec.priority;
    let deny_at_top = matches
        .iter()
        .any(|p| p.spec.priority == top_priority && p.spec.effect == Effect::Deny);
    let kind = if deny_at_top {
        DecisionKind::Denied
    } else if emergency_stop && req.policy_type == PolicyType::SelfHealing {
        DecisionKind::EmergencyStop
    } else {
        DecisionKind::Allowed
    };
    ReferenceDecision {
        kind,
        policy_id: Some(top.id.clone()),
        matching,
    }
}
