//! `Snapshot::evaluate` must not allocate on the common path (at most eight matching
//! policies): counted with dhat's allocator, which this test binary alone installs.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::sync::Arc;

use aegis_policy::{Origin, Policy, PolicySpec, Request, Snapshot};
use chrono::{TimeZone, Utc};
use serde_json::json;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn evaluate_does_not_allocate() {
    // The profile goes to the temporary folder, not into the source tree.
    let _profiler = dhat::Profiler::builder()
        .testing()
        .file_name(std::env::temp_dir().join("aegis-policy-dhat-heap.json"))
        .build();
    let policies: Vec<Policy> = (0..1_000)
        .map(|i| Policy {
            id: format!("p{i}"),
            spec: PolicySpec::from_json(json!({
                "name": format!("policy {i}"),
                "type": "self_healing",
                "effect": if i % 10 == 9 { "deny" } else { "allow" },
                "priority": i % 5,
                // A few wildcard actions, so both index paths are exercised.
                "actions": if i % 200 == 3 {
                    json!([format!("act{}", i % 50), "scale_*"])
                } else {
                    json!([format!("act{}", i % 50)])
                },
                "resources": [format!("cluster:env{}*", i % 40)],
                "conditions": {
                    "roles": ["service"],
                    "time": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00",
                             "end": "02:00", "timezone": "Europe/Berlin"},
                    "metadata": {"severity": {"in": ["high", "critical"]},
                                 "replicas": {"lte": 10}, "pod": {"matches": "^api-"}},
                },
            }))
            .unwrap(),
            origin: Origin::Builtin,
        })
        .collect();
    let snapshot = Arc::new(Snapshot::compile(&policies, 1).unwrap());
    let requests: Vec<Request> = ["act3", "scale_up", "act49", "nothing"]
        .iter()
        .map(|action| {
            serde_json::from_value(json!({
                "type": "self_healing", "action": action, "resource": "cluster:env3-eu",
                "context": {"role": "service",
                            "metadata": {"severity": "high", "replicas": "4", "pod": "api-7"}},
            }))
            .unwrap()
        })
        .collect();
    let at = Utc.with_ymd_and_hms(2026, 11, 24, 14, 0, 0).unwrap();
    // Warm up: the regex engine fills its per-thread cache on first use.
    let mut allowed = 0;
    for req in &requests {
        let d = snapshot.evaluate(req, at, false);
        assert!(
            d.matching().count() <= 8,
            "keep the test on the common path"
        );
        allowed += usize::from(d.allowed());
    }
    assert!(
        allowed > 0,
        "the test must exercise matches, not only misses"
    );

    let before = dhat::HeapStats::get();
    for _ in 0..1_000 {
        for req in &requests {
            let d = snapshot.evaluate(req, at, false);
            std::hint::black_box(d.allowed());
        }
    }
    let after = dhat::HeapStats::get();
    dhat::assert_eq!(after.total_blocks, before.total_blocks);
}
