//! End to end with real components: a real Prometheus (Debian's package) scrapes a test
//! exporter whose values this test controls and remote-writes into `aegis serve`, which runs
//! in `kubernetes` mode against the fake API server. A sustained CPU spike on
//! `production/api` leads to exactly one scale action, audited; the same spike on
//! `kube-system/coredns` (allowed by the namespace list, refused by policy) leads to none.
//!
//! The stream detector judges a point against the series' own history, which takes a
//! few hundred points to settle: fifteen minutes of the workloads' past are written
//! first (remote write accepts a week of the past), as a replica restarted onto a
//! Prometheus with history would see.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aegis_ingest::remote_write::{SeriesData, encode_v1};
use common::{
    ADMIN_PASSWORD, KubeServe, free_port, http, http_raw, login, service_token, terminate,
    wait_healthy, which,
};
use serde_json::Value;

/// Serves `/metrics` in the Prometheus text format: CPU of one pod of `production/api` and
/// one of `kube-system/coredns`, normal with noise, or pinned while `spike` is set.
/// Seconds of history written before Prometheus starts.
const HISTORY_SECS: i64 = 900;

/// The two workloads' normal CPU for the last [`HISTORY_SECS`] seconds, one sample a
/// second, through remote write.
fn backfill(port: u16, token: &str) {
    let now = chrono::Utc::now().timestamp_millis();
    let series = |ns: &str, pod: &str, base: f64, k: i64| SeriesData {
        labels: vec![
            ("__name__".into(), "cpu_usage".into()),
            ("namespace".into(), ns.into()),
            ("pod".into(), pod.into()),
            (
                "container".into(),
                pod.split('-').next().unwrap_or(pod).into(),
            ),
        ],
        samples: (0..HISTORY_SECS)
            .map(|s| {
                let noise = ((s * 2_654_435_761 + k * 97) % 41) as f64 / 1000.0;
                (now - (HISTORY_SECS - s) * 1_000, base + noise)
            })
            .collect(),
    };
    let body = encode_v1(&[
        series("production", "api-7d4b9c8f6a-x2kqp", 0.30, 1),
        series("kube-system", "coredns-5d78c9869d-q7x2m", 0.20, 2),
    ]);
    let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    let auth = format!("Bearer {token}");
    let (status, _, answer) = http_raw(
        port,
        "POST",
        "/api/v1/write",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
        ],
        &body,
    )
    .unwrap();
    assert!(status < 300, "backfill: {status} {answer}");
}

fn exporter(spike: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let scrapes = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let n = scrapes.fetch_add(1, Ordering::Relaxed);
            // Deterministic noise, different per scrape.
            let noise = |k: u64| {
                ((n.wrapping_mul(2_654_435_761).wrapping_add(k * 97)) % 41) as f64 / 1000.0
            };
            let (api, dns) = if spike.load(Ordering::Relaxed) {
                (0.95 + noise(1) / 10.0, 0.95 + noise(2) / 10.0)
            } else {
                (0.30 + noise(1), 0.20 + noise(2))
            };
            let body = format!(
                "# TYPE cpu_usage gauge\n\
                 cpu_usage{{namespace=\"production\",pod=\"api-7d4b9c8f6a-x2kqp\",container=\"api\"}} {api}\n\
                 cpu_usage{{namespace=\"kube-system\",pod=\"coredns-5d78c9869d-q7x2m\",container=\"coredns\"}} {dns}\n"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn a_sustained_cpu_spike_scales_production_once_and_kube_system_never() {
    let prometheus = which("prometheus").unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is missing: `apt-get install prometheus` (scripts/test does this)"
        )
    });
    let kube = KubeServe::new(aegis_executor::testing::cluster_with_api());
    let cluster = &kube.cluster;
    let dir = &kube.dir;

    let spike = Arc::new(AtomicBool::new(false));
    let exporter_port = exporter(Arc::clone(&spike));
    let port = free_port();
    let prom_port = free_port();
    let mut server = kube
        .command(port)
        // kube-system is allowed by the executor's list: the policy engine must refuse it.
        .env("AEGIS_ALLOWED_NAMESPACES", "production,kube-system")
        // A fast engine: 1 s slots, a one-minute baseline, 15 s warm-up.
        .env("AEGIS_ENGINE_TICK_MS", "250")
        .env("AEGIS_ENGINE_RESOLUTION_SECS", "1")
        .env("AEGIS_ENGINE_WINDOW_SECS", "10")
        .env("AEGIS_ENGINE_BASELINE_SECS", "60")
        .env("AEGIS_ENGINE_WARMUP_SECS", "12")
        .env("AEGIS_ENGINE_WARMUP_ROWS", "24")
        .spawn()
        .unwrap();
    assert_eq!(wait_healthy(&mut server, port).0, 200);
    let admin = login(port, "ops@example.com", ADMIN_PASSWORD);
    let token = service_token(port, &admin, "prometheus");
    backfill(port, &token);
    let config = format!(
        r#"global:
  scrape_interval: 1s
scrape_configs:
  - job_name: workloads
    honor_labels: true
    static_configs: [{{targets: ["127.0.0.1:{exporter_port}"]}}]
remote_write:
  - url: http://127.0.0.1:{port}/api/v1/write
    authorization:
      credentials: {token}
    queue_config:
      batch_send_deadline: 500ms
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

    let stats = || {
        let (status, _, body) =
            http(port, "GET", "/api/v1/metrics/stats", Some(&admin), None).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["engine"].clone()
    };
    // Warm-up: both workloads seen, past their warm-up, and the model fitted.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let e = stats();
        if e["state"] == "ready" && e["warm_entities"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the engine did not warm up: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(stats()["entities"], 2);

    // The spike, sustained.
    spike.store(true, Ordering::Relaxed);
    let scale_calls = || kube.patches();
    let deadline = Instant::now() + Duration::from_secs(30);
    while scale_calls().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no action within 30 s: {}",
            stats()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Keep it up a while: still one action, and none in kube-system.
    std::thread::sleep(Duration::from_secs(8));
    spike.store(false, Ordering::Relaxed);
    let calls = scale_calls();
    assert_eq!(
        calls,
        vec!["/apis/apps/v1/namespaces/production/deployments/api/scale".to_owned()],
        "{calls:?}"
    );
    assert!(
        cluster
            .lock()
            .unwrap()
            .calls
            .iter()
            .all(|c| !c.path.contains("kube-system")),
        "nothing touched kube-system"
    );
    assert_eq!(
        cluster.lock().unwrap().deployments["api"]["spec"]["replicas"],
        4,
        "3 replicas plus one"
    );
    let e = stats();
    assert_eq!(e["actions"], 1, "{e}");
    assert!(
        e["decisions_denied"].as_u64().unwrap() >= 1,
        "kube-system was asked and denied: {e}"
    );

    // Audited: the intent and the result, by the engine.
    let (status, _, body) = http(port, "GET", "/audit/logs?limit=50", Some(&admin), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let audit: Value = serde_json::from_str(&body).unwrap();
    let rows = audit["logs"].as_array().unwrap().clone();
    let engine_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| r["actor"] == "aegis-engine")
        .collect();
    assert_eq!(engine_rows.len(), 2, "{body}");
    assert!(engine_rows.iter().any(|r| r["phase"] == "result"
        && r["status"] == "succeeded"
        && r["action"] == "scale_deployment"
        && r["namespace"] == "production"));
    // The decisions: allowed for production, denied for kube-system.
    let (status, _, body) = http(
        port,
        "GET",
        "/api/v1/policy/audit/logs?limit=50",
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cluster:production/deployment/api"), "{body}");
    assert!(
        body.contains("cluster:kube-system/deployment/coredns"),
        "{body}"
    );

    let _ = prom.kill();
    let _ = prom.wait();
    let (_, out) = terminate(server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
