//! Alerts in, end to end with real parts: Debian's `prometheus` scrapes a metric this test
//! controls and evaluates an alerting rule on it; Debian's `prometheus-alertmanager` routes
//! the alert to `aegis serve`'s webhook (`POST /api/v1/alerts`, the ingest token as the
//! bearer), and Aegis, in `kubernetes` mode against the in-test fake API server, scales
//! the alert's Deployment — exactly once, although Alertmanager repeats the alert every
//! few seconds — with a decision record naming the alert. When the metric falls back,
//! the alert resolves and the incident closes. A second rule fires an alert naming no
//! workload: it is taken, counted, and acts on nothing. And the other way: Aegis tells the
//! same Alertmanager what it did (`alertmanager_url`), and Alertmanager's own route
//! delivers that "action carried out" alert to the team's receiver (a webhook here).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    ADMIN_PASSWORD, KubeServe, Receiver, free_port, http, login, terminate, wait_healthy, which,
};
use serde_json::Value;

const INGEST_TOKEN: &str = "alertmanager-ingest-token-0123456789abcdef";

/// Serves `/metrics`: the queue depth of `production/api`, whatever `depth` holds.
fn exporter(depth: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = format!(
                "# TYPE queue_depth gauge\nqueue_depth{{namespace=\"production\",deployment=\"api\"}} {}\n",
                depth.load(Ordering::Relaxed)
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

/// Starts `program` with `args`, output discarded.
fn spawn(program: &std::path::Path, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The value of the sample `name{labels}` in a Prometheus text exposition, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn an_alertmanager_alert_scales_its_deployment_once_and_closes_when_resolved() {
    let prometheus = which("prometheus").unwrap_or_else(|| {
        panic!("peer missing: prometheus — `apt-get install prometheus` (scripts/test does this)")
    });
    let alertmanager = which("prometheus-alertmanager").unwrap_or_else(|| {
        panic!(
            "peer missing: prometheus-alertmanager — `apt-get install prometheus-alertmanager` (scripts/test does this)"
        )
    });
    let kube = KubeServe::new(aegis_executor::testing::cluster_with_api());
    let dir = &kube.dir;
    let depth = Arc::new(AtomicU64::new(10));
    let exporter_port = exporter(Arc::clone(&depth));
    let (port, prom_port, am_port) = (free_port(), free_port(), free_port());
    // The team's own receiver (chat, paging…), where Alertmanager routes Aegis's alerts.
    let team = Receiver::start(0);
    let mut server = kube
        .command(port)
        .env("AEGIS_INGEST_TOKEN", INGEST_TOKEN)
        .env(
            "AEGIS_ALERT_ACTIONS",
            r#"QueueBacklog{severity=~"critical|page"}=scale_up; *{aegis_action="none"}=none"#,
        )
        .env("AEGIS_ENGINE_TICK_MS", "250")
        .env(
            "AEGIS_ALERTMANAGER_URL",
            format!("http://127.0.0.1:{am_port}"),
        )
        .spawn()
        .unwrap();
    assert_eq!(wait_healthy(&mut server, port).0, 200);
    let admin = login(port, "ops@example.com", ADMIN_PASSWORD);

    let am_config = format!(
        r#"route:
  receiver: aegis
  group_by: [alertname, namespace, deployment]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 2s
  routes:
    # What Aegis did goes to the team, as any alert would.
    - receiver: team
      matchers: ['aegis_event=~".+"']
      group_by: [alertname, aegis_key]
receivers:
  - name: team
    webhook_configs:
      - url: http://127.0.0.1:{team_port}/hook
  - name: aegis
    webhook_configs:
      - url: http://127.0.0.1:{port}/api/v1/alerts
        send_resolved: true
        http_config:
          authorization:
            credentials: {INGEST_TOKEN}
"#,
        team_port = team.port
    );
    std::fs::write(dir.path().join("alertmanager.yml"), am_config).unwrap();
    let mut am = spawn(
        &alertmanager,
        &[
            format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ),
            format!("--storage.path={}", dir.path().join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            // One instance: no gossip port to collide with other tests.
            "--cluster.listen-address=".to_owned(),
        ],
    );
    let rules = r#"groups:
  - name: workloads
    interval: 1s
    rules:
      - alert: QueueBacklog
        expr: queue_depth > 100
        labels: {severity: critical}
        annotations: {summary: "queue of {{ $labels.namespace }}/{{ $labels.deployment }} is {{ $value }} deep"}
      - alert: NodeDiskFilling
        expr: vector(1)
        labels: {severity: warning}
        annotations: {summary: "a node's disk is filling (no workload named)"}
"#;
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    let prom_config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]
scrape_configs:
  - job_name: workloads
    honor_labels: true
    static_configs: [{{targets: ["127.0.0.1:{exporter_port}"]}}]
"#,
        rules = dir.path().join("rules.yml").display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), prom_config).unwrap();
    let mut prom = spawn(
        &prometheus,
        &[
            format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            // Firing alerts go to Alertmanager every second, not every minute.
            "--rules.alert.resend-delay=1s".to_owned(),
        ],
    );

    let metrics = || {
        let (status, _, body) = http(port, "GET", "/metrics", None, None).unwrap();
        assert_eq!(status, 200);
        body
    };
    let alerts = |result: &str| {
        sample(
            &metrics(),
            &format!("aegis_alerts_total{{result=\"{result}\"}}"),
        )
    };
    let stats = || {
        let (status, _, body) =
            http(port, "GET", "/api/v1/metrics/stats", Some(&admin), None).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["engine"].clone()
    };
    let scale_calls = || kube.patches();

    // The alert naming no workload arrives first (it fires at once): taken, counted,
    // acted on by nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while alerts("no_workload") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no alert reached Aegis within 60 s:\n{}",
            metrics()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(scale_calls().is_empty(), "{:?}", scale_calls());

    // The backlog: Prometheus fires QueueBacklog, Alertmanager sends it, Aegis scales.
    depth.store(500, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while scale_calls().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no scale within 60 s: {}\n{}",
            stats(),
            metrics()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Alertmanager repeats the alert every 2 s: wait for three repeats, still one action.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alerts("duplicate") < 3.0 {
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not repeat the alert:\n{}",
            metrics()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        scale_calls(),
        vec!["/apis/apps/v1/namespaces/production/deployments/api/scale".to_owned()],
        "exactly one scale, although the alert was repeated"
    );
    assert_eq!(
        kube.cluster.lock().unwrap().deployments["api"]["spec"]["replicas"],
        4
    );
    assert_eq!(alerts("acted"), 1.0, "{}", metrics());
    assert_eq!(stats()["alert_incidents_open"], 1);

    // The decision record names the alert.
    let (status, _, body) = http(
        port,
        "GET",
        "/api/v1/decisions?entity=production/api",
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let records: Value = serde_json::from_str(&body).unwrap();
    let record = &records["records"][0]["record"];
    let alert = &record["evidence"]["alert"];
    assert_eq!(alert["alertname"], "QueueBacklog", "{record}");
    assert_eq!(alert["source"], "alertmanager");
    assert!(!alert["fingerprint"].as_str().unwrap().is_empty());
    assert_eq!(record["decision"]["decision"], "ALLOW", "{record}");
    assert_eq!(record["outcome"]["status"], "succeeded", "{record}");

    // Aegis told Alertmanager, whose route took it to the team: "action carried out".
    let deadline = Instant::now() + Duration::from_secs(30);
    let told = loop {
        let found = team.received().into_iter().find_map(|r| {
            let body: Value = serde_json::from_slice(&r.body).ok()?;
            body["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["labels"]["aegis_event"] == "action_succeeded")
                .cloned()
        });
        if let Some(alert) = found {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "the team's receiver got no action_succeeded alert: {:?}",
            team.received()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        told["labels"]["alertname"], "AegisActionSucceeded",
        "{told}"
    );
    assert_eq!(told["labels"]["namespace"], "production");
    assert_eq!(told["labels"]["workload"], "api");
    assert_eq!(told["labels"]["action"], "scale_deployment");
    assert_eq!(told["labels"]["severity"], "info");
    assert!(
        told["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("scale_deployment")
    );

    // The backlog drains: the alert resolves and the incident closes.
    depth.store(10, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats();
        if s["alert_incidents_open"] == 0 && s["alert_incidents_closed"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the incident did not close: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(alerts("resolved") >= 1.0);
    assert_eq!(scale_calls().len(), 1);

    for child in [&mut prom, &mut am] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (_, out) = terminate(server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
