//! Issue 30: `aegis replay` over recorded telemetry whose clocks disagree. A pod stamped six
//! years ahead of the other replays in seconds (event time without samples is jumped over,
//! not ticked through) with a warning naming the gap and the series on either side; input
//! spanning more than `--max-span-days` is refused with exit 2 naming the first sample
//! beyond it.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use common::aegis;

/// One pod's CPU, one sample every 15 s for `n` samples from `start_ms`.
fn pod(name: &str, start_ms: i64, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let v = 0.3 + 0.02 * ((i % 7) as f64);
            format!(
                r#"{{"at": {}, "labels": {{"__name__": "cpu_usage", "namespace": "shop", "pod": "{name}-7d9f-x1"}}, "value": {v}}}"#,
                start_ms + i as i64 * 15_000
            )
        })
        .collect()
}

const START_MS: i64 = 1_650_000_000_000; // 2022-04-15
const SIX_YEARS_MS: i64 = 6 * 365 * 86_400_000;

fn telemetry(dir: &std::path::Path) -> std::path::PathBuf {
    let mut lines = pod("cart", START_MS, 240);
    lines.extend(pod("checkout", START_MS + SIX_YEARS_MS, 240));
    let path = dir.join("pods.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn a_pod_six_years_ahead_replays_in_seconds_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let input = telemetry(dir.path());
    let started = Instant::now();
    let out = aegis(dir.path())
        .args(["replay", "--input"])
        .arg(&input)
        .args(["--output", "-", "--max-span-days", "3650"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "six years of empty event time took {took:?}"
    );
    assert!(
        stderr.contains("warning: no telemetry for 6.0 years"),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"pod="cart-7d9f-x1""#) && stderr.contains(r#"pod="checkout-7d9f-x1""#),
        "the warning names the series on either side: {stderr}"
    );
    assert!(stderr.contains("2022-04-15"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["warnings"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["audit_intact"], true);
}

#[test]
fn input_spanning_more_than_the_limit_is_refused_naming_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let input = telemetry(dir.path());
    let out = aegis(dir.path())
        .args(["replay", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--max-span-days 365"), "{stderr}");
    assert!(
        stderr.contains(r#"pod="checkout-7d9f-x1""#) && stderr.contains("2028-04-"),
        "names the first sample beyond the span: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no report for refused input");
}
