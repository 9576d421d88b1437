//! Fuzz the bounded snappy inflation (and what it feeds).
#![no_main]

use aegis_ingest::remote_write::snappy_decompress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = snappy_decompress(data, 1 << 20) {
        assert!(raw.len() <= 1 << 20);
    }
});
