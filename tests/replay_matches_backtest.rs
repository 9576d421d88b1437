//! Issue 25: the live loop is the backtest's detector. One NAB series (an EC2 instance's CPU,
//! two weeks at five-minute steps) goes through `aegis replay` as a workload's
//! `cpu_usage` — windows, the engine's tick, the loop's scoring — and through `aegis
//! backtest`; the alarms the replay's loop raises are the backtest's, point for point (each
//! scored at the tick after its sample, as live). Incidents, which ask the policy engine,
//! open on the alarms far enough off their baselines: a subset of these, checked too.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_aegis");
const FILE: &str = "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv";

fn nab() -> PathBuf {
    std::env::var_os("AEGIS_NAB_DEV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/eval-data/nab-dev"),
        PathBuf::from,
    )
}

/// `(epoch ms, value)` of a NAB file (`timestamp,value`, UTC `YYYY-mm-dd HH:MM:SS`).
fn points(path: &Path) -> Vec<(i64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (t, v) = l.split_once(',').unwrap();
            let t = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_millis();
            (t, v.parse().unwrap())
        })
        .collect()
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .current_dir(dir)
        .env("AEGIS_DATABASE_URL", "sqlite::memory:")
        .env("AEGIS_JWT_SECRET", "replay-test-secret-replay-test-secret")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
}

#[test]
fn a_replayed_nab_series_opens_incidents_where_the_backtest_alarms() {
    let csv = nab().join("data").join(FILE);
    let dir = tempfile::tempdir().unwrap();
    let series = points(&csv);
    assert!(series.len() > 4_000);

    // The backtest's alarms: the first point of each run of anomalous points.
    let scores = dir.path().join("scores.csv");
    run(
        dir.path(),
        &[
            "backtest",
            "--input",
            csv.to_str().unwrap(),
            "--output",
            scores.to_str().unwrap(),
        ],
    );
    let flags: Vec<bool> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.ends_with(",1"))
        .collect();
    assert_eq!(flags.len(), series.len());
    let alarms: Vec<i64> = (0..flags.len())
        .filter(|i| flags[*i] && (*i == 0 || !flags[i - 1]))
        .map(|i| series[i].0)
        .collect();
    assert!(alarms.len() >= 3, "the backtest alarms: {alarms:?}");

    // The same points as a workload's CPU, the engine at the series' step: one slot, one
    // tick per point.
    let mut lines = vec![
        r#"{"settings":{"engine_tick_ms":300000,"engine_resolution_secs":300,"engine_window_secs":3600,"engine_baseline_secs":36000,"engine_warmup_secs":0,"engine_calm_ticks":1}}"#
            .to_owned(),
    ];
    for (t, v) in &series {
        lines.push(format!(
            r#"{{"at":{t},"labels":{{"__name__":"cpu_usage","namespace":"nab","deployment":"ec2-825cc2"}},"value":{v}}}"#
        ));
    }
    let telemetry = dir.path().join("telemetry.jsonl");
    std::fs::write(&telemetry, lines.join("\n")).unwrap();
    let report = dir.path().join("report.json");
    run(
        dir.path(),
        &[
            "replay",
            "--input",
            telemetry.to_str().unwrap(),
            "--output",
            report.to_str().unwrap(),
            "--max-span-days",
            "60",
        ],
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let at = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let raised: Vec<i64> = report["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(
                (&a["entity"], &a["metric"]),
                (&"nab/ec2-825cc2".into(), &"cpu_usage".into())
            );
            at(a)
        })
        .collect();
    let starts: Vec<i64> = raised
        .iter()
        .enumerate()
        .filter(|(i, t)| *i == 0 || raised[i - 1] != **t - 300_000)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(starts, alarms, "replay alarms against backtest alarms");
    // Incidents open on alarms only.
    for e in report["events"].as_array().unwrap() {
        if e["kind"] == "opened" {
            assert!(raised.contains(&at(e)), "an incident without an alarm: {e}");
        }
    }
}
