//! Golden scenarios: recorded telemetry (`tests/scenarios/NAME/telemetry.jsonl.gz`) goes
//! through `aegis replay` — windows, detectors, incidents, the policy engine, the dry-run
//! executor and both audit trails — and what comes out (detections, decisions, actions)
//! must equal `tests/scenarios/NAME/expected.json`.
//!
//! After an intended change of behaviour, `UPDATE_GOLDEN=1 cargo test --test
//! scenarios_golden` rewrites the expected files; review the diff like code.
//!
//! Each recording starts with four hours of normal history (copies of its first hour,
//! `tests/scenarios/prepend_history.py`): the stream detector judges a point against the
//! series' own score history, which takes a few hundred points to settle.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::path::Path;

use serde_json::Value;

/// Drops what differs between runs (action ids); keeps everything else.
fn stable(mut report: Value) -> Value {
    if let Some(events) = report["events"].as_array_mut() {
        for e in events {
            if let Some(o) = e.as_object_mut() {
                o.remove("action_id");
            }
        }
    }
    report
}

fn check(name: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let input = root.join("telemetry.jsonl.gz");
    let (code, _, stderr) = common::run(
        dir.path(),
        "sqlite::memory:",
        &[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let got = stable(serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap());
    let expected_path = root.join("expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &expected_path,
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
    )
    .unwrap();
    assert_eq!(
        got,
        expected,
        "{name}: the replay differs from {}; if intended, UPDATE_GOLDEN=1",
        expected_path.display()
    );
    assert_eq!(got["audit_intact"], true);
    got
}

/// The actions that reached the executor: `(action, namespace, target, status)` of each
/// `result` row.
fn results(report: &Value) -> Vec<(String, String, String, String)> {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["phase"] == "result")
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_owned();
            (s("action"), s("namespace"), s("target"), s("status"))
        })
        .collect()
}

#[test]
fn a_cpu_spike_in_production_scales_once() {
    let r = check("cpu_spike");
    assert_eq!(
        results(&r),
        vec![(
            "scale_deployment".into(),
            "production".into(),
            "deployment/api".into(),
            "dry_run".into()
        )]
    );
    // Other workloads show detections the detector flags but nothing is asked for (barely
    // off their baselines: medium); the one action is the spike's.
    let asked: Vec<&Value> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["decision"] != "NOT_ASKED")
        .collect();
    assert_eq!(asked.len(), 1, "{r}");
    assert_eq!(asked[0]["entity"], "production/api");
    assert_eq!(asked[0]["recommended_action"], "scale_up");
    assert_eq!(asked[0]["policy"], "Allow Auto-Scale");
}

#[test]
fn the_same_spike_in_kube_system_is_denied() {
    let r = check("kube_system");
    assert!(results(&r).is_empty(), "{r}");
    let spike = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == "kube-system/coredns" && e["recommended_action"] == "scale_up")
        .unwrap_or_else(|| panic!("the spike is detected: {r}"));
    assert_eq!(spike["decision"], "DENY");
}

#[test]
fn a_crash_loop_is_rolled_back() {
    let r = check("crash_loop");
    assert_eq!(
        results(&r),
        vec![(
            "rollback_deployment".into(),
            "production".into(),
            "deployment/worker".into(),
            "dry_run".into()
        )]
    );
}

#[test]
fn a_restart_in_peak_hours_is_denied_by_policy() {
    let r = check("peak_hours");
    assert!(results(&r).is_empty(), "{r}");
    // The leak is an anomaly first; once the classifier names it, the incident escalates
    // to a restart, which the peak-hours policy refuses.
    let leak = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["recommended_action"] == "restart_pod")
        .unwrap_or_else(|| panic!("a restart is recommended: {r}"));
    assert_eq!(leak["entity"], "production/checkout");
    assert_eq!(leak["failure_type"], "memory_leak");
    assert_eq!(leak["policy"], "Deny Destructive Actions During Peak Hours");
    assert!(
        r["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["decision"] == "DENY")
    );
}
