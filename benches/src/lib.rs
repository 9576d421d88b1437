//! Aegis benchmarks: criterion suites under `benches/` (run with `cargo bench`, or
//! `cargo bench -- --quick` as CI does) and, as they arrive, load generators that compare
//! Aegis with its peers. Figures are recorded in `BENCHMARKS.md` at the repository root.

use bytes::Bytes;

/// A numeric field of `/proc/PROCESS/status` (`PROCESS` a pid or `self`), e.g. `VmRSS:` in
/// KiB or `Threads:`; 0 when it cannot be read.
pub fn proc_status(process: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Series per remote write body the load generators send, one sample each (Prometheus's
/// default `max_samples_per_send` is 2,000).
pub const BODY_SERIES: usize = 2_000;

/// `count` snappy remote write 1.0 bodies of [`BODY_SERIES`] realistic series for sender
/// `conn` (its own series, label `zz_conn`), one second apart from `start_ms`, so every
/// receiver accepts every sample in order.
pub fn remote_write_bodies(conn: usize, count: usize, start_ms: i64) -> Vec<Bytes> {
    use aegis_ingest::remote_write::{encode_v1, realistic_series};
    (0..count)
        .map(|k| {
            let mut series = realistic_series(BODY_SERIES, 1, start_ms + k as i64 * 1_000);
            for s in &mut series {
                s.labels.push(("zz_conn".to_owned(), conn.to_string()));
            }
            let raw = encode_v1(&series);
            // Compressing a buffer we built cannot fail; an empty body would be refused.
            Bytes::from(
                snap::raw::Encoder::new()
                    .compress_vec(&raw)
                    .unwrap_or_default(),
            )
        })
        .collect()
}
