//! One engine tick's compute for 10,000 entities: build the feature matrix (2 metrics ×
//! 9 features plus 2 log features = 20 columns) from the entities' windows, and score it
//! with the isolation forest (t = 100, ψ = 256) on all cores. Target: ≤ 20 ms (issue 8).
//! The windows hold 5 minutes at 15 s (20 slots) and a one-hour baseline (240 slots).

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

criterion_group!(benches, bench);
criterion_main!(benches);
