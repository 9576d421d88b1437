//! `aegis backtest` on a recorded CPU series with a known incident, as a user runs it.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_aegis");

/// Three days of CPU at one point a minute, +30 for one hour (`incident`, in minutes).
fn cpu(incident: std::ops::Range<usize>, phase: f64) -> Vec<f64> {
    let seed = 0x9E37_79B9_7F4A_7C15u64 ^ phase.to_bits();
    aegis_detectors::synthetic::cpu_series(3 * 1440, incident, phase, seed)
}

fn time(minute: usize) -> String {
    (chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z").unwrap()
        + chrono::Duration::minutes(minute as i64))
    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The detector alarms once per incident, at its start: a flag in the incident's first ten
/// minutes, and at most two false alarms over three normal days (4,320 points) (outside the incident and the
/// hour after it, whose end is a change too).
fn assert_incident_alarms_at_start(flags: &[bool], incident: std::ops::Range<usize>) {
    let flagged: Vec<usize> = (0..flags.len()).filter(|i| flags[*i]).collect();
    assert!(
        flagged
            .iter()
            .any(|i| (incident.start..incident.start + 10).contains(i)),
        "the incident is flagged in its first ten minutes: {flagged:?}"
    );
    let false_alarms = flagged
        .iter()
        .filter(|i| !(incident.start..incident.end + 60).contains(*i))
        .count();
    assert!(false_alarms <= 2, "false alarms: {flagged:?}");
}

#[test]
fn the_incident_window_scores_above_every_normal_stretch() {
    let dir = tempfile::tempdir().unwrap();
    let incident = 2000..2060;
    let series = cpu(incident.clone(), 0.0);
    // Rows slightly out of order, as recordings are: event time must be restored.
    let mut order: Vec<usize> = (0..series.len()).collect();
    for pair in order.chunks_mut(7) {
        pair.reverse();
    }
    let mut csv = String::from("timestamp,value\n");
    for &m in &order {
        csv.push_str(&format!("{},{:.3}\n", time(m), series[m]));
    }
    let input = dir.path().join("cpu.csv");
    let output = dir.path().join("scores.csv");
    std::fs::write(&input, csv).unwrap();
    let out = Command::new(BIN)
        .args([
            "backtest",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("timestamp,value,anomaly_score,is_anomaly")
    );
    // One row per input row, in input order; put the scores back in time order.
    let mut by_minute = vec![f64::NAN; series.len()];
    let mut flags = vec![false; series.len()];
    for (line, &m) in lines.zip(&order) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], time(m));
        by_minute[m] = cells[2].parse().unwrap();
        flags[m] = cells[3] == "1";
    }
    assert!(by_minute.iter().all(|s| (0.0..=1.0).contains(s)));
    assert_incident_alarms_at_start(&flags, incident);
}

#[test]
fn several_series_are_scored_separately_and_bad_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (cpu(3000..3060, 0.0), cpu(9_999..9_999, 1.0));
    let mut csv = String::from("timestamp,series,value\n");
    for m in 0..a.len() {
        // Epoch seconds this time.
        let t = 1_795_000_000 + m as i64 * 60;
        csv.push_str(&format!("{t},api,{:.3}\n{t},worker,{:.3}\n", a[m], b[m]));
    }
    let input = dir.path().join("two.csv");
    std::fs::write(&input, csv).unwrap();
    let out = Command::new(BIN)
        .args([
            "backtest",
            "--input",
            input.to_str().unwrap(),
            "--output",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<bool> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap() == "1")
        .collect();
    assert_eq!(rows.len(), 2 * a.len());
    let api: Vec<bool> = rows.iter().step_by(2).copied().collect();
    assert_incident_alarms_at_start(&api, 3000..3060);
    let worker_alarms = rows.iter().skip(1).step_by(2).filter(|f| **f).count();
    assert!(
        worker_alarms <= 2,
        "the healthy series: {worker_alarms} alarms"
    );

    std::fs::write(
        &input,
        "timestamp,value\n2026-11-20T00:00:00Z,1\nyesterday,2\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "backtest",
            "--input",
            input.to_str().unwrap(),
            "--output",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("two.csv:3: `yesterday` is not a time"),
        "{err}"
    );
    std::fs::write(&input, "time,v\n1,2\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "backtest",
            "--input",
            input.to_str().unwrap(),
            "--output",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn nab_dev() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval-data/nab-dev")
}

/// The `standard` optimised score printed by a scoring run.
fn standard_score(stdout: &str, which: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("standard") && l.contains(which))
        .unwrap_or_else(|| panic!("no standard {which} line in {stdout}"));
    let after = line.split("score").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn backtest_score_reproduces_the_published_numenta_figure() {
    let d = nab_dev();
    let out = Command::new(BIN)
        .args(["backtest", "score", "--data"])
        .arg(d.join("data"))
        .arg("--results")
        .arg(d.join("reference-results/numenta"))
        .arg("--labels")
        .arg(d.join("labels/combined_windows.json"))
        .arg("--profiles")
        .arg(d.join("profiles.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        (standard_score(&stdout, "optimised") - 75.86).abs() < 0.005,
        "{stdout}"
    );
    assert!(stdout.contains("reward_low_FN_rate"), "{stdout}");
}

/// The detector's judgement on the NAB development split, as a user runs it: one folder,
/// default settings, labels only for scoring. Guards the figure in BENCHMARKS.md.
#[test]
fn backtest_of_the_nab_development_split_scores_at_least_70() {
    let d = nab_dev();
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["backtest", "--input"])
        .arg(d.join("data"))
        .arg("--output")
        .arg(out_dir.path())
        .arg("--labels")
        .arg(d.join("labels/combined_windows.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let best = standard_score(&stdout, "optimised");
    let default = standard_score(&stdout, "default");
    assert!(best >= 70.0, "standard {best}\n{stdout}");
    assert!(
        best - default <= 5.0,
        "default threshold {default} vs optimised {best}"
    );
    // Results mirror the input's layout, one row per input row.
    let mirrored = out_dir.path().join("realTraffic/speed_7578.csv");
    let input = d.join("data/realTraffic/speed_7578.csv");
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!(lines(&mirrored), lines(&input));
}

#[test]
fn nab_timestamps_a_bom_quoting_and_crlf_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let series = cpu(600..620, 0.0);
    let mut csv = String::from("\u{feff}\"timestamp\",\"value\"\r\n");
    for (m, v) in series.iter().enumerate().take(1000) {
        let t = chrono::DateTime::from_timestamp(1_396_310_400 + m as i64 * 60, 0).unwrap();
        csv.push_str(&format!("\"{}\",{v:.3}\r\n", t.format("%Y-%m-%d %H:%M:%S")));
    }
    let input = dir.path().join("nab.csv");
    std::fs::write(&input, csv).unwrap();
    let out = Command::new(BIN)
        .args([
            "backtest",
            "--input",
            input.to_str().unwrap(),
            "--output",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1001);
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("2014-04-01 00:00:00,"),
        "{text:.200}"
    );
}
