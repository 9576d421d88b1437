//! "Why not": for one request, every policy that could have applied (same type, an action
//! pattern that matches) and what it did — decided, matched but was outranked, or the first
//! of its conditions that failed, in words an operator can act on.
//!
//! Works on the policies as written (the same ones the snapshot was compiled from) with the
//! reference glob matcher, so it is independent of the compiled index; it is meant for
//! decision records and what-if questions, not the hot path.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::glob::glob_match_reference;
use crate::model::{Effect, MetaCondition, TimeWindow};
use crate::request::{Request, lookup};
use crate::snapshot::{Decision, Policy};

/// What one candidate policy did with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It decided.
    Decided,
    /// It matched, but a policy ahead of it decided.
    Outranked,
    /// One of its conditions did not hold (or could not be evaluated).
    NotMatched,
}

/// One candidate policy and why it did or did not decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The policy's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `ALLOW` or `DENY`.
    pub effect: String,
    /// Its priority.
    pub priority: i32,
    /// What it did.
    pub verdict: Verdict,
    /// Why, in words: the failed condition, or who decided first.
    pub reason: String,
}

/// Every candidate policy for `req` at `at`, deciding one first, then in evaluation order
/// (priority, DENY before ALLOW, id). `decision` is the engine's answer for the same request.
pub fn explain(
    policies: &[Policy],
    req: &Request,
    at: DateTime<Utc>,
    decision: &Decision,
) -> Vec<Candidate> {
    let deciding = decision.policy().map(|p| (p.id.clone(), p.name.clone()));
    let mut candidates: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.spec.policy_type == req.policy_type)
        .filter(|p| {
            p.spec
                .actions
                .patterns()
                .iter()
                .any(|a| glob_match_reference(a.as_str(), &req.action))
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.spec
            .priority
            .cmp(&a.spec.priority)
            .then((a.spec.effect == Effect::Allow).cmp(&(b.spec.effect == Effect::Allow)))
            .then(a.id.cmp(&b.id))
    });
    let mut out: Vec<Candidate> = candidates
        .into_iter()
        .map(|p| {
            let failed = first_failure(p, req, at);
            let decided = deciding.as_ref().is_some_and(|(id, _)| *id == p.id);
            let (verdict, reason) = match (decided, failed) {
                (true, _) => (Verdict::Decided, decision.reason()),
                (false, Some(why)) => (Verdict::NotMatched, why),
                (false, None) => (
                    Verdict::Outranked,
                    match &deciding {
                        Some((_, name)) => format!("matched, but `{name}` decided first"),
                        None => "matched, but the decision was made otherwise".to_owned(),
                    },
                ),
            };
            Candidate {
                id: p.id.clone(),
                name: p.spec.name.clone(),
                effect: p.spec.effect.as_decision().to_owned(),
                priority: p.spec.priority,
                verdict,
                reason,
            }
        })
        .collect();
    out.sort_by_key(|c| c.verdict != Verdict::Decided);
    out
}

/// The first condition of `p` that keeps it from matching `req`, in words; `None` when it
/// matches.
fn first_failure(p: &Policy, req: &Request, at: DateTime<Utc>) -> Option<String> {
    let spec = &p.spec;
    if !spec.enabled {
        return Some("the policy is disabled".to_owned());
    }
    if !spec
        .resources
        .iter()
        .any(|r| glob_match_reference(r.as_str(), &req.resource))
    {
        let patterns: Vec<&str> = spec.resources.iter().map(|r| r.as_str()).collect();
        return Some(format!(
            "resource `{}` matches none of {}",
            req.resource,
            list(&patterns)
        ));
    }
    let c = &spec.conditions;
    if !c.roles.is_empty() && !c.roles.iter().any(|r| req.context.has_role(r)) {
        let mut has: Vec<&str> = req.context.roles.iter().map(String::as_str).collect();
        has.extend(req.context.role.as_deref());
        let needs: Vec<&str> = c.roles.iter().map(String::as_str).collect();
        return Some(format!(
            "needs one of the roles {}; the caller has {}",
            list(&needs),
            if has.is_empty() {
                "none".to_owned()
            } else {
                list(&has)
            }
        ));
    }
    if let Some(window) = &c.time
        && !window.contains(at)
    {
        return Some(format!(
            "applies only {}; it was {}",
            describe_window(window),
            describe_instant(window, at)
        ));
    }
    for (key, condition) in &c.metadata {
        let value = lookup(&req.context.metadata, key);
        match condition.holds(value) {
            Ok(true) => {}
            Ok(false) => {
                return Some(format!(
                    "metadata `{key}` is {}, which does not satisfy {}",
                    value.map_or_else(|| "absent".to_owned(), Value::to_string),
                    describe_condition(condition)
                ));
            }
            Err(_) => {
                return Some(format!(
                    "metadata `{key}` is {}, which {} cannot compare (the whole decision \
                     fails closed)",
                    value.map_or_else(|| "absent".to_owned(), Value::to_string),
                    describe_condition(condition)
                ));
            }
        }
    }
    None
}

fn list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn describe_condition(c: &MetaCondition) -> String {
    Value::from(c.clone()).to_string()
}

fn describe_window(w: &TimeWindow) -> String {
    let days = if w.days.is_empty() {
        "every day".to_owned()
    } else {
        w.days
            .iter()
            .map(|d| day_name(d.index()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{days} {}–{} {}",
        String::from(w.start),
        String::from(w.end),
        w.timezone.0.name()
    )
}

fn describe_instant(w: &TimeWindow, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&w.timezone.0);
    format!(
        "{} {:02}:{:02} there",
        day_name(local.weekday().num_days_from_monday() as u8),
        local.hour(),
        local.minute()
    )
}

fn day_name(i: u8) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .get(i as usize)
        .copied()
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::model::PolicySpec;
    use crate::snapshot::{Origin, Snapshot};

    #[test]
    fn each_candidate_says_what_it_did() {
        let specs = crate::files::parse_items::<PolicySpec>(
            Path::new("p.yaml"),
            r#"
- name: Allow Auto-Scale
  type: self_healing
  effect: allow
  priority: 50
  actions: [scale_up]
  conditions: {roles: [service], metadata: {severity: {in: [high, critical]}}}
- name: Deny Peak
  type: self_healing
  effect: deny
  priority: 100
  actions: [scale_up, restart_pod]
  conditions:
    time: {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00", timezone: Europe/Berlin}
- name: Staging Only
  type: self_healing
  effect: allow
  priority: 60
  actions: ["*"]
  resources: ["cluster:staging/*"]
- name: Admins
  type: self_healing
  effect: allow
  priority: 40
  actions: [scale_up]
  conditions: {roles: [admin]}
- name: Backstop
  type: self_healing
  effect: allow
  priority: 10
  actions: [scale_up]
- name: Other Action
  type: self_healing
  effect: allow
  actions: [rollback_deployment]
"#,
            "policies",
        )
        .unwrap();
        let policies: Vec<Policy> = specs
            .into_iter()
            .map(|spec| Policy {
                id: format!("t#{}", spec.name),
                spec,
                origin: Origin::Builtin,
            })
            .collect();
        let snapshot = Arc::new(Snapshot::compile(&policies, 1).unwrap());
        let req: Request = serde_json::from_value(json!({
            "action": "scale_up", "resource": "cluster:production/deployment/api",
            "type": "self_healing",
            "context": {"roles": ["service"], "metadata": {"severity": "medium"}}
        }))
        .unwrap();
        // Saturday 12:00 UTC: the peak window is closed.
        let at = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let decision = snapshot.evaluate(&req, at, false);
        let out = explain(&policies, &req, at, &decision);
        assert_eq!(out[0].name, "Backstop");
        assert_eq!(out[0].verdict, Verdict::Decided);
        assert!(out[0].reason.contains("allowed by policy `Backstop`"));
        assert_eq!(
            by_name_in(&out, "Allow Auto-Scale").reason,
            r#"metadata `severity` is "medium", which does not satisfy {"in":["high","critical"]}"#
        );
        assert_eq!(
            by_name_in(&out, "Deny Peak").reason,
            "applies only mon, tue, wed, thu, fri 09:00–17:00 Europe/Berlin; it was sat 13:00 there"
        );
        assert_eq!(
            by_name_in(&out, "Staging Only").reason,
            "resource `cluster:production/deployment/api` matches none of [`cluster:staging/*`]"
        );
        assert_eq!(
            by_name_in(&out, "Admins").reason,
            "needs one of the roles [`admin`]; the caller has [`service`]"
        );
        // A policy about another action is no candidate.
        assert!(out.iter().all(|c| c.name != "Other Action"));
        assert_eq!(out.len(), 5);

        // With a severe detection, Auto-Scale decides and Backstop is outranked.
        let mut severe = req.clone();
        severe
            .context
            .metadata
            .insert("severity".into(), json!("high"));
        let decision = snapshot.evaluate(&severe, at, false);
        let out = explain(&policies, &severe, at, &decision);
        assert_eq!(out[0].name, "Allow Auto-Scale");
        assert_eq!(by_name_in(&out, "Backstop").verdict, Verdict::Outranked);
        assert_eq!(
            by_name_in(&out, "Backstop").reason,
            "matched, but `Allow Auto-Scale` decided first"
        );
    }

    fn by_name_in<'a>(out: &'a [Candidate], n: &str) -> &'a Candidate {
        out.iter().find(|c| c.name == n).unwrap()
    }
}
