//! One engine tick's compute for 10,000 entities: build the feature matrix (2 metrics ×
//! 9 features plus 2 log features = 20 columns) from the entities' windows, and score it
//! with the isolation forest (t = 100, ψ = 256) on all cores. Target: ≤ 20 ms (issue 8).
//! The windows hold 5 minutes at 15 s (20 slots) and a one-hour baseline (240 slots).
//! `engine_loop` then times the loop's whole tick over 10,000 workloads.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::panic,
    reason = "a benchmark whose set-up fails must stop loudly"
)]

use aegis_detectors::{IsolationForest, IsolationForestParams, Matrix};
use aegis_engine::SeriesWindow;
use aegis_engine::matrix::{EntityWindows, build};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ENTITIES: usize = 10_000;

fn entities() -> Vec<EntityWindows> {
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..ENTITIES)
        .map(|_| {
            let metrics = (0..2)
                .map(|_| {
                    let mut w = SeriesWindow::new(300_000, 15_000);
                    let mut b = SeriesWindow::new(3_600_000, 15_000);
                    for s in 0..240 {
                        let v = 0.5 + 0.1 * next();
                        b.insert(s * 15_000, v);
                        if s >= 220 {
                            w.insert(s * 15_000, v);
                        }
                    }
                    (w, b)
                })
                .collect();
            EntityWindows { metrics }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let entities = entities();
    let features = build(&entities, 2);
    // Two log features per entity beside the 18 metric ones: 20 columns.
    let with_logs = |m: &Matrix| {
        let mut data = Vec::with_capacity(m.rows() * 20);
        for r in 0..m.rows() {
            data.extend_from_slice(m.row(r));
            data.extend_from_slice(&[0.01, 0.0]);
        }
        Matrix::new(data, 20).unwrap_or_else(|e| panic!("{e}"))
    };
    let training = with_logs(&features);
    let forest = IsolationForest::fit(training.view(), &IsolationForestParams::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![0.0; ENTITIES];
    let mut group = c.benchmark_group("engine_tick");
    group.throughput(Throughput::Elements(ENTITIES as u64));
    group.sample_size(20);
    group.bench_function("features_10k_entities", |b| b.iter(|| build(&entities, 2)));
    group.bench_function("score_10k_x20", |b| {
        b.iter(|| {
            forest
                .score_into(training.view(), &mut out)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    group.bench_function("tick_10k_entities_x20_features", |b| {
        b.iter(|| {
            let m = with_logs(&build(&entities, 2));
            forest
                .score_into(m.view(), &mut out)
                .unwrap_or_else(|e| panic!("{e}"));
        })
    });
    group.finish();
}

/// The whole tick of the self-healing loop for 10,000 workloads × 2 metrics (18 features;
/// with the log features the classifier adds, 20): matrix, scale-free view, one forest per
/// metric, classifier on the rows that look wrong, incidents. New samples arrive between
/// iterations, outside the timing, as they would between ticks.
fn bench_loop(c: &mut Criterion) {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let healing = runtime.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = aegis_store::Store::connect(&url, &aegis_store::StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let policies = Arc::new(aegis_runtime::PolicyService::new(store.clone()));
        policies
            .install_defaults_if_new()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        policies
            .reload_database()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let detectors = aegis_runtime::detector_service::DetectorService::start(store.clone(), 0.6)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let executor = Arc::new(aegis_runtime::guards::ExecutorService::new(
            aegis_executor::Executor::DryRun,
            aegis_runtime::guards::ExecutorSettings::default(),
            aegis_runtime::ratelimit::Limiter::in_memory(
                aegis_runtime::ratelimit::Limits::default(),
            ),
        ));
        let defaults = aegis_runtime::healing::HealingSettings::default();
        let settings = aegis_runtime::healing::HealingSettings {
            engine: aegis_engine::EngineConfig {
                metrics: vec!["cpu_usage".into(), "memory_usage".into()],
                warmup_ms: 0,
                ..defaults.engine.clone()
            },
            ..defaults
        };
        aegis_runtime::healing::HealingLoop::new(settings, detectors, policies, executor, store)
    });
    let labels: Vec<[Vec<(String, String)>; 2]> = (0..ENTITIES)
        .map(|e| {
            let l = |m: &str| {
                vec![
                    ("__name__".to_owned(), m.to_owned()),
                    ("namespace".to_owned(), "production".to_owned()),
                    ("deployment".to_owned(), format!("svc-{e}")),
                ]
            };
            [l("cpu_usage"), l("memory_usage")]
        })
        .collect();
    let mut seed = 11u64;
    let mut step = 0i64;
    let mut feed = |step: i64| {
        for l in &labels {
            for (m, labels) in l.iter().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed >> 11) as f64 / (1u64 << 53) as f64 * 0.05;
                healing.ingest_sample(labels, step * 15_000, 0.3 + 0.1 * m as f64 + noise);
            }
        }
    };
    // An hour of history; the first tick scores it point by point (the pools fit their
    // forests on the way), so the timed ticks score one new point per series.
    while step < 240 {
        feed(step);
        step += 1;
    }
    runtime.block_on(healing.tick_at(step * 15_000, None));
    feed(step);
    step += 1;
    runtime.block_on(healing.tick_at(step * 15_000, None));
    assert_eq!(healing.stats(step * 15_000).state, "ready");
    let mut group = c.benchmark_group("engine_loop");
    group.throughput(Throughput::Elements(ENTITIES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("tick_10k_entities_x2_metrics", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                feed(step);
                step += 1;
                let started = Instant::now();
                runtime.block_on(healing.tick_at(step * 15_000, None));
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_loop);
criterion_main!(benches);
