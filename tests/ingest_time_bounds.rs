//! Issue 30 (and issue 27, attack 7): samples and log lines outside
//! `[now - max_sample_age, now + future_grace]`, and lines over `max_log_line_bytes`, are
//! refused one by one at ingest, counted in `aegis_ingest_rejected_total{reason}` and named
//! in a 400 (what Prometheus answers out-of-bounds samples, so no retry storm, and what
//! Loki answers refused entries), while the rest of the request is taken.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use aegis_ingest::remote_write::{SeriesData, encode_v1, encode_v2};
use common::{aegis, free_port, http, http_get, http_raw, terminate, wait_healthy};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const YEAR_MS: i64 = 365 * 86_400_000;

/// The message of an error answer (the JSON envelope's `error.message`).
fn message(answer: &str) -> String {
    serde_json::from_str::<Value>(answer).unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn write(port: u16, body: &[u8], v2: bool) -> (u16, String, String) {
    let content_type = if v2 {
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    } else {
        "application/x-protobuf"
    };
    let body = snap::raw::Encoder::new().compress_vec(body).unwrap();
    http_raw(
        port,
        "POST",
        "/api/v1/write",
        &[
            ("Authorization", "Bearer ingest-token"),
            ("Content-Type", content_type),
            ("Content-Encoding", "snappy"),
        ],
        &body,
    )
    .unwrap()
}

fn push(port: u16, body: &Value) -> (u16, String, String) {
    http_raw(
        port,
        "POST",
        "/loki/api/v1/push",
        &[
            ("Authorization", "Bearer ingest-token"),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

fn series(name: &str, samples: Vec<(i64, f64)>) -> Vec<SeriesData> {
    vec![SeriesData {
        labels: vec![
            ("__name__".into(), name.into()),
            ("namespace".into(), "shop".into()),
            ("pod".into(), "cart-7d9f-x1".into()),
        ],
        samples,
    }]
}

/// The value of the first `/metrics` line starting with `prefix`.
fn metric(port: u16, prefix: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics").unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The latest sample of series `name` as ingest saw it, once it is there.
fn latest(port: u16, admin: &str, name: &str, want_ms: i64) -> (i64, f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = http(
            port,
            "GET",
            &format!("/api/v1/ingest/series?name={name}"),
            Some(admin),
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if let Some(s) = v.as_array().and_then(|a| a.first()) {
            let at = (
                s["timestamp_ms"].as_i64().unwrap(),
                s["value"].as_f64().unwrap(),
            );
            if at.0 == want_ms || Instant::now() > deadline {
                return at;
            }
        }
        assert!(Instant::now() < deadline, "{name} never arrived: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn out_of_bounds_samples_and_lines_are_refused_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let mut child = aegis(dir.path())
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", &db)
        .env(
            "AEGIS_JWT_SECRET",
            "jwt-secret-jwt-secret-jwt-secret-jwt-secret",
        )
        .env("AEGIS_INGEST_TOKEN", "ingest-token")
        .env("AEGIS_ADMIN_EMAIL", "ops@example.com")
        .env("AEGIS_ADMIN_PASSWORD", PASSWORD)
        .env("AEGIS_MAX_LOG_LINE_BYTES", "4096")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");
    let admin = common::login(port, "ops@example.com", PASSWORD);
    let now = chrono::Utc::now().timestamp_millis();

    // Remote write 1.0: 99 samples in bounds and one a year ahead.
    let mut samples: Vec<(i64, f64)> = (0..99)
        .map(|i| (now - 99_000 + i * 1_000, i as f64))
        .collect();
    samples.insert(50, (now + YEAR_MS, 1e9));
    let (status, _, answer) = write(port, &encode_v1(&series("bounds_v1", samples)), false);
    assert_eq!(status, 400, "{answer}");
    let answer = message(&answer);
    assert!(answer.contains("out of bounds"), "{answer}");
    assert!(
        answer.contains(r#"__name__="bounds_v1""#) && answer.contains("future_grace"),
        "the answer names the sample: {answer}"
    );
    assert_eq!(
        metric(port, r#"aegis_ingest_samples_total{source="remote_write"}"#),
        Some(99.0)
    );
    assert_eq!(
        metric(
            port,
            r#"aegis_ingest_rejected_total{source="remote_write",reason="too_new"}"#
        ),
        Some(1.0)
    );
    // The 99 were taken: the newest of them is the series' latest, not the future one.
    assert_eq!(
        latest(port, &admin, "bounds_v1", now - 1_000),
        (now - 1_000, 98.0)
    );
    // The same series then takes the next in-bounds sample.
    let (status, _, answer) = write(
        port,
        &encode_v1(&series("bounds_v1", vec![(now, 99.0)])),
        false,
    );
    assert_eq!(status, 204, "{answer}");
    assert_eq!(latest(port, &admin, "bounds_v1", now), (now, 99.0));

    // Remote write 2.0: the written counts tell the sender what was taken.
    let samples = vec![(now - 2 * YEAR_MS, 1.0), (now - 1_000, 2.0), (now, 3.0)];
    let (status, head, answer) = write(port, &encode_v2(&series("bounds_v2", samples)), true);
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("max_sample_age"), "{answer}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-prometheus-remote-write-samples-written: 2"),
        "{head}"
    );
    assert_eq!(
        metric(
            port,
            r#"aegis_ingest_rejected_total{source="remote_write",reason="too_old"}"#
        ),
        Some(1.0)
    );

    // Loki push: a line stamped in 2033 is refused by name, nothing stored.
    let y2033 = "1988150400000000000";
    let (status, _, answer) = push(
        port,
        &json!({"streams": [{"stream": {"app": "future", "namespace": "shop"}, "values": [[y2033, "a line from the future"]]}]}),
    );
    assert_eq!(status, 400, "{answer}");
    let answer = message(&answer);
    assert!(
        answer.contains(r#"app="future""#) && answer.contains("2033-01-01"),
        "the answer names the entry: {answer}"
    );
    // Over the line cap: refused, the line beside it taken.
    let ns = (now * 1_000_000).to_string();
    let (status, _, answer) = push(
        port,
        &json!({"streams": [{"stream": {"app": "big"}, "values": [[ns, "x".repeat(5_000)], [ns, "a normal line"]]}]}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        message(&answer).contains("max_log_line_bytes is 4096"),
        "{answer}"
    );
    assert_eq!(
        metric(
            port,
            r#"aegis_ingest_rejected_total{source="loki",reason="too_new"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            port,
            r#"aegis_ingest_rejected_total{source="loki",reason="too_long"}"#
        ),
        Some(1.0)
    );
    let count = |sql: &str| {
        let body = json!({"sql": sql}).to_string();
        let (status, _, answer) =
            http(port, "POST", "/api/v1/query", Some(&admin), Some(&body)).unwrap();
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str::<Value>(&answer).unwrap()["rows"][0]["n"]
            .as_i64()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("SELECT count(*) AS n FROM logs WHERE line = 'a normal line'") == 0 {
        assert!(Instant::now() < deadline, "the normal line never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count(
            "SELECT count(*) AS n FROM logs WHERE line LIKE '%from the future%' OR length(line) > 4096"
        ),
        0
    );
    terminate(child);
}
