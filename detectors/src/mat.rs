//! A reader for MATLAB level-5 `.mat` files (the ODDS benchmark format): numeric,
//! real, two-dimensional arrays, compressed or not, little-endian.

use std::collections::BTreeMap;
use std::io::Read;

use crate::{Error, Result};

/// A numeric array from a `.mat` file, values converted to `f64`, column-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Column-major values.
    pub data: Vec<f64>,
}

impl MatArray {
    /// Column `c`.
    pub fn column(&self, c: usize) -> &[f64] {
        &self.data[c * self.rows..(c + 1) * self.rows]
    }
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
/// Decompressed size limit per variable: ODDS's largest is a few tens of MB.
const MAX_INFLATED: u64 = 1 << 30;

/// Reads every numeric variable of a level-5 `.mat` file.
pub fn read_file(path: &std::path::Path) -> Result<BTreeMap<String, MatArray>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes).map_err(|e| Error::Format(format!("{}: {e}", path.display())))
}

/// Parses the bytes of a level-5 `.mat` file.
pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, MatArray>> {
    if bytes.len() < 128 {
        return Err(Error::Format(
            "not a MATLAB 5 file: shorter than its header".into(),
        ));
    }
    if &bytes[126..128] != b"IM" {
        return Err(Error::Format(
            "only little-endian MATLAB 5 files are supported (HDF5-based v7.3 files are not)"
                .into(),
        ));
    }
    let mut out = BTreeMap::new();
    let mut rest = &bytes[128..];
    while rest.len() >= 8 {
        let (ty, body, next) = element(rest)?;
        rest = next;
        match ty {
            MI_MATRIX => {
                if let Some((name, a)) = matrix(body)? {
                    out.insert(name, a);
                }
            }
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(body)
                    .take(MAX_INFLATED)
                    .read_to_end(&mut inflated)
                    .map_err(|e| Error::Format(format!("bad compressed element: {e}")))?;
                let (ty, body, _) = element(&inflated)?;
                if ty == MI_MATRIX
                    && let Some((name, a)) = matrix(body)?
                {
                    out.insert(name, a);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| Error::Format("truncated element tag".into()))
}

/// One data element: (type, body, the bytes after it, padded to 8).
fn element(b: &[u8]) -> Result<(u32, &[u8], &[u8])> {
    let first = u32_at(b, 0)?;
    if first >> 16 != 0 {
        // Small element: type and size in one word, data in the next four bytes.
        let size = (first >> 16) as usize;
        if size > 4 || b.len() < 8 {
            return Err(Error::Format("bad small data element".into()));
        }
        return Ok((first & 0xffff, &b[4..4 + size], &b[8..]));
    }
    let size = u32_at(b, 4)? as usize;
    let body = b
        .get(8..8 + size)
        .ok_or_else(|| Error::Format("data element runs past the end of the file".into()))?;
    let padded = if first == MI_COMPRESSED {
        size
    } else {
        size.div_ceil(8) * 8
    };
    let next = b.get(8 + padded..).unwrap_or(&[]);
    Ok((first, body, next))
}

fn numbers(ty: u32, b: &[u8]) -> Result<Vec<f64>> {
    fn conv<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        b.chunks_exact(N)
            .filter_map(|c| c.try_into().ok())
            .map(f)
            .collect()
    }
    Ok(match ty {
        MI_DOUBLE => conv::<8>(b, f64::from_le_bytes),
        MI_SINGLE => conv::<4>(b, |c| f64::from(f32::from_le_bytes(c))),
        MI_INT8 => b.iter().map(|v| f64::from(*v as i8)).collect(),
        MI_UINT8 => b.iter().map(|v| f64::from(*v)).collect(),
        MI_INT16 => conv::<2>(b, |c| f64::from(i16::from_le_bytes(c))),
        MI_UINT16 => conv::<2>(b, |c| f64::from(u16::from_le_bytes(c))),
        MI_INT32 => conv::<4>(b, |c| f64::from(i32::from_le_bytes(c))),
        MI_UINT32 => conv::<4>(b, |c| f64::from(u32::from_le_bytes(c))),
        MI_INT64 => conv::<8>(b, |c| i64::from_le_bytes(c) as f64),
        MI_UINT64 => conv::<8>(b, |c| u64::from_le_bytes(c) as f64),
        other => {
            return Err(Error::Format(format!(
                "unsupported numeric storage type {other}"
            )));
        }
    })
}

/// A numeric 2-D matrix element; other classes (cells, structs, sparse, char) are skipped.
fn matrix(body: &[u8]) -> Result<Option<(String, MatArray)>> {
    let (_, flags, rest) = element(body)?;
    let class = u32_at(flags, 0)? & 0xff;
    let complex = u32_at(flags, 0)? & 0x800 != 0;
    // mxDOUBLE_CLASS (6) to mxUINT64_CLASS (15) are numeric.
    if !(6..=15).contains(&class) || complex {
        return Ok(None);
    }
    let (_, dims, rest) = element(rest)?;
    let dims: Vec<usize> = dims
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    if dims.len() != 2 {
        return Ok(None);
    }
    let (_, name, rest) = element(rest)?;
    let name = String::from_utf8_lossy(name).into_owned();
    let (ty, real, _) = element(rest)?;
    let data = numbers(ty, real)?;
    if data.len() != dims[0] * dims[1] {
        return Err(Error::Format(format!(
            "variable `{name}`: {} values for {}×{}",
            data.len(),
            dims[0],
            dims[1]
        )));
    }
    Ok(Some((
        name,
        MatArray {
            rows: dims[0],
            cols: dims[1],
            data,
        },
    )))
}
