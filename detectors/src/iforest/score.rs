//! The scoring loops: rows in parallel chunks, each chunk in blocks of rows that walk a
//! tree together.

use rayon::prelude::*;

use super::{IsolationForest, average_path_length, dot};
use crate::MatrixView;

/// Rows walked through one tree together: eight independent chains of loads and
/// compares keep the core busy while each waits for its memory.
const BLOCK: usize = 8;
/// Rows per rayon task: large enough that scheduling is noise.
const CHUNK: usize = 4096;

pub(super) fn score_parallel(m: &IsolationForest, x: MatrixView<'_>, out: &mut [f64]) {
    if x.rows() <= CHUNK {
        score_serial(m, x, out);
        return;
    }
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
        let start = i * CHUNK;
        score_serial(m, x.slice_rows(start, start + o.len()), o);
    });
}

/// `-1 / (t · c(ψ))`, so that score = 2^(sum of path lengths × this).
fn exponent_scale(m: &IsolationForest) -> f64 {
    let c = average_path_length(m.sample_size).max(f64::MIN_POSITIVE);
    -1.0 / (m.params.trees as f64 * c)
}

pub(super) fn score_serial(m: &IsolationForest, x: MatrixView<'_>, out: &mut [f64]) {
    if m.is_extended() {
        score_extended(m, x, out);
        return;
    }
    let cols = x.cols();
    // Rows are copied into a block buffer with a power-of-two stride, so every index into
    // it (and into a tree) can be masked and the bounds checks disappear.
    let pitch = cols.next_power_of_two();
    let mut block = vec![0f32; BLOCK * pitch];
    let bmask = block.len() - 1;
    let height = m.height;
    let stride = 1usize << height;
    let smask = stride - 1;
    let internal = stride - 1;
    let scale = exponent_scale(m);
    let trees = m.params.trees;
    let rows = x.rows();
    let mut start = 0;
    while start < rows {
        let n = BLOCK.min(rows - start);
        for r in 0..n {
            block[r * pitch..r * pitch + cols].copy_from_slice(x.row(start + r));
        }
        let buf = &block[..bmask + 1];
        let mut acc = [0f32; BLOCK];
        for t in 0..trees {
            let sp = &m.splits[t * stride..][..stride];
            let lv = &m.leaves[t * stride..][..stride];
            let mut idx = [0usize; BLOCK];
            for _ in 0..height {
                for r in 0..BLOCK {
                    let s = sp[idx[r] & smask];
                    let v = buf[(r * pitch + s.feature as usize) & bmask];
                    idx[r] = 2 * idx[r] + 1 + usize::from(v >= s.threshold);
                }
            }
            for r in 0..BLOCK {
                acc[r] += lv[(idx[r] - internal) & smask];
            }
        }
        for r in 0..n {
            out[start + r] = (f64::from(acc[r]) * scale).exp2();
        }
        start += n;
    }
}

fn score_extended(m: &IsolationForest, x: MatrixView<'_>, out: &mut [f64]) {
    let d = m.features;
    let stride = 1usize << m.height;
    let internal = stride - 1;
    let scale = exponent_scale(m);
    for (i, o) in out.iter_mut().enumerate() {
        let row = x.row(i);
        let mut acc = 0f32;
        for t in 0..m.params.trees {
            let mut idx = 0usize;
            for _ in 0..m.height {
                let node = t * stride + idx;
                let n = &m.normals[node * d..(node + 1) * d];
                idx = 2 * idx + 1 + usize::from(dot(n, row) >= m.splits[node].threshold);
            }
            acc += m.leaves[t * stride + idx - internal];
        }
        *o = (f64::from(acc) * scale).exp2();
    }
}
