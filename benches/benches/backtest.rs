//! Backtest throughput of the streaming detector: the 36 series of the NAB development
//! split (117,206 points), scored one file after another on one thread, so the figure is
//! points per second per core. Target: at least 300,000 (BENCHMARKS.md).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use aegis_engine::StreamConfig;
use aegis_engine::backtest::{self, Row};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn nab_dev_rows() -> Vec<Vec<Row>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/eval-data/nab-dev/data");
    let files = backtest::csv_files(&dir).expect("the NAB development split beside the repository");
    files
        .iter()
        .map(|(p, _)| backtest::read_csv(p).expect("NAB file reads"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let files = nab_dev_rows();
    let points: usize = files.iter().map(Vec::len).sum();
    let config = StreamConfig::default();
    let mut g = c.benchmark_group("backtest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(points as u64));
    g.bench_function("nab_dev_36_files_one_thread", |b| {
        b.iter(|| {
            let mut flagged = 0usize;
            for rows in &files {
                flagged += backtest::detect(rows, &config)
                    .iter()
                    .filter(|s| s.is_anomaly)
                    .count();
            }
            flagged
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
