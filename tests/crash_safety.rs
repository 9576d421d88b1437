//! Crash safety: `aegis serve` under load (signed actions against the fake Kubernetes API,
//! policy decisions, Loki ingest) killed with SIGKILL again and again, at random moments
//! and in the middle of actions (between intent and result), then restarted. Clients retry
//! what was not answered, as real ones do (actions with their idempotency key). Afterwards:
//! every answered action has its intent and result, every answered decision its audit row,
//! no intent is left without a result, `aegis audit verify` passes, and no deployment was
//! changed twice. On SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_executor::{signature, testing as fake_kube};
use aegis_store::{ActionAuditQuery, ExecutorStore, Store, StoreOptions};
use common::{FreshDb, aegis, free_port, http_raw, terminate, wait_healthy};
use serde_json::{Value, json};

const ACTION_SECRET: &str = "crash-safety-action-secret-0123456789abcdef";
const JWT_SECRET: &str = "crash-safety-jwt-secret-0123456789abcdef";
const INGEST_TOKEN: &str = "crash-safety-ingest-token-0123456789";
const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple 43";
/// Deployments in the fake cluster; each action request changes its own one.
const DEPLOYMENTS: usize = 3_000;
const ROUNDS: usize = 8;

/// A small deterministic generator for the kill times (the seed is printed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn start(dir: &Path, db: &str, kubeconfig: &Path) -> (Child, u16) {
    let port = free_port();
    let mut child = aegis(dir)
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", db)
        .env("AEGIS_EXECUTOR_MODE", "kubernetes")
        .env("AEGIS_KUBECONFIG_PATH", kubeconfig)
        .env("AEGIS_ACTION_SECRET", ACTION_SECRET)
        .env("AEGIS_JWT_SECRET", JWT_SECRET)
        .env("AEGIS_INGEST_TOKEN", INGEST_TOKEN)
        .env("AEGIS_ADMIN_EMAIL", ADMIN)
        .env("AEGIS_ADMIN_PASSWORD", PASSWORD)
        .env("AEGIS_EXECUTOR_COOLDOWN_SECS", "0")
        .env("AEGIS_EXECUTOR_BLAST_RADIUS", "1000000")
        .env("AEGIS_EXECUTOR_RATE_LIMIT_PER_MINUTE", "1000000")
        .env("AEGIS_RATE_LIMIT_PER_MINUTE", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");
    (child, port)
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Action request number → the action id answered.
    actions: BTreeMap<usize, String>,
    /// Action requests answered 409 on a retry: started before a crash, no result.
    interrupted: BTreeSet<usize>,
    /// Requests of any kind that met a dead server and were retried.
    retries: usize,
    /// Request ids of answered decisions.
    decisions: BTreeSet<String>,
    /// Loki pushes answered 204.
    pushes: usize,
}

/// Sends until the server answers (it may be dead or starting); the status and body.
fn until_answered(
    port: &AtomicU16,
    seen: &Mutex<Seen>,
    mut send: impl FnMut(u16) -> std::io::Result<(u16, String, String)>,
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match send(port.load(Ordering::SeqCst)) {
            Ok((status, _, body)) if status != 0 && status != 503 => return (status, body),
            _ => {
                seen.lock().unwrap().retries += 1;
                assert!(Instant::now() < deadline, "no answer for 120 s");
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }
}

fn action_client(port: Arc<AtomicU16>, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    for i in 0..DEPLOYMENTS {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut attempt = 0;
        let (status, body) = until_answered(&port, &seen, |p| {
            attempt += 1;
            // A retry is a new request (fresh nonce and timestamp, signed again) with the
            // same idempotency key, as a real client retries.
            let body = json!({"action": "scale_deployment", "namespace": "production",
                "target": format!("deployment/d{i}"), "params": {"replicas": 4},
                "reason": "crash safety", "timestamp": chrono::Utc::now(),
                "nonce": uuid::Uuid::new_v4().to_string(), "idempotency_key": format!("crash-{i}")})
            .to_string();
            let sig = signature::sign(ACTION_SECRET.as_bytes(), body.as_bytes());
            http_raw(
                p,
                "POST",
                "/executor/execute",
                &[
                    ("Content-Type", "application/json"),
                    ("X-Aegis-Signature", &sig),
                ],
                body.as_bytes(),
            )
        });
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        match status {
            200 => {
                assert_eq!(v["status"], "succeeded", "{body}");
                let id = v["id"].as_str().unwrap().to_owned();
                seen.lock().unwrap().actions.insert(i, id);
            }
            409 if attempt > 1 => {
                assert!(
                    body.contains("not run again"),
                    "a 409 that is not an interrupted action: {body}"
                );
                seen.lock().unwrap().interrupted.insert(i);
            }
            _ => panic!("action {i} (attempt {attempt}): {status} {body}"),
        }
    }
}

fn decision_client(
    port: Arc<AtomicU16>,
    token: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let auth = format!("Bearer {token}");
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let request_id = format!("crash-decision-{i}");
        let body = json!({"action": "scale_up", "resource": "cluster:production", "type": "self_healing",
            "context": {"user_id": "ai-engine", "role": "service", "metadata": {"severity": "high", "n": i}}})
        .to_string();
        let (status, answer) = until_answered(&port, &seen, |p| {
            http_raw(
                p,
                "POST",
                "/api/v1/policy/evaluate",
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &auth),
                    ("X-Request-Id", &request_id),
                ],
                body.as_bytes(),
            )
        });
        assert_eq!(status, 200, "{answer}");
        seen.lock().unwrap().decisions.insert(request_id);
    }
}

fn ingest_client(port: Arc<AtomicU16>, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let auth = format!("Bearer {INGEST_TOKEN}");
    for i in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let values: Vec<Value> = (0..50)
            .map(|k| {
                json!([
                    (ns + k).to_string(),
                    format!("level=info msg=\"request {i}.{k} served\"")
                ])
            })
            .collect();
        let body = json!({"streams": [{"stream": {"namespace": "production", "app": "api", "pod": "api-1"},
            "values": values}]})
        .to_string();
        let (status, answer) = until_answered(&port, &seen, |p| {
            http_raw(
                p,
                "POST",
                "/loki/api/v1/push",
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &auth),
                ],
                body.as_bytes(),
            )
        });
        assert_eq!(status, 204, "{answer}");
        seen.lock().unwrap().pushes += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn crash_again_and_again(db: &str, backend: &str) {
    let mut cluster = fake_kube::Cluster {
        // Room for a kill between the intent and the result of an action.
        write_delay: Some(Duration::from_millis(40)),
        ..Default::default()
    };
    for i in 0..DEPLOYMENTS {
        fake_kube::add_deployment(&mut cluster, &format!("d{i}"));
    }
    let (url, shared) = fake_kube::start(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake_kube::kubeconfig(&url)).unwrap();

    let seed = chrono::Utc::now().timestamp_subsec_nanos() as u64;
    println!("{backend}: kill-time seed {seed}");
    let mut rng = Lcg(seed);
    let patches = || {
        shared
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == "PATCH")
            .count()
    };

    let (mut child, first_port) = start(dir.path(), db, &kubeconfig);
    let token = common::login(first_port, ADMIN, PASSWORD);
    let port = Arc::new(AtomicU16::new(first_port));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients = vec![
        {
            let (port, stop, seen) = (port.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || action_client(port, stop, seen))
        },
        {
            let (port, stop, seen) = (port.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || decision_client(port, token, stop, seen))
        },
        {
            let (port, stop, seen) = (port.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || ingest_client(port, stop, seen))
        },
    ];

    let mut mid_action = 0;
    for round in 0..ROUNDS {
        if round % 2 == 1 {
            // Mid-action: the moment the fake API receives a new PATCH, the intent is
            // committed and the result is not.
            let before = patches();
            let deadline = Instant::now() + Duration::from_secs(20);
            while patches() == before {
                assert!(Instant::now() < deadline, "no action reached the cluster");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            mid_action += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200 + rng.next(1_300))).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let (next, next_port) = start(dir.path(), db, &kubeconfig);
        child = next;
        port.store(next_port, Ordering::SeqCst);
    }
    // Load a little longer on the last start, then let every client finish its request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let (_, output) = terminate(child);
    assert!(output.status.success(), "{backend}: {:?}", output.status);

    // Every client has finished: the record is final.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let store = Store::connect(db, &StoreOptions::default()).await.unwrap();
    assert!(
        store.pending_intents().await.unwrap().is_empty(),
        "{backend}: an intent is left without a result"
    );
    let rows = store
        .list_action_audit(&ActionAuditQuery {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut phases: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for r in &rows {
        phases
            .entry(r.action_id.as_str())
            .or_default()
            .push((r.phase.as_str(), r.status.as_str()));
    }
    for (i, id) in &seen.actions {
        let got = phases.get(id.as_str()).cloned().unwrap_or_default();
        assert!(
            got.contains(&("intent", "pending")) && got.contains(&("result", "succeeded")),
            "{backend}: answered action {i} ({id}) lacks its rows: {got:?}"
        );
    }
    let unknown = rows.iter().filter(|r| r.status == "unknown").count();
    let decisions = common::recorded_request_ids(db).await;
    let lost: Vec<&String> = seen.decisions.difference(&decisions).collect();
    assert!(
        lost.is_empty(),
        "{backend}: {} answered decisions have no audit row: {lost:?}",
        lost.len()
    );
    // No deployment was changed twice: one request each, retries included.
    let mut per_target: BTreeMap<String, usize> = BTreeMap::new();
    for call in shared
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.method == "PATCH")
    {
        *per_target.entry(call.path.clone()).or_default() += 1;
    }
    let twice: Vec<_> = per_target.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{backend}: changed twice: {twice:?}");
    for i in &seen.interrupted {
        assert!(!seen.actions.contains_key(i));
    }
    store.close().await;

    let (code, out, err) = common::run(dir.path(), db, &["audit", "verify"]);
    assert_eq!(code, 0, "{backend}: {out}{err}");
    println!(
        "{backend}: {ROUNDS} kills ({mid_action} mid-action); answered: {} actions, {} decisions, \
         {} pushes; {} retries after a dead server; {} actions interrupted (409 on retry, \
         marked unknown: {unknown}); {} PATCHes, none twice; audit verify ok",
        seen.actions.len(),
        seen.decisions.len(),
        seen.pushes,
        seen.retries,
        seen.interrupted.len(),
        per_target.len(),
    );
    assert!(mid_action >= ROUNDS / 2);
    assert!(
        unknown >= 1,
        "{backend}: no kill landed between an intent and its result"
    );
    assert!(!seen.actions.is_empty() && !seen.decisions.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_answered_row_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_again_and_again(&db, "SQLite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_answered_row_on_postgres() {
    let db = FreshDb::new("crash");
    crash_again_and_again(&db.url, "PostgreSQL").await;
}
