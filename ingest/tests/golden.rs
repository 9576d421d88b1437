//! Golden test: a remote write 1.0 request captured from Debian's Prometheus 2.42 (its first
//! batch after start, scraping itself every second; headers beside it) decodes completely.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use aegis_ingest::remote_write::{Samples, decode_v1, snappy_decompress};
use aegis_ingest::{SeriesLimits, SeriesRegistry};

const BODY: &[u8] = include_bytes!("fixtures/prometheus-2.42-remote-write-1.0.snappy");
const HEADERS: &str = include_str!("fixtures/prometheus-2.42-remote-write-1.0.headers");

#[test]
fn a_real_prometheus_request_decodes() {
    assert!(HEADERS.contains("Content-Encoding: snappy"));
    assert!(HEADERS.contains("X-Prometheus-Remote-Write-Version: 0.1.0"));
    let raw = snappy_decompress(BODY, 64 << 20).unwrap();
    let mut registry = SeriesRegistry::new();
    let mut samples = Samples::default();
    let stats = decode_v1(&raw, &mut registry, &SeriesLimits::default(), &mut samples).unwrap();
    assert!(stats.series > 100, "{stats:?}");
    assert_eq!(stats.samples as usize, samples.len());
    assert_eq!(
        registry.len() as u64,
        stats.series,
        "every series is distinct"
    );
    let mut up = None;
    for id in 0..registry.len() as u32 {
        let labels = registry.labels(id).unwrap();
        // Every series carries the scrape's target labels and the external label.
        let get = |name: &str| {
            labels
                .iter()
                .find(|(n, _)| &**n == name)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(get("job").as_deref(), Some("prometheus"), "{labels:?}");
        assert_eq!(get("cluster").as_deref(), Some("golden"), "{labels:?}");
        assert!(
            labels.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted: {labels:?}"
        );
        if get("__name__").as_deref() == Some("up") {
            up = Some(id);
        }
    }
    let up = up.expect("the request has `up`");
    let row = samples.series_id.iter().position(|&s| s == up).unwrap();
    assert_eq!(samples.value[row], 1.0);
    assert!(samples.timestamp_ms[row] > 1_700_000_000_000);
}
