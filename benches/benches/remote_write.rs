//! Remote write decode + convert to Arrow, on bodies of realistic shape: 2,000 series × 1
//! sample, 15 labels each (a kubelet/cAdvisor scrape). Measured per request, reported as
//! samples per second on one core, for 1.0 and 2.0, with and without snappy inflation, with
//! the series registry warm (the steady state: the same series arrive every scrape).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::panic,
    reason = "a benchmark whose set-up fails must stop loudly"
)]

use aegis_ingest::remote_write::{
    Samples, decode_v1, decode_v2, encode_v1, encode_v2, realistic_series, snappy_decompress,
};
use aegis_ingest::{SeriesLimits, SeriesRegistry, sample_schema, samples_to_batch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SERIES: usize = 2_000;

fn bench(c: &mut Criterion) {
    let series = realistic_series(SERIES, 1, 1_795_000_000_000);
    let limits = SeriesLimits::default();
    let schema = sample_schema();
    let bodies = [("v1", encode_v1(&series)), ("v2", encode_v2(&series))];
    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements(SERIES as u64));
    for (version, raw) in &bodies {
        let compressed = snap::raw::Encoder::new()
            .compress_vec(raw)
            .unwrap_or_else(|e| panic!("{e}"));
        println!(
            "remote_write/{version}: body {} bytes, {} bytes snappy-compressed",
            raw.len(),
            compressed.len()
        );
        let decode = if *version == "v1" {
            decode_v1
        } else {
            decode_v2
        };
        let mut registry = SeriesRegistry::new();
        // Warm: the registry knows the series, as after the first scrape.
        decode(raw, &mut registry, &limits, &mut Samples::default())
            .unwrap_or_else(|e| panic!("{e}"));
        group.bench_function(format!("{version}/decode_to_arrow"), |b| {
            b.iter(|| {
                let mut samples = Samples::default();
                decode(raw, &mut registry, &limits, &mut samples).unwrap_or_else(|e| panic!("{e}"));
                samples_to_batch(samples, schema.clone())
                    .unwrap_or_else(|e| panic!("{e}"))
                    .num_rows()
            })
        });
        group.bench_function(format!("{version}/snappy_decode_to_arrow"), |b| {
            b.iter(|| {
                let raw =
                    snappy_decompress(&compressed, 64 << 20).unwrap_or_else(|e| panic!("{e}"));
                let mut samples = Samples::default();
                decode(&raw, &mut registry, &limits, &mut samples)
                    .unwrap_or_else(|e| panic!("{e}"));
                samples_to_batch(samples, schema.clone())
                    .unwrap_or_else(|e| panic!("{e}"))
                    .num_rows()
            })
        });
        group.bench_function(format!("{version}/cold_registry"), |b| {
            b.iter(|| {
                let mut fresh = SeriesRegistry::new();
                let mut samples = Samples::default();
                decode(raw, &mut fresh, &limits, &mut samples).unwrap_or_else(|e| panic!("{e}"));
                samples.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
