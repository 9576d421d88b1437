//! Fuzz policy evaluation: any request JSON (as `POST /api/v1/policy/evaluate` reads it)
//! against the default policies, compiled and reference evaluators agreeing, at a time
//! taken from the input; the explainer must not panic either.
#![no_main]

use std::sync::{Arc, OnceLock};

use aegis_policy::{Origin, Policy, Request, Snapshot, default_policies, reference};
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

fn defaults() -> &'static (Vec<Policy>, Arc<Snapshot>) {
    static SET: OnceLock<(Vec<Policy>, Arc<Snapshot>)> = OnceLock::new();
    SET.get_or_init(|| {
        let policies: Vec<Policy> = default_policies()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Policy {
                id: format!("d{i}"),
                spec,
                origin: Origin::Builtin,
            })
            .collect();
        let snapshot = Snapshot::compile(&policies, 1).unwrap_or_else(|_| Snapshot::empty());
        (policies, Arc::new(snapshot))
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (clock, body) = data.split_at(8);
    let secs = i64::from_le_bytes(clock.try_into().unwrap_or([0; 8])) % 8_000_000_000;
    let Some(at) = DateTime::<Utc>::from_timestamp(secs.abs(), 0) else {
        return;
    };
    let Ok(req) = serde_json::from_slice::<Request>(body) else {
        return;
    };
    let (policies, snapshot) = defaults();
    for stop in [false, true] {
        let fast = snapshot.evaluate(&req, at, stop);
        let slow = reference::evaluate(policies, &req, at, stop);
        assert_eq!(fast.kind(), slow.kind, "{req:?}");
        assert_eq!(
            fast.policy().map(|p| p.id.clone()),
            slow.policy_id,
            "{req:?}"
        );
        let _ = aegis_policy::explain::explain(policies, &req, at, &fast);
    }
});
