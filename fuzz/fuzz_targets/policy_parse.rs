//! Fuzz policy parsing (YAML and JSON, as files and the API read them) and, for every set
//! that parses and compiles, check the compiled evaluator against the reference evaluator
//! (and the "why not" explainer) on a few requests: no panic, same decision.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use aegis_policy::files::parse_policies;
use aegis_policy::{Origin, Policy, Request, Snapshot, reference};
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

/// The requests every parsed set is asked, parsed once.
fn requests() -> &'static [Request] {
    static REQUESTS: std::sync::OnceLock<Vec<Request>> = std::sync::OnceLock::new();
    REQUESTS.get_or_init(|| {
        [
            r#"{"action":"scale_up","resource":"cluster:production/deployment/api","type":"self_healing","context":{"roles":["service"],"metadata":{"severity":"high","score":0.9}}}"#,
            r#"{"action":"restart_pod","resource":"cluster:kube-system/pod/x","type":"self_healing","context":{"role":"admin"}}"#,
            r#"{"action":"DELETE /api/v1/users/{id}","resource":"/api/v1/users/7","type":"api_access","context":{"roles":["user"],"metadata":{"a":{"b":"c"},"n":"12"}}}"#,
        ]
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["p.yaml", "p.json"] {
        let Ok(specs) = parse_policies(Path::new(name), text) else {
            continue;
        };
        let policies: Vec<Policy> = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Policy {
                id: format!("p{i}"),
                spec,
                origin: Origin::Builtin,
            })
            .collect();
        let Ok(snapshot) = Snapshot::compile(&policies, 1) else {
            continue;
        };
        let snapshot = Arc::new(snapshot);
        let Some(at) = Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 0).single() else {
            return;
        };
        for req in requests() {
            let fast = snapshot.evaluate(req, at, false);
            let slow = reference::evaluate(&policies, req, at, false);
            assert_eq!(fast.kind(), slow.kind, "{req:?}");
            assert_eq!(
                fast.policy().map(|p| p.id.clone()),
                slow.policy_id,
                "{req:?}"
            );
            let _ = aegis_policy::explain::explain(&policies, req, at, &fast);
        }
    }
});
