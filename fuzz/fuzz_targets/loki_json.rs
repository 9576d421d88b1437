//! Fuzz the Loki JSON decoder.
#![no_main]

use aegis_ingest::loki::{LogLines, decode_json};
use aegis_ingest::{SeriesLimits, SeriesRegistry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut registry = SeriesRegistry::new();
    let mut lines = LogLines::default();
    let _ = decode_json(data, &mut registry, &SeriesLimits::default(), &mut lines);
});
