//! Issue 28: `aegis logs templates` over a service log whose true templates are known: the
//! lines are grouped as they were written (grouping accuracy ≥ 0.99, the measure of the
//! log-parsing literature: a line counts when the set of lines grouped with it is exactly
//! the set written from its template), the counts add up, and each line's id is written.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_aegis");

/// Twelve templates of the kind a web service logs, with their variable parts (numbers,
/// durations, IPs, UUIDs, hex ids) filled from `r`.
fn line(template: usize, r: &mut impl FnMut() -> u64) -> String {
    let uuid = |r: &mut dyn FnMut() -> u64| {
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            r() as u32,
            r() as u16,
            r() % 0x1000,
            r() % 0x1000,
            r() % 0x1_0000_0000_0000
        )
    };
    let ip =
        |r: &mut dyn FnMut() -> u64| format!("10.{}.{}.{}", r() % 256, r() % 256, 1 + r() % 254);
    match template {
        0 => format!(
            "GET /api/v1/items/{} 200 {}ms",
            r() % 100_000,
            1 + r() % 900
        ),
        1 => format!("POST /api/v1/orders 201 {}ms", 1 + r() % 900),
        2 => format!("connection refused to db:{}", 5_000 + r() % 1_000),
        3 => format!("slow query took {}ms", 100 + r() % 5_000),
        4 => format!("user {} logged in from {}", uuid(r), ip(r)),
        5 => format!("cache miss for key session:{:016x}", r()),
        6 => format!(
            "worker {} finished job {} in {} ms",
            r() % 64,
            r() % 1_000_000,
            r() % 10_000
        ),
        7 => format!(
            "retrying request to http://{}:{}/health (attempt {} of 5)",
            ip(r),
            8_000 + r() % 100,
            1 + r() % 5
        ),
        8 => format!("payment {} declined: insufficient funds", uuid(r)),
        9 => format!(
            "upstream timed out after {} s while reading response header from {}",
            1 + r() % 60,
            ip(r)
        ),
        10 => "health check passed".to_owned(),
        _ => format!(
            "evicted {} keys from the cache in {} ms (memory at {}%)",
            r() % 10_000,
            r() % 500,
            50 + r() % 50
        ),
    }
}

#[test]
fn a_service_log_is_grouped_as_it_was_written() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut r = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut truth = Vec::new();
    let mut text = String::new();
    for _ in 0..3_000 {
        // Skewed, as real logs are: access lines dominate, errors are rare.
        let t = match r() % 100 {
            0..=39 => 0,
            40..=54 => 1,
            55..=59 => 10,
            x => 2 + (x as usize % 10).min(9),
        };
        truth.push(t);
        text.push_str(&line(t, &mut r));
        // Some lines end in CRLF, as files from Windows hosts do.
        if truth.len() % 7 == 0 {
            text.push('\r');
        }
        text.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("service.log");
    std::fs::write(&input, &text).unwrap();
    let output = dir.path().join("lines.json");
    let out = Command::new(BIN)
        .args(["logs", "templates", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3000 lines"), "{stderr}");
    // The templates on standard output: CSV, most frequent first, counts adding up.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut rows = stdout.lines();
    assert_eq!(rows.next(), Some("template_id,count,template"));
    let counts: Vec<u64> = rows
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 3_000);
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{stdout}");

    let written: Value = serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    let ids: Vec<u64> = written["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), truth.len());
    assert_eq!(written["templates"].as_array().unwrap().len(), counts.len());
    // Grouping accuracy.
    let groups = |labels: &[u64]| {
        let mut g: HashMap<u64, BTreeSet<usize>> = HashMap::new();
        for (i, l) in labels.iter().enumerate() {
            g.entry(*l).or_default().insert(i);
        }
        g
    };
    let truth: Vec<u64> = truth.iter().map(|t| *t as u64).collect();
    let (want, got) = (groups(&truth), groups(&ids));
    let correct = (0..ids.len())
        .filter(|i| want[&truth[*i]] == got[&ids[*i]])
        .count();
    let accuracy = correct as f64 / ids.len() as f64;
    eprintln!("grouping accuracy {accuracy:.4} ({} templates)", got.len());
    assert!(accuracy >= 0.99, "grouping accuracy {accuracy:.4}");
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(BIN)
        .args(["logs", "templates", "--input", "/nonexistent/app.log"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/app.log"), "{stderr}");
}
