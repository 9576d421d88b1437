//! Prometheus remote write 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`), decoded straight from the request buffer into the
//! series registry and sample columns.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{Samples, WriteStats, decode_v1, decode_v2};
pub use encode::{SeriesData, encode_v1, encode_v2, realistic_series};

use crate::DecodeError;

/// Largest decompressed body accepted, in bytes.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 << 20;

/// Inflates a snappy block-format body, refusing (before inflating) one that claims to be
/// larger than `max` bytes: a small bomb cannot make Aegis allocate gigabytes.
pub fn snappy_decompress(body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let len =
        snap::raw::decompress_len(body).map_err(|e| DecodeError::Malformed(snappy_reason(&e)))?;
    if len > max {
        return Err(DecodeError::TooLarge { size: len, max });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Malformed(snappy_reason(&e)))
}

fn snappy_reason(e: &snap::Error) -> &'static str {
    match e {
        snap::Error::Header => "snappy: bad header",
        snap::Error::TooBig { .. } => "snappy: too big",
        snap::Error::BufferTooSmall { .. } => "snappy: buffer too small",
        _ => "snappy: corrupt block",
    }
}

/// Like [`snappy_decompress`], into `out` (cleared first), reusing its capacity: a receiver
/// that inflates a megabyte per request should not allocate and fault in a megabyte per
/// request.
pub fn snappy_decompress_into(
    body: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let len =
        snap::raw::decompress_len(body).map_err(|e| DecodeError::Malformed(snappy_reason(&e)))?;
    if len > max {
        return Err(DecodeError::TooLarge { size: len, max });
    }
    out.clear();
    out.resize(len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(body, out)
        .map_err(|e| DecodeError::Malformed(snappy_reason(&e)))?;
    out.truncate(written);
    Ok(())
}
