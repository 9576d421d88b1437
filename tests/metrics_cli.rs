//! After each subsystem has done something, `/metrics` exports every metric name that
//! CONTRACT.md promises.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::io::{Read, Write};
use std::process::Stdio;

use aegis_executor::signature;
use aegis_ingest::remote_write::{SeriesData, encode_v1};
use common::{aegis, free_port, http, terminate, wait_healthy};

const SECRET: &str = "action-secret-action-secret-action-secret";
const PASSWORD: &str = "correct horse battery staple";

/// The names of CONTRACT.md, "Metrics".
const CONTRACT: [&str; 12] = [
    "aegis_ingest_samples_total",
    "aegis_ingest_log_lines_total",
    "aegis_ingest_rejected_total",
    "aegis_http_requests_total",
    "aegis_http_request_duration_seconds",
    "aegis_auth_attempts_total",
    "aegis_policy_evaluations_total",
    "aegis_policy_evaluation_duration_seconds",
    "aegis_detections_total",
    "aegis_inference_duration_seconds",
    "aegis_actions_total",
    "aegis_action_duration_seconds",
];

fn raw(port: u16, head: &str, body: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        format!(
            "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn every_contract_metric_is_exported_after_each_subsystem_ran() {
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
        .env("AEGIS_ACTION_SECRET", SECRET)
        .env("AEGIS_INGEST_TOKEN", "ingest-token")
        .env("AEGIS_ADMIN_EMAIL", "ops@example.com")
        .env("AEGIS_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");

    // Auth: one success, one failure.
    let admin = common::login(port, "ops@example.com", PASSWORD);
    let wrong = serde_json::json!({"email": "ops@example.com", "password": "wrong password here"})
        .to_string();
    let (status, _, _) = http(port, "POST", "/api/v1/auth/login", None, Some(&wrong)).unwrap();
    assert_eq!(status, 401);
    // Policy.
    let eval = r#"{"action":"scale_up","resource":"cluster:production","type":"self_healing","context":{"role":"service"}}"#;
    let (status, _, body) = http(
        port,
        "POST",
        "/api/v1/policy/evaluate",
        Some(&admin),
        Some(eval),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Ingest: remote write, a rejected body, a Loki push.
    let series = vec![SeriesData {
        labels: vec![
            ("__name__".into(), "up".into()),
            ("job".into(), "test".into()),
        ],
        samples: vec![(chrono::Utc::now().timestamp_millis(), 1.0)],
    }];
    let body = snap::raw::Encoder::new()
        .compress_vec(&encode_v1(&series))
        .unwrap();
    let head = "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ingest-token\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n";
    let answer = raw(port, head, &body);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let answer = raw(port, head, b"not snappy at all");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let now_ns = chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap()
        .to_string();
    let push =
        serde_json::json!({"streams": [{"stream": {"app": "api"}, "values": [[now_ns, "hello"]]}]})
            .to_string();
    let answer = raw(
        port,
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ingest-token\r\nContent-Type: application/json\r\n",
        push.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    // Detectors: a clear anomaly.
    let hot = serde_json::json!({"features": {"cpu_usage": 0.99, "cpu_max": 1.0, "latency_p99_ms": 9000.0, "latency_ratio": 12.0,
        "request_rate_ratio": 5.0, "error_rate": 0.3, "memory_usage": 0.97, "memory_slope": 0.05, "log_error_rate": 0.6, "log_warn_rate": 0.5}})
    .to_string();
    let (status, _, body) = http(
        port,
        "POST",
        "/api/v1/detect-anomaly",
        Some(&admin),
        Some(&hot),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"is_anomaly\":true"), "{body}");
    // Executor: a signed dry-run scale.
    let action = serde_json::json!({"action": "scale_deployment", "namespace": "production", "target": "api",
        "params": {"replicas": 3}, "timestamp": chrono::Utc::now(), "nonce": "metrics-1"})
    .to_string();
    let sig = signature::sign(SECRET.as_bytes(), action.as_bytes());
    let answer = raw(
        port,
        &format!(
            "POST /executor/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Aegis-Signature: {sig}\r\n"
        ),
        action.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let (status, metrics) = common::http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let missing: Vec<&str> = CONTRACT
        .iter()
        .filter(|name| {
            !metrics
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(*name))
        })
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "missing from /metrics: {missing:?}\n{metrics}"
    );
    // Process metrics and build info.
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "aegis_build_info{",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing"
        );
    }
    let rss: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(rss > 1e6 && rss < 4e9, "rss {rss}");
    // Histograms are histograms (latency buckets), not bare gauges.
    for h in [
        "aegis_http_request_duration_seconds",
        "aegis_inference_duration_seconds",
        "aegis_action_duration_seconds",
    ] {
        assert!(
            metrics.contains(&format!("{h}_bucket")),
            "{h} has no buckets"
        );
    }
    // Every series a dashboard panel queries is one `/metrics` really exports.
    let dashboard: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/aegis.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("aegis_"))
            {
                queried += 1;
                assert!(
                    metrics.lines().any(|l| !l.starts_with('#')
                        && (l.starts_with(&format!("{name}{{"))
                            || l.starts_with(&format!("{name} ")))),
                    "panel `{}` queries `{name}`, which /metrics does not export",
                    panel["title"]
                );
            }
        }
    }
    assert!(queried >= 12, "{queried}");
    let (_, out) = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 28: a scrape right after start lists every CONTRACT.md family (at zero for the
/// label sets known in advance), so dashboards and alerts start from 0, not "no data".
#[test]
fn every_contract_family_is_exported_at_the_first_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let mut child = aegis(dir.path())
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", &db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");
    let (status, text) = common::http_get(port, "/metrics").unwrap();
    terminate(child);
    assert_eq!(status, 200);
    let missing: Vec<&str> = CONTRACT
        .iter()
        .copied()
        .filter(|name| !text.lines().any(|l| l.starts_with(name)))
        .collect();
    assert!(
        missing.is_empty(),
        "missing at the first scrape: {missing:?}\n{text}"
    );
    for line in [
        r#"aegis_actions_total{action="restart_pod",namespace="production",status="succeeded"} 0"#,
        r#"aegis_detections_total{detector="engine",severity="critical"} 0"#,
        r#"aegis_policy_evaluations_total{type="self_healing",decision="DENY"} 0"#,
        r#"aegis_ingest_rejected_total{source="remote_write",reason="too_new"} 0"#,
        // What the alert rules of deploy/prometheus/aegis-rules.yaml read.
        "aegis_engine_leader 1",
        "aegis_audit_queue_depth 0",
        "aegis_audit_writer_stalled_seconds 0",
        "aegis_policy_emergency_stop 0",
        "aegis_breaker_trips_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}`:\n{text}");
    }
}
