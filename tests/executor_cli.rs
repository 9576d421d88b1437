//! The executor across a crash: `aegis serve` in Kubernetes mode against the fake API
//! server, killed (SIGKILL) while the cluster hangs mid-action; the next start marks the
//! interrupted intent `unknown`.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use aegis_executor::{signature, testing as fake_kube};
use aegis_store::{ActionAuditQuery, ExecutorStore, Store, StoreOptions};
use common::{aegis, free_port, http, terminate, wait_healthy};

const SECRET: &str = "action-secret-action-secret-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_between_intent_and_result_is_reported_unknown_on_the_next_start() {
    let mut cluster = fake_kube::cluster_with_api();
    cluster.hang_writes = true;
    let (url, shared) = fake_kube::start(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake_kube::kubeconfig(&url)).unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let start = || {
        let port = free_port();
        let mut child = aegis(dir.path())
            .arg("serve")
            .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
            .env("AEGIS_DATABASE_URL", &db)
            .env("AEGIS_EXECUTOR_MODE", "kubernetes")
            .env("AEGIS_KUBECONFIG_PATH", &kubeconfig)
            .env("AEGIS_ACTION_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, body) = wait_healthy(&mut child, port);
        assert_eq!(status, 200, "{body}");
        (child, port)
    };

    let (mut child, port) = start();
    // The default policies let the self-healing loop (a signed request: role service) scale.
    let body = serde_json::json!({"action": "scale_deployment", "namespace": "production", "target": "api",
        "params": {"replicas": 4}, "timestamp": chrono::Utc::now(), "nonce": "crash-1"})
    .to_string();
    let sig = signature::sign(SECRET.as_bytes(), body.as_bytes());
    let request = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::Write;
        write!(stream, "POST /executor/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Aegis-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        // The answer never comes: the process dies first.
        let _ = std::io::Read::read(&mut stream, &mut [0u8; 16]);
    });
    // Wait until the executor is inside the PATCH (the intent is committed by then).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !shared
        .lock()
        .unwrap()
        .calls
        .iter()
        .any(|c| c.method == "PATCH")
    {
        assert!(
            Instant::now() < deadline,
            "the executor never called the API"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = request.join();

    let store = Store::connect(&db, &StoreOptions::default()).await.unwrap();
    let pending = store.pending_intents().await.unwrap();
    assert_eq!(pending.len(), 1, "the intent is there, the result is not");
    store.close().await;

    let (child, port) = start();
    let (status, _, _) = http(port, "GET", "/health", None, None).unwrap();
    assert_eq!(status, 200);
    let out = terminate(child);
    let log = String::from_utf8_lossy(&out.1.stderr).into_owned();
    assert!(log.contains("marked unknown"), "{log}");

    let store = Store::connect(&db, &StoreOptions::default()).await.unwrap();
    assert!(store.pending_intents().await.unwrap().is_empty());
    let unknown = store
        .list_action_audit(&ActionAuditQuery {
            status: Some("unknown".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].action_id, pending[0].action_id);
    store.close().await;
}
