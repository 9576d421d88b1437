//! A real Prometheus (Debian's package; `scripts/test` installs it) scrapes itself and Aegis and
//! remote-writes into Aegis with a service token; within 30 s Aegis holds those series with
//! the right labels and values.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    aegis, create_admin, free_port, http, login, service_token, terminate, wait_healthy, which,
};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";

#[test]
fn prometheus_remote_writes_into_aegis() {
    let prometheus = which("prometheus").unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is missing: `apt-get install prometheus` (scripts/test does this)"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());

    assert!(
        create_admin(dir.path(), &db, "ops@example.com", PASSWORD)
            .status
            .success()
    );

    let port = free_port();
    let prom_port = free_port();
    let mut server = aegis(dir.path())
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", &db)
        .env("AEGIS_JWT_SECRET", "e2e-secret-e2e-secret-e2e-secret-42")
        // Pull mode too: poll the same Prometheus's query_range every second.
        .env(
            "AEGIS_PROMETHEUS_URL",
            format!("http://127.0.0.1:{prom_port}"),
        )
        .env("AEGIS_PROMETHEUS_QUERIES", "up")
        .env("AEGIS_PULL_INTERVAL_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait_healthy(&mut server, port).0, 200);

    let admin = login(port, "ops@example.com", PASSWORD);
    let token = service_token(port, &admin, "prometheus");

    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels:
    cluster: e2e
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["127.0.0.1:{prom_port}"]}}]
  - job_name: aegis
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
remote_write:
  - url: http://127.0.0.1:{port}/api/v1/write
    authorization:
      credentials: {token}
    queue_config:
      batch_send_deadline: 1s
"#
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let mut prom = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let (status, _, body) = http(
            port,
            "GET",
            "/api/v1/ingest/series?name=up",
            Some(&admin),
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let series: Vec<Value> = serde_json::from_str(&body).unwrap();
        let jobs: Vec<&str> = series
            .iter()
            .filter_map(|s| s["labels"]["job"].as_str())
            .collect();
        if jobs.contains(&"prometheus") && jobs.contains(&"aegis") {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "no `up` series for both jobs within 30 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // Pull mode read `up` back through query_range.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, metrics) = http(port, "GET", "/metrics", None, None).unwrap();
        if metrics.contains(r#"aegis_ingest_samples_total{source="prometheus_pull"}"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pull mode read nothing: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Aegis's own metrics came back through Prometheus, labels intact. One scrape's samples
    // go out in several remote-write batches, so the `/health` series may come a batch
    // later than the others: waited for while Prometheus still runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = http(
            port,
            "GET",
            "/api/v1/ingest/series?name=aegis_http_requests_total",
            Some(&admin),
            None,
        )
        .unwrap();
        let series: Vec<Value> = serde_json::from_str(&body).unwrap();
        if series
            .iter()
            .any(|s| s["labels"]["route"] == "/health" && s["labels"]["job"] == "aegis")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = prom.kill();
    let _ = prom.wait();

    for s in found.iter().filter(|s| s["labels"]["cluster"] == "e2e") {
        assert_eq!(s["value"], 1.0, "{s}");
        assert_eq!(s["labels"]["cluster"], "e2e", "external labels arrive: {s}");
        let instance = s["labels"]["instance"].as_str().unwrap();
        let expected = if s["labels"]["job"] == "aegis" {
            port
        } else {
            prom_port
        };
        assert_eq!(instance, format!("127.0.0.1:{expected}"), "{s}");
        let age = chrono::Utc::now().timestamp_millis() - s["timestamp_ms"].as_i64().unwrap();
        assert!((0..60_000).contains(&age), "a recent timestamp: {s}");
    }
    let (_, _, metrics) = http(port, "GET", "/metrics", None, None).unwrap();
    assert!(
        metrics.contains(r#"aegis_ingest_samples_total{source="remote_write"}"#),
        "{metrics}"
    );
    terminate(server);
}
