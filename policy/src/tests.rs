//! Property tests: the compiled snapshot agrees with the reference evaluator.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::reference;
use crate::{Origin, Policy, PolicySpec, Request, Snapshot};

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

fn time_window() -> impl Strategy<Value = Value> {
    (
        proptest::sample::subsequence(
            &["mon", "tue", "wed", "thu", "fri", "sat", "sun"][..],
            0..=7,
        ),
        0u16..24,
        0u16..24,
        pick(&["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    )
        .prop_filter("start must differ from end", |(_, s, e, _)| s != e)
        .prop_map(|(days, s, e, tz)| {
            json!({"days": days, "start": format!("{s:02}:00"), "end": format!("{e:02}:30"),
                   "timezone": tz})
        })
}

fn meta_condition() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        pick(&["high", "low", "critical"]).prop_map(|v| ("sev".to_owned(), json!(v))),
        Just(("sev".to_owned(), json!({"in": ["high", "critical"]}))),
        Just(("sev".to_owned(), json!({"not_in": ["low"]}))),
        Just(("sev".to_owned(), json!({"ne": "high"}))),
        Just(("sev".to_owned(), json!({"matches": "^(hi|cr)"}))),
        any::<bool>().prop_map(|b| ("sev".to_owned(), json!({"exists": b}))),
        (0i64..10).prop_map(|n| ("n".to_owned(), json!({"gt": n}))),
        (0i64..10, 0i64..10).prop_map(|(a, b)| ("n".to_owned(), json!({"gte": a, "lte": b}))),
        (0i64..10).prop_map(|n| ("n".to_owned(), json!({"eq": n}))),
        (0i64..10).prop_map(|n| ("n".to_owned(), json!({"lt": n}))),
        Just(("labels.team".to_owned(), json!({"eq": "sre"}))),
    ]
}

prop_compose! {
    fn policy_json(i: usize)(
        kind in pick(&["self_healing", "api_access"]),
        effect in pick(&["allow", "deny"]),
        priority in 0i32..4,
        actions in proptest::collection::vec(pick(&["a", "b", "ab", "*", "a*", "*b", "x*y"]), 1..3),
        resources in proptest::collection::vec(pick(&["r1", "r2", "r*", "*", "*:prod"]), 1..3),
        roles in proptest::sample::subsequence(&["admin", "user", "service"][..], 0..=2),
        time in proptest::option::weighted(0.2, time_window()),
        metadata in proptest::collection::vec(meta_condition(), 0..3),
        enabled in proptest::bool::weighted(0.9),
    ) -> Value {
        let mut conditions = json!({"roles": roles});
        if let Some(t) = time { conditions["time"] = t; }
        let meta: serde_json::Map<String, Value> = metadata.into_iter().collect();
        conditions["metadata"] = Value::Object(meta);
        json!({"name": format!("p{i}"), "type": kind, "effect": effect, "priority": priority,
               "actions": actions, "resources": resources, "conditions": conditions,
               "enabled": enabled})
    }
}

fn policies() -> impl Strategy<Value = Vec<Policy>> {
    (0usize..24).prop_flat_map(|n| {
        (0..n)
            .map(policy_json)
            .collect::<Vec<_>>()
            .prop_map(|values| {
                values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Policy {
                        // Ids in a different order than names, so the tie-break is exercised.
                        id: format!("id-{:02}", (i * 7) % 31),
                        spec: PolicySpec::from_json(v).unwrap(),
                        origin: Origin::Builtin,
                    })
                    .collect()
            })
    })
}

prop_compose! {
    fn request()(
        kind in pick(&["self_healing", "api_access"]),
        action in pick(&["a", "b", "ab", "c", "xzy", "aab"]),
        resource in pick(&["r1", "r2", "x", "eu:prod"]),
        role in proptest::option::of(pick(&["admin", "user", "service", "other"])),
        sev in proptest::option::of(pick(&["high", "low", "critical"])),
        n in proptest::option::of(prop_oneof![
            (0i64..10).prop_map(|n| json!(n)),
            Just(json!("7")),
            Just(json!("abc")),
            Just(Value::Null),
        ]),
        team in proptest::option::of(pick(&["sre", "dev"])),
    ) -> Request {
        let mut metadata = serde_json::Map::new();
        if let Some(s) = sev { metadata.insert("sev".into(), json!(s)); }
        if let Some(n) = n { metadata.insert("n".into(), n); }
        if let Some(t) = team { metadata.insert("labels".into(), json!({"team": t})); }
        serde_json::from_value(json!({"type": kind, "action": action, "resource": resource,
            "context": {"role": role, "metadata": metadata}})).unwrap()
    }
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // Two years around now, minute resolution, so windows' edges are hit.
    (0i64..(2 * 366 * 24 * 60)).prop_map(|m| {
        Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn compiled_evaluator_agrees_with_reference(
        set in policies(),
        requests in proptest::collection::vec(request(), 1..8),
        at in instant(),
        stop in proptest::bool::weighted(0.1),
    ) {
        let snapshot = Arc::new(Snapshot::compile(&set, 1).unwrap());
        for req in &requests {
            let fast = snapshot.evaluate(req, at, stop);
            let slow = reference::evaluate(&set, req, at, stop);
            prop_assert_eq!(fast.kind(), slow.kind, "request {:?}", req);
            prop_assert_eq!(fast.policy().map(|p| p.id.clone()), slow.policy_id.clone());
            let matching: Vec<String> = fast.matching().map(|p| p.id.clone()).collect();
            prop_assert_eq!(matching, slow.matching.clone());
            prop_assert_eq!(fast.allowed(), slow.kind == crate::DecisionKind::Allowed);
        }
    }

    #[test]
    fn specs_round_trip_through_json(set in policies()) {
        for p in &set {
            let text = serde_json::to_value(&p.spec).unwrap();
            let back = PolicySpec::from_json(text.clone()).unwrap();
            prop_assert_eq!(&back, &p.spec, "{}", text);
        }
    }
}

fn policy(id: &str, v: Value) -> Policy {
    Policy {
        id: id.into(),
        spec: PolicySpec::from_json(v).unwrap(),
        origin: Origin::Builtin,
    }
}

fn req(v: Value) -> Request {
    serde_json::from_value(v).unwrap()
}

#[test]
fn deny_overrides_allow_at_the_same_priority_only() {
    let set = vec![
        policy(
            "allow-hi",
            json!({"name": "allow hi", "type": "self_healing", "effect": "allow",
            "priority": 10, "actions": ["scale_up"]}),
        ),
        policy(
            "deny-hi",
            json!({"name": "deny hi", "type": "self_healing", "effect": "deny",
            "priority": 10, "actions": ["scale_*"], "resources": ["cluster:prod*"]}),
        ),
        policy(
            "deny-lo",
            json!({"name": "deny lo", "type": "self_healing", "effect": "deny",
            "priority": 1, "actions": ["*"]}),
        ),
    ];
    let snapshot = Arc::new(Snapshot::compile(&set, 1).unwrap());
    let now = Utc::now();
    let d = snapshot.evaluate(
        &req(
            json!({"type": "self_healing", "action": "scale_up", "resource": "cluster:production"}),
        ),
        now,
        false,
    );
    assert_eq!(d.decision(), "DENY");
    assert_eq!(d.policy().unwrap().id, "deny-hi");
    let ids: Vec<&str> = d.matching().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["deny-hi", "allow-hi", "deny-lo"]);

    let d = snapshot.evaluate(
        &req(json!({"type": "self_healing", "action": "scale_up", "resource": "cluster:staging"})),
        now,
        false,
    );
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.reason(), "allowed by policy `allow hi` (priority 10)");

    let d = snapshot.evaluate(
        &req(json!({"type": "api_access", "action": "scale_up", "resource": "cluster:staging"})),
        now,
        false,
    );
    assert_eq!(d.kind(), crate::DecisionKind::NoMatch);
    assert_eq!(d.reason(), "no policy matched; denied by default");
}

#[test]
fn evaluation_error_is_deny() {
    let set = vec![policy(
        "p",
        json!({"name": "small", "type": "self_healing", "effect": "allow",
        "actions": ["scale_up"], "conditions": {"metadata": {"replicas": {"lte": 10}}}}),
    )];
    let snapshot = Arc::new(Snapshot::compile(&set, 1).unwrap());
    let d = snapshot.evaluate(
        &req(
            json!({"type": "self_healing", "action": "scale_up", "resource": "x",
            "context": {"metadata": {"replicas": "many"}}}),
        ),
        Utc::now(),
        false,
    );
    assert!(!d.allowed());
    assert_eq!(d.kind(), crate::DecisionKind::Error);
    assert!(
        d.reason().contains("metadata `replicas` is not a number"),
        "{}",
        d.reason()
    );
}

#[test]
fn duplicate_ids_do_not_compile() {
    let p = policy(
        "same",
        json!({"name": "a", "type": "api_access", "effect": "allow", "actions": ["*"]}),
    );
    assert!(Snapshot::compile(&[p.clone(), p], 1).is_err());
}

#[test]
fn engine_swaps_snapshots_and_stops() {
    let engine = crate::PolicyEngine::new();
    let r = req(json!({"type": "self_healing", "action": "scale_up", "resource": "x"}));
    assert!(!engine.evaluate(&r).allowed());
    engine
        .set_database_policies(vec![policy(
            "p",
            json!({"name": "a", "type": "self_healing",
            "effect": "allow", "actions": ["*"]}),
        )])
        .unwrap();
    assert!(engine.evaluate(&r).allowed());
    engine.emergency_stop();
    let d = engine.evaluate(&r);
    assert!(!d.allowed());
    assert!(d.reason().starts_with("emergency stop is active"));
    engine.resume();
    assert!(engine.evaluate(&r).allowed());
    // A file policy that fails to compile leaves the snapshot in force.
    let generation = engine.snapshot().generation();
    let dup = policy(
        "p",
        json!({"name": "b", "type": "api_access", "effect": "deny", "actions": ["*"]}),
    );
    assert!(engine.set_file_policies(vec![dup]).is_err());
    assert_eq!(engine.snapshot().generation(), generation);
    assert!(engine.evaluate(&r).allowed());
}
