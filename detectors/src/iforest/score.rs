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

/// Rows per block of the fast path: one block of rows walks every tree while that tree's
/// 3 KB sit in L1, instead of every row fetching every tree from L2.
const FAST_ROWS: usize = 256;
/// Column stride of the block buffer (a power of two ≥ `FAST_ROWS`).
const COL: usize = 256;
/// Rows walking a tree in lock step: sixteen independent chains of loads and compares
/// hide the L1 latency of each step (measured: 8 lanes 1.49 M rows/s, 12 → 1.94 M,
/// 16 → 2.12 M, 20 → 1.96 M, 24 → 1.58 M as registers spill; AMD Zen 4, one thread).
const LANES: usize = 16;
/// Column-major block buffer: feature `f` of block row `r` at `f * 256 + r`; sized so
/// any `u16` offset plus a row index is in bounds, which lets the compiler drop the checks.
const FAST_BUF: usize = (1 << 16) + COL;

/// A split of the fast layout: the feature stored as its offset in the block buffer.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct FastSplit {
    threshold: f32,
    offset: u16,
}

/// The fast scoring layout: every tree padded to 256 slots (so a node index masks with
/// `0xFF`), for forests of height ≤ 8 (ψ ≤ 256) and ≤ 256 features. Derived data.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fast {
    splits: Vec<FastSplit>,
    leaves: Vec<f32>,
}

impl PartialEq for Fast {
    /// Derived from the forest, so it never makes two forests differ.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Fast {
    /// Whether the layout is built.
    pub(super) fn is_built(&self) -> bool {
        !self.splits.is_empty()
    }

    pub(super) fn build(m: &IsolationForest) -> Self {
        if m.height > 8 || m.features > 256 || m.is_extended() {
            return Self::default();
        }
        let stride = 1usize << m.height;
        let trees = m.params.trees;
        let mut splits = vec![
            FastSplit {
                threshold: f32::INFINITY,
                offset: 0
            };
            trees * 256
        ];
        let mut leaves = vec![0f32; trees * 256];
        for t in 0..trees {
            for i in 0..stride {
                let s = m.splits[t * stride + i];
                splits[t * 256 + i] = FastSplit {
                    threshold: s.threshold,
                    offset: (s.feature as usize * COL) as u16,
                };
                leaves[t * 256 + i] = m.leaves[t * stride + i];
            }
        }
        Self { splits, leaves }
    }
}

fn score_fast(m: &IsolationForest, x: MatrixView<'_>, out: &mut [f64]) {
    // The height as a constant lets the compiler unroll the levels and know every node
    // index is below 256, so no index needs masking.
    match m.height {
        1 => score_fast_h::<1>(m, x, out),
        2 => score_fast_h::<2>(m, x, out),
        3 => score_fast_h::<3>(m, x, out),
        4 => score_fast_h::<4>(m, x, out),
        5 => score_fast_h::<5>(m, x, out),
        6 => score_fast_h::<6>(m, x, out),
        7 => score_fast_h::<7>(m, x, out),
        8 => score_fast_h::<8>(m, x, out),
        _ => score_blocked(m, x, out),
    }
}

fn score_fast_h<const H: usize>(m: &IsolationForest, x: MatrixView<'_>, out: &mut [f64]) {
    let fast = &m.fast;
    let Ok(mut buf) = <Box<[f32; FAST_BUF]>>::try_from(vec![0f32; FAST_BUF].into_boxed_slice())
    else {
        return score_blocked(m, x, out);
    };
    let d = x.cols();
    let base = (1usize << H) - 1;
    let scale = exponent_scale(m);
    let rows = x.rows();
    let mut start = 0;
    while start < rows {
        let n = FAST_ROWS.min(rows - start);
        for r in 0..n {
            for (f, v) in x.row(start + r).iter().enumerate().take(d) {
                buf[(f * COL + r) & 0xFFFF] = *v;
            }
        }
        let mut acc = [0f32; FAST_ROWS];
        for (sp, lv) in fast
            .splits
            .chunks_exact(256)
            .zip(fast.leaves.chunks_exact(256))
        {
            let (Ok(sp), Ok(lv)) = (
                <&[FastSplit; 256]>::try_from(sp),
                <&[f32; 256]>::try_from(lv),
            ) else {
                continue;
            };
            // A constant trip count bounds `row0`, so `offset + row0 + l` provably fits;
            // a partial last block walks a few stale rows whose sums are never read.
            for g in 0..FAST_ROWS / LANES {
                let row0 = g * LANES;
                // Every lane starts at the root: its split is read once, not per lane.
                let root = sp[0];
                let mut idx = [0usize; LANES];
                for l in 0..LANES {
                    idx[l] =
                        1 + usize::from(buf[root.offset as usize + row0 + l] >= root.threshold);
                }
                for _ in 1..H {
                    for l in 0..LANES {
                        let s = sp[idx[l] & 0xFF];
                        let v = buf[s.offset as usize + row0 + l];
                        idx[l] = 2 * idx[l] + 1 + usize::from(v >= s.threshold);
                    }
                }
                for l in 0..LANES {
                    acc[row0 + l] += lv[(idx[l] - base) & 0xFF];
                }
            }
        }
        for r in 0..n {
            out[start + r] = (f64::from(acc[r]) * scale).exp2();
        }
        start += n;
    }
}

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
    } else if x.rows() == 1 {
        out[0] = score_one(m, x.row(0));
    } else if !m.fast.splits.is_empty() && x.rows() >= LANES {
        score_fast(m, x, out);
    } else {
        score_blocked(m, x, out);
    }
}

/// One row (the streaming detector's case): trees walked eight at a time, so their
/// independent steps overlap in the CPU; leaf values are added in tree order, as the other
/// paths add them, so the score is the same to the bit.
fn score_one(m: &IsolationForest, row: &[f32]) -> f64 {
    const GROUP: usize = 8;
    let height = m.height;
    let stride = 1usize << height;
    let internal = stride - 1;
    let trees = m.params.trees;
    let mut acc = 0f32;
    let mut t = 0;
    while t < trees {
        let n = GROUP.min(trees - t);
        let mut idx = [0usize; GROUP];
        for _ in 0..height {
            for (j, i) in idx.iter_mut().enumerate().take(n) {
                let s = m.splits[(t + j) * stride + (*i & internal)];
                let v = row.get(s.feature as usize).copied().unwrap_or(0.0);
                *i = 2 * *i + 1 + usize::from(v >= s.threshold);
            }
        }
        for (j, i) in idx.iter().enumerate().take(n) {
            acc += m.leaves[(t + j) * stride + ((*i - internal) & internal)];
        }
        t += n;
    }
    (f64::from(acc) * exponent_scale(m)).exp2()
}

/// The general path: any height and width, rows in blocks of eight.
fn score_blocked(m: &IsolationForest, x: MatrixView<'_>, out: &mut [f64]) {
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
