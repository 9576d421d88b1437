//! Fuzz the remote write v1 decoder: any bytes, never a panic; whatever decodes keeps the
//! columns aligned.
#![no_main]

use aegis_ingest::remote_write::{Samples, decode_v1};
use aegis_ingest::{SeriesLimits, SeriesRegistry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut registry = SeriesRegistry::new();
    let mut samples = Samples::default();
    if decode_v1(data, &mut registry, &SeriesLimits::default(), &mut samples).is_ok() {
        assert_eq!(samples.series_id.len(), samples.timestamp_ms.len());
        assert_eq!(samples.series_id.len(), samples.value.len());
        assert!(
            samples
                .series_id
                .iter()
                .all(|&id| (id as usize) < registry.len())
        );
    }
});
