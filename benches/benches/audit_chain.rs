//! The audit hash chain: canonical encoding + SHA-256 per row (CPU), and appending and
//! verifying rows in SQLite (what every audited decision and action costs).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::panic,
    reason = "a benchmark whose set-up fails must stop loudly"
)]

use aegis_core::{Canonical, GENESIS_HASH, chain_hash};
use aegis_store::{
    AuditLog, AuditTable, AuditWriterOptions, NewPolicyAudit, PolicyAuditWriter, Store,
    StoreOptions,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A fixed timestamp (µs) so the CPU benchmark does not measure the clock.
const AT_MICROS: i64 = 1_795_000_000_000_000;

fn canonical_row(n: i64) -> Vec<u8> {
    Canonical::new()
        .str("table", "policy_audit_logs")
        .i64("id", n)
        .i64("created_at", AT_MICROS)
        .opt_str("request_id", Some("01a20f75-51d4-74a7-a385-7e55bd300edb"))
        .str("policy_type", "self_healing")
        .str("action", "scale_up")
        .str("resource", "cluster:production")
        .opt_str("user_id", Some("ai-engine"))
        .opt_str("role", Some("service"))
        .str("decision", "ALLOW")
        .opt_str("policy_name", Some("Allow Auto-Scale"))
        .str("reason", "allowed by policy Allow Auto-Scale (priority 50)")
        .str("context", r#"{"metadata":{"severity":"high"}}"#)
        .i64("evaluated_in_us", 1)
        .finish()
}

fn decision(n: usize) -> NewPolicyAudit {
    NewPolicyAudit {
        created_at: None,
        request_id: Some(format!("req-{n}")),
        policy_type: "self_healing".into(),
        action: "scale_up".into(),
        resource: "cluster:production".into(),
        user_id: Some("ai-engine".into()),
        role: Some("service".into()),
        decision: "ALLOW".into(),
        policy_id: Some("p-1".into()),
        policy_name: Some("Allow Auto-Scale".into()),
        reason: "allowed by policy Allow Auto-Scale".into(),
        context: serde_json::json!({"metadata": {"severity": "high"}}),
        evaluated_in_us: 1,
    }
}

fn cpu(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_chain_cpu");
    group.throughput(Throughput::Elements(1));
    group.bench_function("canonical_and_hash_one_row", |b| {
        let mut n = 0;
        let mut prev = GENESIS_HASH.to_owned();
        b.iter(|| {
            n += 1;
            prev = chain_hash(&prev, &canonical_row(n));
        });
    });
    group.finish();
}

/// A fresh SQLite store in `dir`; benchmarks panic on set-up failure like any bench harness.
fn open(runtime: &tokio::runtime::Runtime, dir: &std::path::Path, name: &str) -> Store {
    let url = format!("sqlite://{}", dir.join(name).display());
    match runtime.block_on(Store::connect(&url, &StoreOptions::default())) {
        Ok(store) => store,
        Err(e) => panic!("bench database: {e}"),
    }
}

/// Concurrent callers of the durable decision path, and decisions each records per round.
const CALLERS: usize = 32;
const PER_CALLER: usize = 50;

#[expect(
    clippy::panic,
    reason = "a benchmark whose set-up fails must stop loudly"
)]
fn sqlite(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary folder: {e}"));
    let store = open(&runtime, dir.path(), "append.db");
    let verify_store = open(&runtime, dir.path(), "verify.db");
    let rows: Vec<_> = (0..10_000).map(decision).collect();
    if let Err(e) = runtime.block_on(verify_store.append_policy_audit(&rows)) {
        panic!("filling the verify database: {e}");
    }
    let mut group = c.benchmark_group("audit_chain_sqlite");
    group.sample_size(10);
    for batch in [1_usize, 32, 1_000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("append_batch_{batch}"), |b| {
            b.to_async(&runtime).iter_batched(
                || (0..batch).map(decision).collect::<Vec<_>>(),
                |rows| {
                    let store = store.clone();
                    async move { store.append_policy_audit(&rows).await.map(|r| r.len()) }
                },
                BatchSize::SmallInput,
            );
        });
    }
    // What `POST /api/v1/policy/evaluate` waits on: 32 callers, each answered only once its
    // decision's group commit is done (the load benchmark's 32 connections).
    let writer = runtime
        .block_on(async { PolicyAuditWriter::spawn(store.clone(), AuditWriterOptions::default()) });
    let sender = writer.sender();
    group.throughput(Throughput::Elements((CALLERS * PER_CALLER) as u64));
    group.bench_function("record_durable_32_callers", |b| {
        b.to_async(&runtime).iter(|| {
            let sender = sender.clone();
            async move {
                let callers: Vec<_> = (0..CALLERS)
                    .map(|c| {
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            for n in 0..PER_CALLER {
                                if sender.record(decision(c * PER_CALLER + n)).await.is_err() {
                                    panic!("the writer stopped");
                                }
                            }
                        })
                    })
                    .collect();
                for caller in callers {
                    if let Err(e) = caller.await {
                        panic!("a caller failed: {e}");
                    }
                }
            }
        });
    });
    runtime.block_on(writer.shutdown(std::time::Duration::from_secs(30)));
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("verify_10k_rows", |b| {
        b.to_async(&runtime).iter_batched(
            || (),
            |()| {
                let store = verify_store.clone();
                async move {
                    store
                        .verify_audit(AuditTable::Policy)
                        .await
                        .map(|r| r.rows_checked)
                }
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
    runtime.block_on(async {
        store.close().await;
        verify_store.close().await;
    });
}

criterion_group!(benches, cpu, sqlite);
criterion_main!(benches);
