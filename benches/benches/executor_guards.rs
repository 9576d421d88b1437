//! The executor's guard path, without the Kubernetes call:
//!
//! - `executor_guards/cpu`: HMAC-SHA256 check of the body, strict parse, timestamp window,
//!   exact namespace allowlist, the `self_healing` policy evaluation (default policies), and
//!   enqueuing the audit intent on a bounded channel. Target: p99 ≤ 200 µs.
//! - `executor_guards/sqlite` (printed percentiles): the whole `POST /executor/execute`
//!   service path on SQLite in dry-run mode, including the database guards (nonce, cooldown,
//!   blast radius) and the committed intent and result rows.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::panic,
    reason = "a benchmark whose set-up fails must stop loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_executor::{ActionRequest, Executor, namespace_allowed, signature};
use aegis_policy::{Origin, Policy, Snapshot, default_policies};
use aegis_runtime::PolicyService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings, policy_request};
use aegis_runtime::ratelimit::{Limiter, Limits};
use aegis_store::{NewActionAudit, Store, StoreOptions};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const SECRET: &[u8] = b"action-secret-action-secret-0123456789";

fn policies() -> Vec<Policy> {
    default_policies()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|spec| Policy {
            id: spec.name.clone(),
            spec,
            origin: Origin::Builtin,
        })
        .collect()
}

fn body(nonce: usize) -> Vec<u8> {
    json!({"action": "scale_deployment", "namespace": "production", "target": "api",
           "params": {"replicas": 4}, "reason": "p99 latency above SLO", "timestamp": chrono::Utc::now(),
           "nonce": format!("bench-{nonce}")})
    .to_string()
    .into_bytes()
}

fn percentiles(name: &str, mut samples: Vec<u64>) {
    samples.sort_unstable();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name}: {} calls: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        samples.len(),
        q(0.5) as f64 / 1000.0,
        q(0.99) as f64 / 1000.0,
        q(0.999) as f64 / 1000.0
    );
}

fn bench(c: &mut Criterion) {
    let snapshot = Arc::new(Snapshot::compile(&policies(), 1).unwrap_or_else(|e| panic!("{e}")));
    let allowed = vec!["default".to_owned(), "production".to_owned()];
    let bodies: Vec<(Vec<u8>, String)> = (0..256)
        .map(|i| {
            let b = body(i);
            let s = signature::sign(SECRET, &b);
            (b, s)
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::sync_channel::<NewActionAudit>(65_536);
    std::thread::spawn(move || for _ in rx {});

    let guard = |b: &[u8], sig: &str| -> bool {
        if !signature::verify(SECRET, b, sig) {
            return false;
        }
        let Ok(req) = ActionRequest::parse(b) else {
            return false;
        };
        if (chrono::Utc::now() - req.timestamp).num_seconds().abs() > 300 {
            return false;
        }
        if !namespace_allowed(&req.namespace, &allowed) {
            return false;
        }
        let decision = snapshot.evaluate(&policy_request(&req, None), chrono::Utc::now(), false);
        if !decision.allowed() {
            return false;
        }
        let intent = NewActionAudit {
            created_at: None,
            action_id: "bench".to_owned(),
            phase: "intent".to_owned(),
            action: req.action.as_str().to_owned(),
            namespace: req.namespace,
            target: req.target,
            status: "pending".to_owned(),
            actor: None,
            reason: req.reason,
            details: json!({"params": req.params, "decision": decision.reason()}),
        };
        tx.send(intent).is_ok()
    };
    assert!(
        guard(&bodies[0].0, &bodies[0].1),
        "the benchmark request must pass every guard"
    );

    let mut samples = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let (b, s) = &bodies[i % bodies.len()];
        let started = Instant::now();
        std::hint::black_box(guard(b, s));
        samples.push(started.elapsed().as_nanos() as u64);
    }
    percentiles("executor_guards/cpu", samples);

    c.bench_function("executor_guards/cpu", |bench| {
        let mut i = 0;
        bench.iter(|| {
            i += 1;
            let (b, s) = &bodies[i % bodies.len()];
            guard(b, s)
        })
    });

    // The whole service path on SQLite, dry run.
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let service = PolicyService::new(store.clone());
        service
            .engine()
            .set_file_policies(policies())
            .unwrap_or_else(|e| panic!("{e}"));
        let settings = ExecutorSettings {
            secret: Some(SECRET.to_vec()),
            cooldown: Duration::ZERO,
            blast_radius: i64::MAX,
            ..ExecutorSettings::default()
        };
        let limits = Limits {
            action_per_minute: u32::MAX,
            ..Limits::default()
        };
        let executor = ExecutorService::new(Executor::DryRun, settings, Limiter::in_memory(limits));
        let mut samples = Vec::with_capacity(2_000);
        for i in 0..2_000 {
            let b = body(1_000_000 + i);
            let sig = signature::sign(SECRET, &b);
            let started = Instant::now();
            let result = executor
                .execute(&store, &service, None, &b, Some(&sig))
                .await;
            samples.push(started.elapsed().as_nanos() as u64);
            if let Err(e) = result {
                panic!("guarded dry run refused: {e}");
            }
        }
        percentiles("executor_guards/sqlite (whole path, dry run)", samples);
        store.close().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
