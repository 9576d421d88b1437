//! Detector speed: isolation-forest fit and batch scoring on 1,000,000 rows × 8 features
//! (t = 100, ψ = 256; standard normal with 1% uniform outliers, the data of
//! `benches/detectors/peers.py`), on one thread and on every core; Drain template mining
//! on the known-template log sample; one failure classification.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::panic,
    reason = "a benchmark whose set-up fails must stop loudly"
)]

use std::time::Duration;

use aegis_detectors::{
    Drain, FailureClassifier, HEALTHY_DEFAULTS, IsolationForest, IsolationForestParams, synthetic,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ROWS: usize = 1_000_000;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn iforest(c: &mut Criterion) {
    let (x, _) = synthetic::gaussian_with_outliers(1, ROWS, 8, 0.01);
    let params = IsolationForestParams::default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("iforest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for threads in [1, cores] {
        let p = pool(threads);
        let name = if threads == 1 {
            "1_thread".to_string()
        } else {
            format!("{threads}_threads")
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("fit_1m_x8/{name}"), |b| {
            b.iter(|| {
                p.install(|| {
                    IsolationForest::fit(x.view(), &params).unwrap_or_else(|e| panic!("{e}"))
                })
            })
        });
        let forest = IsolationForest::fit(x.view(), &params).unwrap_or_else(|e| panic!("{e}"));
        let mut out = vec![0.0; ROWS];
        group.throughput(Throughput::Elements(ROWS as u64));
        group.bench_function(format!("score_1m_x8/{name}"), |b| {
            b.iter(|| {
                p.install(|| {
                    forest
                        .score_into(x.view(), &mut out)
                        .unwrap_or_else(|e| panic!("{e}"))
                })
            })
        });
    }
    let row = x.row(0).to_vec();
    let forest = IsolationForest::fit(x.view(), &params).unwrap_or_else(|e| panic!("{e}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("score_one_row", |b| b.iter(|| forest.score_row(&row)));
    let ext = IsolationForest::fit(
        x.view(),
        &IsolationForestParams {
            extension_level: Some(7),
            ..params.clone()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let small = x.view().slice_rows(0, 100_000);
    let mut out = vec![0.0; 100_000];
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("score_100k_x8_extended/all_threads", |b| {
        b.iter(|| {
            ext.score_into(small, &mut out)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    group.finish();
}

fn drain(c: &mut Criterion) {
    let text = include_str!("../../detectors/tests/data/log_sample.tsv");
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(_, l)| l)
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    println!(
        "drain: {} lines, {:.0} bytes per line on average",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );
    let mut group = c.benchmark_group("drain");
    group.throughput(Throughput::Elements(lines.len() as u64));
    // Steady state: the templates are known (a warm miner), every line is matched.
    let mut warm = Drain::default();
    for l in &lines {
        warm.add(l);
    }
    group.bench_function("mine_2000_lines_warm/1_thread", |b| {
        b.iter(|| {
            for l in &lines {
                std::hint::black_box(warm.add(l));
            }
        })
    });
    group.bench_function("mine_2000_lines_cold/1_thread", |b| {
        b.iter(|| {
            let mut d = Drain::default();
            for l in &lines {
                std::hint::black_box(d.add(l));
            }
        })
    });
    group.finish();
}

fn classifier(c: &mut Criterion) {
    let clf = FailureClassifier::bundled(1).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("failure_classifier");
    group.throughput(Throughput::Elements(1));
    group.bench_function("classify_one_row", |b| {
        b.iter(|| clf.classify(&HEALTHY_DEFAULTS))
    });
    group.sample_size(10);
    group.bench_function("train_bundled_2100_rows", |b| {
        b.iter(|| FailureClassifier::bundled(1))
    });
    group.finish();
}

criterion_group!(benches, iforest, drain, classifier);
criterion_main!(benches);
