//! Static checks over a policy set: warnings about policies that can never decide.

use crate::glob::Glob;
use crate::model::Effect;
use crate::snapshot::Policy;

/// A policy that can never decide, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadowed<'a> {
    /// The policy that never decides.
    pub policy: &'a Policy,
    /// The policy that always decides first.
    pub by: &'a Policy,
    /// The warning, in words.
    pub message: String,
}

/// True when `a` is considered before `b` and would win over it: higher priority, or the
/// same priority with DENY over ALLOW.
fn wins_over(a: &Policy, b: &Policy) -> bool {
    a.spec.priority > b.spec.priority
        || (a.spec.priority == b.spec.priority
            && a.spec.effect == Effect::Deny
            && b.spec.effect == Effect::Allow)
}

fn covers(outer: &[Glob], inner: &[Glob]) -> bool {
    inner.iter().all(|i| outer.iter().any(|o| i.covered_by(o)))
}

/// Enabled policies that can never decide because an unconditional policy of the same type
/// that wins over them matches every action and resource they match.
pub fn shadowed(policies: &[Policy]) -> Vec<Shadowed<'_>> {
    let globs = |p: &Policy| {
        (
            p.spec
                .actions
                .patterns()
                .iter()
                .map(|a| Glob::new(a.as_str()))
                .collect::<Vec<_>>(),
            p.spec
                .resources
                .iter()
                .map(|r| Glob::new(r.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let compiled: Vec<_> = policies.iter().map(globs).collect();
    let dominant: Vec<usize> = (0..policies.len())
        .filter(|&i| policies[i].spec.enabled && policies[i].spec.is_unconditional())
        .collect();
    let mut found = Vec::new();
    for (j, b) in policies.iter().enumerate() {
        if !b.spec.enabled {
            continue;
        }
        let by = dominant.iter().find(|&&i| {
            let a = &policies[i];
            i != j
                && a.spec.policy_type == b.spec.policy_type
                && wins_over(a, b)
                && covers(&compiled[i].0, &compiled[j].0)
                && covers(&compiled[i].1, &compiled[j].1)
        });
        if let Some(&i) = by {
            let a = &policies[i];
            found.push(Shadowed {
                policy: b,
                by: a,
                message: format!(
                    "policy `{}` (priority {}) can never decide: `{}` (priority {}, {}) has no \
                     conditions and matches every action and resource it does",
                    b.spec.name,
                    b.spec.priority,
                    a.spec.name,
                    a.spec.priority,
                    a.spec.effect.as_str()
                ),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::PolicySpec;
    use crate::snapshot::Origin;

    fn policy(id: &str, v: serde_json::Value) -> Policy {
        Policy {
            id: id.into(),
            spec: PolicySpec::from_json(v).unwrap(),
            origin: Origin::Builtin,
        }
    }

    #[test]
    fn warns_about_shadowed_policies_only() {
        let set = vec![
            policy(
                "deny-all",
                json!({"name": "deny all deletes", "type": "api_access", "effect": "deny",
                "priority": 100, "actions": ["delete_*"]}),
            ),
            policy(
                "allow",
                json!({"name": "allow delete user", "type": "api_access", "effect": "allow",
                "priority": 10, "actions": ["delete_user"], "resources": ["users:*"]}),
            ),
            policy(
                "other-type",
                json!({"name": "self healing delete", "type": "self_healing", "effect": "allow",
                "priority": 10, "actions": ["delete_user"]}),
            ),
            policy(
                "conditional",
                json!({"name": "cond", "type": "api_access", "effect": "deny",
                "priority": 200, "actions": ["*"], "conditions": {"roles": ["user"]}}),
            ),
            policy(
                "higher",
                json!({"name": "higher", "type": "api_access", "effect": "allow",
                "priority": 150, "actions": ["delete_pod"]}),
            ),
        ];
        let found = shadowed(&set);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].policy.id, "allow");
        assert_eq!(found[0].by.id, "deny-all");
        assert!(found[0].message.contains("can never decide"));
    }
}
