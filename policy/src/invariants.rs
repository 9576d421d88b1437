//! Guard-rail invariants: "no request of this shape is ever allowed", proved over every
//! possible request by reasoning over the policies' conditions, not by sampling.
//!
//! A request is allowed only when an ALLOW policy `A` matches it and no DENY policy of at
//! least `A`'s priority does (DENY wins ties; an evaluation error denies). So for each
//! enabled ALLOW policy the prover looks for a request that matches `A` and the invariant's
//! scope while escaping every such DENY — for each DENY it picks one of its conditions to
//! falsify (action, resource, roles, time, one metadata key) and backtracks when the
//! choices cannot all hold at once. Each dimension is decided exactly over finitely many
//! classes of values:
//!
//! - actions and resources: the product automaton of every glob in play, explored
//!   breadth-first, yields one shortest string for each combination of globs a string
//!   can match;
//! - roles: one role (from a role list, or one no policy names), or two when the ALLOW
//!   policy and the scope each need their own;
//! - time: every minute of four reference weeks (winter, summer and the two spells where
//!   American and European clocks are an hour apart), grouped by which windows hold;
//! - metadata, per key: absent, every literal the conditions name, every numeric
//!   threshold with the points between and beyond them, and a string no policy names.
//!
//! A candidate is confirmed by the real evaluator ([`Snapshot::evaluate`]) before it is
//! reported, so a reported request is a true counter-example. When a `matches` (regex)
//! condition would have to hold and no candidate value satisfies it, the answer is
//! [`Verdict::Undecided`]: the prover never claims a proof it does not have.
//!
//! Long because the proof procedure (scopes, request shapes, the search for a counterexample)
//! only reads as a whole; its parts have no use apart.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{Conditions, Effect, MetaCondition, Op, Pattern, PolicyType, Scalar};
use crate::request::{Context, Request};
use crate::snapshot::{Policy, Snapshot};

/// Product-automaton states explored per dimension before giving up (undecided).
const MAX_STATES: usize = 50_000;
/// Search nodes per ALLOW policy before giving up (undecided).
const MAX_NODES: usize = 200_000;
const FRESH_ROLE: &str = "aegis-prover-other-role";
const FRESH_VALUE: &str = "aegis-prover-other-value";

/// A guard rail: no request in `never_allow` may be allowed by any policy set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invariant {
    /// A unique, human-readable name.
    pub name: String,
    /// What it protects, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The requests that must never be allowed.
    pub never_allow: Scope,
}

/// A set of requests, written like a policy's match part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// `self_healing` or `api_access`.
    #[serde(rename = "type", alias = "policy_type")]
    pub policy_type: PolicyType,
    /// Action patterns; every action when left out.
    #[serde(default = "any")]
    pub actions: Vec<Pattern>,
    /// Resource patterns; every resource when left out.
    #[serde(default = "any")]
    pub resources: Vec<Pattern>,
    /// Narrower still: callers with one of these roles, a time window, metadata.
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
}

fn any() -> Vec<Pattern> {
    vec![Pattern::any()]
}

/// The outcome of proving one invariant.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No request in the scope is allowed.
    Holds,
    /// `request`, evaluated at `at`, is in the scope and allowed by `policy`.
    Broken {
        /// The deciding ALLOW policy's id.
        policy: String,
        /// Its name.
        name: String,
        /// A request that breaks the invariant.
        request: Box<Request>,
        /// When it is allowed.
        at: DateTime<Utc>,
    },
    /// The prover could not decide for `policy` (see `reason`); treat as broken.
    Undecided {
        /// The ALLOW policy that could not be decided.
        policy: String,
        /// Why.
        reason: String,
    },
}

/// Proves `invariant` over `policies` (all of them, enabled or not, as they would be
/// compiled together).
pub fn prove(invariant: &Invariant, policies: &[Policy]) -> Verdict {
    let scope = &invariant.never_allow;
    let snapshot = match Snapshot::compile(policies, 0) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            return Verdict::Undecided {
                policy: String::new(),
                reason: format!("the policies do not compile: {e}"),
            };
        }
    };
    let relevant: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.spec.enabled && p.spec.policy_type == scope.policy_type)
        .collect();
    let world = match World::new(scope, &relevant) {
        Ok(w) => w,
        Err(reason) => {
            return Verdict::Undecided {
                policy: String::new(),
                reason,
            };
        }
    };
    let mut allows: Vec<usize> = (0..relevant.len())
        .filter(|i| relevant[*i].spec.effect == Effect::Allow)
        .collect();
    allows.sort_by_key(|i| std::cmp::Reverse(relevant[*i].spec.priority));
    for a in allows {
        let allow = relevant[a];
        let denies: Vec<usize> = (0..relevant.len())
            .filter(|d| {
                relevant[*d].spec.effect == Effect::Deny
                    && relevant[*d].spec.priority >= allow.spec.priority
            })
            .collect();
        let mut search = Search {
            world: &world,
            snapshot: &snapshot,
            policies: &relevant,
            scope,
            allow: a,
            denies,
            forbidden: Forbidden::default(),
            nodes: 0,
            regex_gap: false,
        };
        match search.run() {
            Found::Witness(request, at) => {
                let decision = snapshot.evaluate(&request, at, false);
                let (policy, name) = decision
                    .policy()
                    .map(|p| (p.id.clone(), p.name.clone()))
                    .unwrap_or_else(|| (allow.id.clone(), allow.spec.name.clone()));
                return Verdict::Broken {
                    policy,
                    name,
                    request,
                    at,
                };
            }
            Found::Nothing if search.regex_gap => {
                return Verdict::Undecided {
                    policy: allow.id.clone(),
                    reason: "a `matches` (regex) condition: the prover cannot enumerate the \
                             strings a regex accepts"
                        .to_owned(),
                };
            }
            Found::Nothing => {}
            Found::OutOfBudget => {
                return Verdict::Undecided {
                    policy: allow.id.clone(),
                    reason: format!(
                        "more than {MAX_NODES} combinations of deny conditions to consider"
                    ),
                };
            }
        }
    }
    Verdict::Holds
}

/// One string dimension (actions or resources): every combination of globs a string can
/// match, with a shortest such string.
#[derive(Debug)]
struct Strings {
    /// Per class, which of `patterns` match, and a witness.
    classes: Vec<(Vec<bool>, String)>,
    /// Pattern text → its index.
    index: HashMap<String, usize>,
}

impl Strings {
    fn new(patterns: BTreeSet<String>) -> Result<Self, String> {
        let patterns: Vec<String> = patterns.into_iter().collect();
        let tokens: Vec<Vec<Option<char>>> = patterns
            .iter()
            .map(|p| p.chars().map(|c| (c != '*').then_some(c)).collect())
            .collect();
        let mut alphabet: BTreeSet<char> = patterns.iter().flat_map(|p| p.chars()).collect();
        alphabet.remove(&'*');
        let fresh = ['x', 'q', 'z', '0', '_', '~']
            .into_iter()
            .find(|c| !alphabet.contains(c))
            .unwrap_or('\u{e000}');
        alphabet.insert(fresh);
        let closure = |t: &[Option<char>], set: &mut Vec<u16>| {
            let mut i = 0;
            while i < set.len() {
                let pos = set[i] as usize;
                if pos < t.len() && t[pos].is_none() && !set.contains(&(pos as u16 + 1)) {
                    set.push(pos as u16 + 1);
                }
                i += 1;
            }
            set.sort_unstable();
            set.dedup();
        };
        let start: Vec<Vec<u16>> = tokens
            .iter()
            .map(|t| {
                let mut s = vec![0u16];
                closure(t, &mut s);
                s
            })
            .collect();
        let accepts = |state: &[Vec<u16>]| -> Vec<bool> {
            state
                .iter()
                .zip(&tokens)
                .map(|(s, t)| s.contains(&(t.len() as u16)))
                .collect()
        };
        let mut classes: HashMap<Vec<bool>, String> = HashMap::new();
        let mut seen: HashSet<Vec<Vec<u16>>> = HashSet::new();
        let mut queue = VecDeque::from([(start, String::new())]);
        while let Some((state, word)) = queue.pop_front() {
            if !seen.insert(state.clone()) {
                continue;
            }
            if seen.len() > MAX_STATES {
                return Err(format!(
                    "more than {MAX_STATES} automaton states for {} patterns",
                    patterns.len()
                ));
            }
            classes
                .entry(accepts(&state))
                .or_insert_with(|| word.clone());
            if state.iter().all(Vec::is_empty) {
                continue;
            }
            for c in &alphabet {
                let next: Vec<Vec<u16>> = state
                    .iter()
                    .zip(&tokens)
                    .map(|(s, t)| {
                        let mut n = Vec::new();
                        for &pos in s {
                            match t.get(pos as usize) {
                                Some(None) => n.push(pos),
                                Some(Some(x)) if x == c => n.push(pos + 1),
                                _ => {}
                            }
                        }
                        closure(t, &mut n);
                        n
                    })
                    .collect();
                if !seen.contains(&next) {
                    let mut w = word.clone();
                    w.push(*c);
                    queue.push_back((next, w));
                }
            }
        }
        let index = patterns
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i))
            .collect();
        Ok(Self {
            classes: classes.into_iter().collect(),
            index,
        })
    }

    /// Does class `c` match any of `patterns`?
    fn matches(&self, c: usize, patterns: &[Pattern]) -> bool {
        patterns.iter().any(|p| {
            self.index
                .get(p.as_str())
                .is_some_and(|i| self.classes[c].0[*i])
        })
    }

    /// A class matching `required` (each an any-of list) and none of `forbidden`.
    fn pick(&self, required: &[&[Pattern]], forbidden: &[&[Pattern]]) -> Option<usize> {
        (0..self.classes.len()).find(|c| {
            required.iter().all(|r| self.matches(*c, r))
                && !forbidden.iter().any(|f| self.matches(*c, f))
        })
    }
}

/// Every value class of every dimension, for one scope and policy set.
struct World {
    actions: Strings,
    resources: Strings,
    roles: Vec<String>,
    /// Representative instants, one per combination of time windows that hold.
    instants: Vec<DateTime<Utc>>,
    /// Metadata keys → candidate values (`None`: absent).
    values: Vec<(String, Vec<Option<Value>>)>,
}

impl World {
    fn new(scope: &Scope, policies: &[&Policy]) -> Result<Self, String> {
        let conditions = || {
            policies
                .iter()
                .map(|p| &p.spec.conditions)
                .chain(std::iter::once(&scope.conditions))
        };
        let actions = policies
            .iter()
            .flat_map(|p| p.spec.actions.patterns())
            .chain(&scope.actions)
            .map(|p| p.as_str().to_owned())
            .collect();
        let resources = policies
            .iter()
            .flat_map(|p| &p.spec.resources)
            .chain(&scope.resources)
            .map(|p| p.as_str().to_owned())
            .collect();
        let mut roles: BTreeSet<String> = conditions().flat_map(|c| c.roles.clone()).collect();
        roles.insert(FRESH_ROLE.to_owned());
        let windows: Vec<_> = conditions().filter_map(|c| c.time.as_ref()).collect();
        let mut instants = Vec::new();
        let mut seen = HashSet::new();
        // Mondays of 2027: winter, mid-March (America on summer time, Europe not yet),
        // summer, early November (Europe back on winter time, America not yet).
        for (y, m, d) in [(2027, 1, 4), (2027, 3, 15), (2027, 7, 5), (2027, 11, 1)] {
            let Some(monday) = Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single() else {
                continue;
            };
            for minute in 0..7 * 24 * 60 {
                let at = monday + chrono::Duration::minutes(minute);
                let key: Vec<bool> = windows.iter().map(|w| w.contains(at)).collect();
                if seen.insert(key) {
                    instants.push(at);
                }
            }
        }
        let mut per_key: HashMap<String, Vec<&MetaCondition>> = HashMap::new();
        for c in conditions() {
            for (k, m) in &c.metadata {
                per_key.entry(k.clone()).or_default().push(m);
            }
        }
        let mut values: Vec<(String, Vec<Option<Value>>)> = per_key
            .into_iter()
            .map(|(k, conds)| (k, candidates(&conds)))
            .collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            actions: Strings::new(actions)?,
            resources: Strings::new(resources)?,
            roles: roles.into_iter().collect(),
            instants,
            values,
        })
    }
}

/// Candidate values of one metadata key: absent, the literals, numbers at, between and
/// beyond the thresholds, and a string no condition names.
fn candidates(conditions: &[&MetaCondition]) -> Vec<Option<Value>> {
    let mut out: Vec<Option<Value>> = vec![None];
    let mut numbers: Vec<f64> = Vec::new();
    let push_scalar = |s: &Scalar, out: &mut Vec<Option<Value>>, numbers: &mut Vec<f64>| match s {
        Scalar::Str(t) => {
            out.push(Some(Value::String(t.clone())));
            if let Ok(n) = t.trim().parse::<f64>() {
                numbers.push(n);
            }
        }
        Scalar::Num(n) => numbers.push(*n),
        Scalar::Bool(b) => out.push(Some(Value::Bool(*b))),
    };
    for c in conditions {
        for op in &c.0 {
            match op {
                Op::Eq(s) | Op::Ne(s) => push_scalar(s, &mut out, &mut numbers),
                Op::In(list) | Op::NotIn(list) => {
                    for s in list {
                        push_scalar(s, &mut out, &mut numbers);
                    }
                }
                Op::Gt(n) | Op::Gte(n) | Op::Lt(n) | Op::Lte(n) => numbers.push(*n),
                Op::Matches(_) | Op::Exists(_) => {}
            }
        }
    }
    numbers.retain(|n| n.is_finite());
    numbers.sort_by(f64::total_cmp);
    numbers.dedup();
    let mut points = numbers.clone();
    for w in numbers.windows(2) {
        points.push(f64::midpoint(w[0], w[1]));
    }
    if let (Some(lo), Some(hi)) = (numbers.first(), numbers.last()) {
        points.push(lo - 1.0);
        points.push(hi + 1.0);
    }
    out.extend(
        points
            .into_iter()
            .filter_map(serde_json::Number::from_f64)
            .map(|n| Some(Value::Number(n))),
    );
    out.push(Some(Value::String(FRESH_VALUE.to_owned())));
    let mut seen = HashSet::new();
    out.retain(|v| seen.insert(v.as_ref().map(Value::to_string)));
    out
}

/// The deny policies chosen to be escaped through each dimension.
#[derive(Debug, Default, Clone)]
struct Forbidden {
    actions: Vec<usize>,
    resources: Vec<usize>,
    roles: Vec<usize>,
    time: Vec<usize>,
    /// `(policy, metadata key)`.
    metadata: Vec<(usize, String)>,
}

enum Found {
    Witness(Box<Request>, DateTime<Utc>),
    Nothing,
    OutOfBudget,
}

#[derive(Clone, Copy)]
enum Dim<'k> {
    Actions,
    Resources,
    Roles,
    Time,
    Key(&'k str),
}

struct Search<'a> {
    world: &'a World,
    snapshot: &'a Arc<Snapshot>,
    /// The enabled policies of the scope's type; `allow` and `denies` index them.
    policies: &'a [&'a Policy],
    scope: &'a Scope,
    /// The ALLOW policy a witness must match.
    allow: usize,
    denies: Vec<usize>,
    forbidden: Forbidden,
    nodes: usize,
    regex_gap: bool,
}

impl<'a> Search<'a> {
    fn policy(&self, i: usize) -> &'a Policy {
        self.policies[i]
    }

    fn run(&mut self) -> Found {
        self.step(0)
    }

    fn step(&mut self, next: usize) -> Found {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Found::OutOfBudget;
        }
        let Some(&deny) = self.denies.get(next) else {
            return match self.witness() {
                Some((req, at)) if self.snapshot.evaluate(&req, at, false).allowed() => {
                    Found::Witness(Box::new(req), at)
                }
                _ => Found::Nothing,
            };
        };
        let spec = &self.policy(deny).spec;
        let mut dims = vec![Dim::Actions, Dim::Resources];
        if !spec.conditions.roles.is_empty() {
            dims.push(Dim::Roles);
        }
        if spec.conditions.time.is_some() {
            dims.push(Dim::Time);
        }
        let keys: Vec<String> = spec.conditions.metadata.keys().cloned().collect();
        dims.extend(keys.iter().map(|k| Dim::Key(k)));
        for dim in dims {
            self.push(dim, deny);
            if self.feasible(dim) {
                match self.step(next + 1) {
                    Found::Nothing => {}
                    other => {
                        self.pop(dim);
                        return other;
                    }
                }
            }
            self.pop(dim);
        }
        Found::Nothing
    }

    fn push(&mut self, dim: Dim<'_>, deny: usize) {
        let f = &mut self.forbidden;
        match dim {
            Dim::Actions => f.actions.push(deny),
            Dim::Resources => f.resources.push(deny),
            Dim::Roles => f.roles.push(deny),
            Dim::Time => f.time.push(deny),
            Dim::Key(k) => f.metadata.push((deny, k.to_owned())),
        }
    }

    fn pop(&mut self, dim: Dim<'_>) {
        let f = &mut self.forbidden;
        match dim {
            Dim::Actions => f.actions.pop(),
            Dim::Resources => f.resources.pop(),
            Dim::Roles => f.roles.pop(),
            Dim::Time => f.time.pop(),
            Dim::Key(_) => f.metadata.pop().map(|(d, _)| d),
        };
    }

    fn feasible(&mut self, dim: Dim<'_>) -> bool {
        match dim {
            Dim::Actions => self.action().is_some(),
            Dim::Resources => self.resource().is_some(),
            Dim::Roles => self.role().is_some(),
            Dim::Time => self.instant().is_some(),
            Dim::Key(k) => {
                let found = self.value(k).is_some();
                if !found && self.required(k).iter().any(|c| has_regex(c)) {
                    // A regex that must hold: the candidates may simply miss its strings.
                    self.regex_gap = true;
                }
                found
            }
        }
    }

    fn action(&self) -> Option<usize> {
        let a = self.policy(self.allow).spec.actions.patterns();
        let forbidden: Vec<&[Pattern]> = self
            .forbidden
            .actions
            .iter()
            .map(|d| self.policy(*d).spec.actions.patterns())
            .collect();
        self.world
            .actions
            .pick(&[a, &self.scope.actions], &forbidden)
    }

    fn resource(&self) -> Option<usize> {
        let a = &self.policy(self.allow).spec.resources;
        let forbidden: Vec<&[Pattern]> = self
            .forbidden
            .resources
            .iter()
            .map(|d| self.policy(*d).spec.resources.as_slice())
            .collect();
        self.world
            .resources
            .pick(&[a, &self.scope.resources], &forbidden)
    }

    /// The caller's roles: one role, or two when the ALLOW policy and the scope each need
    /// one the other does not name. More roles never help: each can only make a DENY match.
    fn role(&self) -> Option<Vec<String>> {
        let has = |set: &[&str], roles: &[String]| {
            roles.is_empty() || roles.iter().any(|x| set.contains(&x.as_str()))
        };
        let a = &self.policy(self.allow).spec.conditions.roles;
        let fits = |set: &[&str]| {
            has(set, a)
                && has(set, &self.scope.conditions.roles)
                && self.forbidden.roles.iter().all(|d| {
                    !self
                        .policy(*d)
                        .spec
                        .conditions
                        .roles
                        .iter()
                        .any(|x| set.contains(&x.as_str()))
                })
        };
        let roles: Vec<&str> = self.world.roles.iter().map(String::as_str).collect();
        if let Some(r) = roles.iter().find(|r| fits(&[**r])) {
            return Some(vec![(*r).to_owned()]);
        }
        for (i, r1) in roles.iter().enumerate() {
            for r2 in &roles[i + 1..] {
                if fits(&[*r1, *r2]) {
                    return Some(vec![(*r1).to_owned(), (*r2).to_owned()]);
                }
            }
        }
        None
    }

    fn instant(&self) -> Option<DateTime<Utc>> {
        let holds = |c: &Conditions, at| c.time.as_ref().is_none_or(|w| w.contains(at));
        let a = &self.policy(self.allow).spec.conditions;
        self.world.instants.iter().copied().find(|at| {
            holds(a, *at)
                && holds(&self.scope.conditions, *at)
                && self.forbidden.time.iter().all(|d| {
                    let w = self.policy(*d).spec.conditions.time.as_ref();
                    w.is_some_and(|w| !w.contains(*at))
                })
        })
    }

    /// The conditions on `key` that must hold: the ALLOW policy's and the scope's.
    fn required(&self, key: &str) -> Vec<&MetaCondition> {
        [
            &self.policy(self.allow).spec.conditions,
            &self.scope.conditions,
        ]
        .into_iter()
        .filter_map(|c| c.metadata.get(key))
        .collect()
    }

    /// A value of `key` that satisfies what must hold and falsifies what must not,
    /// preferring one no policy's condition on the key errors on.
    fn value(&self, key: &str) -> Option<Option<Value>> {
        let required = self.required(key);
        let must_fail: Vec<&MetaCondition> = self
            .forbidden
            .metadata
            .iter()
            .filter(|(_, k)| k == key)
            .filter_map(|(d, _)| self.policy(*d).spec.conditions.metadata.get(key))
            .collect();
        let everyone: Vec<&MetaCondition> = self
            .policies
            .iter()
            .filter_map(|p| p.spec.conditions.metadata.get(key))
            .collect();
        let candidates = &self.world.values.iter().find(|(k, _)| k == key)?.1;
        let fits = |v: &Option<Value>| {
            required.iter().all(|c| c.holds(v.as_ref()) == Ok(true))
                && must_fail.iter().all(|c| c.holds(v.as_ref()) == Ok(false))
        };
        let clean = |v: &Option<Value>| everyone.iter().all(|c| c.holds(v.as_ref()).is_ok());
        candidates
            .iter()
            .find(|v| fits(v) && clean(v))
            .or_else(|| candidates.iter().find(|v| fits(v)))
            .cloned()
    }

    fn witness(&mut self) -> Option<(Request, DateTime<Utc>)> {
        let action = self.world.actions.classes[self.action()?].1.clone();
        let resource = self.world.resources.classes[self.resource()?].1.clone();
        let roles = self.role()?;
        let at = self.instant()?;
        let mut metadata = Map::new();
        let keys: Vec<String> = self.world.values.iter().map(|(k, _)| k.clone()).collect();
        for key in keys {
            let value = self.value(&key);
            if value.is_none() && self.required(&key).iter().any(|c| has_regex(c)) {
                self.regex_gap = true;
            }
            if let Some(v) = value? {
                insert_path(&mut metadata, &key, v);
            }
        }
        let request = Request {
            action,
            resource,
            policy_type: self.scope.policy_type,
            context: Context {
                user_id: None,
                role: None,
                roles,
                metadata,
                time: Some(at),
            },
        };
        Some((request, at))
    }
}

fn has_regex(c: &MetaCondition) -> bool {
    c.0.iter().any(|op| matches!(op, Op::Matches(_)))
}

/// Sets `key` in `metadata`, through nested objects when it has dots (as conditions read
/// it).
fn insert_path(metadata: &mut Map<String, Value>, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = metadata;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        current = next;
    }
    current.insert(last.to_owned(), value);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::glob::glob_match_reference;
    use crate::model::PolicySpec;
    use crate::snapshot::Origin;

    fn policies(yaml: &str) -> Vec<Policy> {
        crate::files::parse_items::<PolicySpec>(Path::new("p.yaml"), yaml, "policies")
            .unwrap()
            .into_iter()
            .map(|spec| Policy {
                id: format!("test#{}", spec.name),
                spec,
                origin: Origin::Builtin,
            })
            .collect()
    }

    fn invariant(yaml: &str) -> Invariant {
        crate::files::parse_items::<Invariant>(Path::new("i.yaml"), yaml, "invariants")
            .unwrap()
            .remove(0)
    }

    const BASE: &str = r#"
- name: Allow Scaling
  type: self_healing
  effect: allow
  priority: 10
  actions: [scale_up, scale_down, restart_pod]
  resources: ["cluster:*/deployment/*"]
  conditions:
    roles: [service]
- name: Protect kube-system
  type: self_healing
  effect: deny
  priority: 100
  actions: ["*"]
  resources: ["cluster:kube-system/*"]
"#;

    const KUBE_SYSTEM: &str = r#"
name: nothing in kube-system
never_allow:
  type: self_healing
  resources: ["cluster:kube-system/*"]
"#;

    fn broken(v: Verdict) -> (String, Request, DateTime<Utc>) {
        match v {
            Verdict::Broken {
                name, request, at, ..
            } => (name, *request, at),
            other => panic!("expected broken, got {other:?}"),
        }
    }

    #[test]
    fn a_deny_above_every_allow_keeps_the_invariant() {
        assert_eq!(
            prove(&invariant(KUBE_SYSTEM), &policies(BASE)),
            Verdict::Holds
        );
    }

    #[test]
    fn a_new_allow_above_the_deny_breaks_it_with_a_real_request() {
        let set = format!(
            "{BASE}
- name: Restart CoreDNS
  type: self_healing
  effect: allow
  priority: 200
  actions: [restart_pod]
  resources: [\"cluster:kube-system/deployment/coredns\"]
"
        );
        let set = policies(&set);
        let (name, request, at) = broken(prove(&invariant(KUBE_SYSTEM), &set));
        assert_eq!(name, "Restart CoreDNS");
        assert_eq!(request.action, "restart_pod");
        assert_eq!(request.resource, "cluster:kube-system/deployment/coredns");
        let snapshot = Arc::new(Snapshot::compile(&set, 1).unwrap());
        assert!(snapshot.evaluate(&request, at, false).allowed());
        // At equal priority the deny wins: the invariant holds again.
        let tie = BASE.to_owned()
            + "
- name: Restart CoreDNS
  type: self_healing
  effect: allow
  priority: 100
  actions: [restart_pod]
  resources: [\"cluster:kube-system/deployment/coredns\"]
";
        assert_eq!(
            prove(&invariant(KUBE_SYSTEM), &policies(&tie)),
            Verdict::Holds
        );
    }

    #[test]
    fn globs_are_intersected_exactly() {
        // Neither pattern names a `-system` namespace: only the automaton finds one.
        let set = policies(
            r#"
- name: API scaling
  type: self_healing
  effect: allow
  actions: [scale_up]
  resources: ["cluster:*/deployment/api-*"]
"#,
        );
        let inv = invariant(
            r#"
name: no system namespace
never_allow:
  type: self_healing
  resources: ["cluster:*-system/*"]
"#,
        );
        let (_, request, _) = broken(prove(&inv, &set));
        assert!(glob_match_reference(
            "cluster:*/deployment/api-*",
            &request.resource
        ));
        assert!(glob_match_reference(
            "cluster:*-system/*",
            &request.resource
        ));
        // A deny on every `*-system` namespace closes it.
        let mut closed = set.clone();
        closed.extend(policies(
            r#"
- name: No system namespaces
  type: self_healing
  effect: deny
  priority: 5
  actions: ["*"]
  resources: ["cluster:*-system/*"]
"#,
        ));
        assert_eq!(prove(&inv, &closed), Verdict::Holds);
    }

    #[test]
    fn time_windows_and_metadata_are_reasoned_over() {
        let set = policies(
            r#"
- name: Allow Restarts
  type: self_healing
  effect: allow
  actions: [restart_pod]
  conditions:
    metadata:
      severity: {in: [high, critical]}
- name: Deny Peak Restarts
  type: self_healing
  effect: deny
  priority: 50
  actions: [restart_pod]
  conditions:
    time: {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00", timezone: Europe/Berlin}
- name: Deny Unsure
  type: self_healing
  effect: deny
  priority: 50
  actions: [restart_pod]
  conditions:
    metadata:
      score: {lt: 0.8}
"#,
        );
        let peak = invariant(
            r#"
name: no restarts at peak
never_allow:
  type: self_healing
  actions: [restart_pod]
  conditions:
    time: {days: [mon, tue, wed, thu, fri], start: "10:00", end: "16:00", timezone: Europe/Berlin}
"#,
        );
        assert_eq!(prove(&peak, &set), Verdict::Holds);
        let unsure = invariant(
            r#"
name: no unsure restarts
never_allow:
  type: self_healing
  conditions:
    metadata:
      score: {lte: 0.5}
"#,
        );
        assert_eq!(prove(&unsure, &set), Verdict::Holds);
        // Restarts are allowed outside peak hours with a confident, severe detection.
        let any = invariant(
            r#"
name: no restarts
never_allow:
  type: self_healing
  actions: [restart_pod]
"#,
        );
        let (name, request, at) = broken(prove(&any, &set));
        assert_eq!(name, "Allow Restarts");
        let window = set[1].spec.conditions.time.as_ref().unwrap();
        assert!(!window.contains(at), "{at}");
        let m = &request.context.metadata;
        assert!(
            matches!(m["severity"].as_str(), Some("high" | "critical")),
            "{m:?}"
        );
        // Either confident, or — what the prover points out — no score at all: an absent
        // key fails `lt`, so "Deny Unsure" does not fire.
        assert!(
            m.get("score").is_none_or(|s| s.as_f64().unwrap() >= 0.8),
            "{m:?}"
        );
    }

    #[test]
    fn a_caller_with_two_roles_is_considered() {
        // Admins may delete users; users may not — unless a user is also an admin.
        let set = policies(
            r#"
- name: Admins Delete
  type: api_access
  effect: allow
  priority: 200
  actions: ["DELETE /api/v1/users/*"]
  conditions: {roles: [admin]}
- name: Users Do Not
  type: api_access
  effect: deny
  priority: 100
  actions: ["DELETE /api/v1/users/*"]
  conditions: {roles: [user]}
"#,
        );
        let inv = invariant(
            r#"
name: users never delete users
never_allow:
  type: api_access
  actions: ["DELETE /api/v1/users/*"]
  conditions: {roles: [user]}
"#,
        );
        let (_, request, _) = broken(prove(&inv, &set));
        let mut roles = request.context.roles.clone();
        roles.sort();
        assert_eq!(roles, ["admin", "user"]);
    }

    #[test]
    fn a_regex_that_must_hold_is_undecided_not_proved() {
        let set = policies(
            r#"
- name: Payments
  type: self_healing
  effect: allow
  actions: [scale_up]
  conditions:
    metadata:
      team: {matches: "^pay"}
"#,
        );
        let all = invariant("name: nothing\nnever_allow: {type: self_healing}\n");
        assert!(matches!(prove(&all, &set), Verdict::Undecided { .. }));
        // An api_access invariant is not about these policies at all.
        let other = invariant("name: api\nnever_allow: {type: api_access}\n");
        assert_eq!(prove(&other, &set), Verdict::Holds);
    }
}
