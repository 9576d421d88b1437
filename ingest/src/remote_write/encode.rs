//! Encoders for remote write 1.0 and 2.0 requests: for tests (Debian's Prometheus 2.42
//! cannot send 2.0), benchmarks and load generators.

use crate::wire::encode::{bytes, double, int64, varint};

/// One series to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// Labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// `(timestamp_ms, value)` pairs.
    pub samples: Vec<(i64, f64)>,
}

fn sample(ts: i64, v: f64) -> Vec<u8> {
    let mut s = Vec::with_capacity(20);
    double(&mut s, 1, v);
    int64(&mut s, 2, ts);
    s
}

/// An uncompressed `prometheus.WriteRequest`.
pub fn encode_v1(series: &[SeriesData]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ts = Vec::new();
    let mut label = Vec::new();
    for s in series {
        ts.clear();
        for (name, value) in &s.labels {
            label.clear();
            bytes(&mut label, 1, name.as_bytes());
            bytes(&mut label, 2, value.as_bytes());
            bytes(&mut ts, 1, &label);
        }
        for &(t, v) in &s.samples {
            bytes(&mut ts, 2, &sample(t, v));
        }
        bytes(&mut out, 1, &ts);
    }
    out
}

/// An uncompressed `io.prometheus.write.v2.Request` with a deduplicated symbol table.
pub fn encode_v2(series: &[SeriesData]) -> Vec<u8> {
    let mut symbols: Vec<&str> = vec![""];
    let mut index: std::collections::HashMap<&str, u32> =
        std::collections::HashMap::from([("", 0)]);
    let mut out = Vec::new();
    let mut bodies = Vec::new();
    for s in series {
        let mut refs = Vec::new();
        for (name, value) in &s.labels {
            for text in [name.as_str(), value.as_str()] {
                let id = *index.entry(text).or_insert_with(|| {
                    symbols.push(text);
                    (symbols.len() - 1) as u32
                });
                varint(&mut refs, u64::from(id));
            }
        }
        let mut ts = Vec::new();
        bytes(&mut ts, 1, &refs);
        for &(t, v) in &s.samples {
            bytes(&mut ts, 2, &sample(t, v));
        }
        bodies.push(ts);
    }
    for s in &symbols {
        bytes(&mut out, 4, s.as_bytes());
    }
    for ts in &bodies {
        bytes(&mut out, 5, ts);
    }
    out
}

/// Series shaped like a Kubernetes cluster's scrape: 15 labels, realistic names and values.
pub fn realistic_series(n: usize, samples_per_series: usize, start_ms: i64) -> Vec<SeriesData> {
    (0..n)
        .map(|i| {
            let mut labels = vec![
                (
                    "__name__".to_owned(),
                    format!("container_metric_{}", i % 40),
                ),
                ("cluster".to_owned(), "prod-eu-west-1".to_owned()),
                ("container".to_owned(), format!("app-{}", i % 7)),
                ("endpoint".to_owned(), "https-metrics".to_owned()),
                (
                    "id".to_owned(),
                    format!(
                        "/kubepods/burstable/pod{:08x}",
                        i * 2654435761 % 0xffff_ffff
                    ),
                ),
                (
                    "image".to_owned(),
                    format!("registry.example.com/team/app-{}:1.{}.0", i % 7, i % 13),
                ),
                (
                    "instance".to_owned(),
                    format!("10.0.{}.{}:10250", i % 200, i % 250),
                ),
                ("job".to_owned(), "kubelet".to_owned()),
                ("metrics_path".to_owned(), "/metrics/cadvisor".to_owned()),
                ("name".to_owned(), format!("k8s_app_{i}")),
                ("namespace".to_owned(), format!("team-{}", i % 12)),
                (
                    "node".to_owned(),
                    format!("ip-10-0-{}-{}.eu-west-1.compute.internal", i % 200, i % 250),
                ),
                ("pod".to_owned(), format!("app-{}-{:x}", i % 7, i * 7919)),
                ("prometheus".to_owned(), "monitoring/k8s".to_owned()),
                ("service".to_owned(), "kubelet".to_owned()),
            ];
            labels.sort();
            let samples = (0..samples_per_series)
                .map(|k| (start_ms + (k as i64) * 15_000, (i * 31 + k) as f64 * 0.5))
                .collect();
            SeriesData { labels, samples }
        })
        .collect()
}
