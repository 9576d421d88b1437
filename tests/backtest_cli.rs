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

/// Mean score of each hour-long stretch; asserts the incident's beats every normal one.
fn assert_incident_stands_out(scores: &[f64], incident: std::ops::Range<usize>) {
    let mean = |s: usize| scores[s..s + 60].iter().sum::<f64>() / 60.0;
    let at = mean(incident.start);
    let worst = (0..=scores.len() - 60)
        .filter(|s| s + 60 <= incident.start || *s >= incident.end)
        .map(mean)
        .fold(0.0, f64::max);
    assert!(
        at > worst,
        "incident hour {at:.3}, worst normal hour {worst:.3}"
    );
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
    for (line, &m) in lines.zip(&order) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], time(m));
        by_minute[m] = cells[2].parse().unwrap();
    }
    assert!(by_minute.iter().all(|s| s.is_finite()));
    assert_incident_stands_out(&by_minute, incident.clone());
    let flagged_in_incident = text
        .lines()
        .skip(1)
        .zip(&order)
        .filter(|(l, m)| incident.contains(m) && l.ends_with(",1"))
        .count();
    assert!(
        flagged_in_incident >= 20,
        "{flagged_in_incident} of 60 incident minutes flagged"
    );
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
    let rows: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rows.len(), 2 * a.len());
    let api: Vec<f64> = rows.iter().step_by(2).copied().collect();
    assert_incident_stands_out(&api, 3000..3060);

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
