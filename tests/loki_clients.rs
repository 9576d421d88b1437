//! Real Loki clients push into Aegis: `python-logging-loki` (JSON) and `winston-loki`
//! (protobuf + snappy, unsorted labels, no Content-Encoding header), both with HTTP Basic
//! auth whose password is a service token. `scripts/test` installs them into
//! `/var/tmp/aegis-venv` and `/var/tmp/aegis-node`.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{aegis, create_admin, free_port, http, login, service_token, terminate, wait_healthy};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";

fn tool(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing (set {var}; scripts/test installs it)"
    );
    path
}

#[test]
fn python_logging_loki_and_winston_loki_push_into_aegis() {
    let python = tool("AEGIS_TEST_PYTHON", "/var/tmp/aegis-venv/bin/python");
    let node_modules = tool(
        "AEGIS_TEST_NODE_MODULES",
        "/var/tmp/aegis-node/node_modules",
    );
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    assert!(
        create_admin(dir.path(), &db, "ops@example.com", PASSWORD)
            .status
            .success()
    );
    let port = free_port();
    let mut server = aegis(dir.path())
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", &db)
        .env("AEGIS_JWT_SECRET", "loki-secret-loki-secret-loki-secret-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait_healthy(&mut server, port).0, 200);
    let admin = login(port, "ops@example.com", PASSWORD);
    let token = service_token(port, &admin, "loki-clients");

    let py = format!(
        r#"
import logging, logging_loki
handler = logging_loki.LokiHandler(url="http://127.0.0.1:{port}/loki/api/v1/push",
    tags={{"app": "py-app"}}, auth=("aegis", "{token}"), version="1")
log = logging.getLogger("e2e"); log.addHandler(handler); log.setLevel(logging.INFO)
log.error("python says the database is down")
"#
    );
    let out = Command::new(&python).arg("-c").arg(py).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let js = format!(
        r#"
const winston = require("winston");
const LokiTransport = require("winston-loki");
const transport = new LokiTransport({{ host: "http://127.0.0.1:{port}", basicAuth: "aegis:{token}",
  labels: {{ zone: "eu", app: "node-app" }}, batching: false, json: false,
  onConnectionError: (e) => {{ console.error("loki error", e); process.exitCode = 1; }} }});
const logger = winston.createLogger({{ transports: [transport] }});
logger.error("node says the queue is stuck");
setTimeout(() => process.exit(process.exitCode || 0), 1500);
"#
    );
    let out = Command::new("node")
        .arg("-e")
        .arg(js)
        .env("NODE_PATH", &node_modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = http(port, "GET", "/api/v1/ingest/streams", Some(&admin), None).unwrap();
        let streams: Vec<Value> = serde_json::from_str(&body).unwrap();
        let py_ok = streams.iter().any(|s| s["app"] == "py-app");
        let node_ok = streams
            .iter()
            .any(|s| s["app"] == "node-app" && s["zone"] == "eu");
        if py_ok && node_ok {
            break;
        }
        assert!(Instant::now() < deadline, "streams so far: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, _, metrics) = http(port, "GET", "/metrics", None, None).unwrap();
    let lines: f64 = metrics
        .lines()
        .find(|l| l.starts_with(r#"aegis_ingest_log_lines_total{source="loki"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(lines >= 2.0, "{metrics}");
    terminate(server);
}
