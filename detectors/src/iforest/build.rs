//! Growing isolation trees straight into the flat, complete layout.

use rand::Rng;
use rand::seq::index;
use rayon::prelude::*;

use super::{IsolationForest, IsolationForestParams, Split, average_path_length};
use crate::MatrixView;
use crate::rng::{self, DetRng};

/// One tree's slots: `stride` splits (+ `stride × d` normals) and `stride` leaves.
struct TreeOut {
    splits: Vec<Split>,
    normals: Vec<f32>,
    leaves: Vec<f32>,
}

pub(super) fn fit(x: MatrixView<'_>, params: &IsolationForestParams) -> IsolationForest {
    let psi = params.sample_size.min(x.rows());
    let height = (psi as f64).log2().ceil().max(1.0) as u32;
    let stride = 1usize << height;
    let d = x.cols();
    let trees: Vec<TreeOut> = (0..params.trees)
        .into_par_iter()
        .map(|t| {
            let mut rng = rng::stream(params.seed, t as u64);
            // Sample rows without replacement, then copy them column-major so the per-node
            // min/max scans read contiguous memory.
            let picked = index::sample(&mut rng, x.rows(), psi);
            let mut cols = vec![0f32; d * psi];
            for (j, r) in picked.iter().enumerate() {
                for (f, v) in x.row(r).iter().enumerate() {
                    cols[f * psi + j] = *v;
                }
            }
            let mut tree = Grower {
                cols: &cols,
                psi,
                d,
                height,
                stride,
                extension: params.extension_level,
                rng: &mut rng,
                out: TreeOut {
                    splits: vec![Split::PASS; stride],
                    normals: if params.extension_level.is_some() {
                        vec![0.0; stride * d]
                    } else {
                        Vec::new()
                    },
                    leaves: vec![0.0; stride],
                },
                scratch: Vec::new(),
            };
            let mut rows: Vec<u32> = (0..psi as u32).collect();
            tree.grow(0, 0, &mut rows);
            tree.out
        })
        .collect();
    let mut splits = Vec::with_capacity(trees.len() * stride);
    let mut normals = Vec::new();
    let mut leaves = Vec::with_capacity(trees.len() * stride);
    for t in trees {
        splits.extend(t.splits);
        normals.extend(t.normals);
        leaves.extend(t.leaves);
    }
    let mut forest = IsolationForest {
        params: params.clone(),
        features: d,
        height,
        sample_size: psi,
        splits,
        normals,
        leaves,
        fast: Default::default(),
        refresh_at: 0,
    };
    forest.prepare();
    forest
}

struct Grower<'a> {
    cols: &'a [f32],
    psi: usize,
    d: usize,
    height: u32,
    stride: usize,
    extension: Option<usize>,
    rng: &'a mut DetRng,
    out: TreeOut,
    scratch: Vec<usize>,
}

impl Grower<'_> {
    fn value(&self, row: u32, f: usize) -> f32 {
        self.cols[f * self.psi + row as usize]
    }

    /// Grows the subtree at heap index `node`, `depth` levels below the root.
    fn grow(&mut self, node: usize, depth: u32, rows: &mut [u32]) {
        if depth == self.height || rows.len() <= 1 {
            self.leaf(node, depth, rows.len());
            return;
        }
        let split = match self.extension {
            None => self.axis_split(node, rows),
            Some(e) => self.hyperplane_split(node, rows, e),
        };
        let Some(threshold) = split else {
            self.leaf(node, depth, rows.len());
            return;
        };
        // Partition in place: left holds rows with projection < threshold.
        let mut left = 0;
        for i in 0..rows.len() {
            if self.project(node, rows[i]) < threshold {
                rows.swap(i, left);
                left += 1;
            }
        }
        let (l, r) = rows.split_at_mut(left);
        self.grow(2 * node + 1, depth + 1, l);
        self.grow(2 * node + 2, depth + 1, r);
    }

    /// The value a row is compared with at `node` (after its split is set).
    fn project(&self, node: usize, row: u32) -> f32 {
        match self.extension {
            None => self.value(row, self.out.splits[node].feature as usize),
            Some(_) => {
                let n = &self.out.normals[node * self.d..(node + 1) * self.d];
                n.iter()
                    .enumerate()
                    .map(|(f, w)| {
                        if *w == 0.0 {
                            0.0
                        } else {
                            w * self.value(row, f)
                        }
                    })
                    .sum()
            }
        }
    }

    /// A random feature among those not constant here, split uniformly between its
    /// minimum and maximum; `None` when every feature is constant.
    fn axis_split(&mut self, node: usize, rows: &[u32]) -> Option<f32> {
        self.scratch.clear();
        let first = *rows.first()?;
        for f in 0..self.d {
            // Constant here means every row holds the first row's value. A feature that is
            // not constant usually shows it within a few rows, so the scan stops early;
            // only the chosen feature is scanned whole, for its range. (The values are
            // finite, checked at fit: `!=` here is `lo < hi` of a full scan.)
            let col = &self.cols[f * self.psi..(f + 1) * self.psi];
            let v0 = col.get(first as usize).copied();
            if rows.iter().any(|&r| col.get(r as usize).copied() != v0) {
                self.scratch.push(f);
            }
        }
        if self.scratch.is_empty() {
            return None;
        }
        let f = self.scratch[self.rng.random_range(0..self.scratch.len())];
        let col = &self.cols[f * self.psi..(f + 1) * self.psi];
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        // Plain comparisons: the values are finite, so the NaN handling of f32::min/max
        // is pure cost on the hottest loop of a fit.
        for &r in rows {
            let v = col.get(r as usize).copied().unwrap_or(lo);
            lo = if v < lo { v } else { lo };
            hi = if v > hi { v } else { hi };
        }
        let u: f32 = self.rng.random::<f32>();
        let mut threshold = lo + u * (hi - lo);
        // Rounding can land on the minimum; then nothing would go left.
        if threshold <= lo {
            threshold = hi;
        }
        self.out.splits[node] = Split {
            threshold,
            feature: f as u32,
        };
        Some(threshold)
    }

    /// A random hyperplane through a random point of the node's bounding box, with
    /// `extension + 1` non-zero normal components (the extended forest).
    fn hyperplane_split(&mut self, node: usize, rows: &[u32], extension: usize) -> Option<f32> {
        let d = self.d;
        let mut lo = vec![f32::INFINITY; d];
        let mut hi = vec![f32::NEG_INFINITY; d];
        for f in 0..d {
            for &r in rows {
                let v = self.value(r, f);
                lo[f] = lo[f].min(v);
                hi[f] = hi[f].max(v);
            }
        }
        if (0..d).all(|f| lo[f] >= hi[f]) {
            return None;
        }
        let mut normal: Vec<f32> = (0..d).map(|_| rng::normal(self.rng) as f32).collect();
        let zeroed = d - extension - 1;
        for f in index::sample(self.rng, d, zeroed) {
            normal[f] = 0.0;
        }
        let mut b = 0f32;
        for f in 0..d {
            let p = lo[f] + self.rng.random::<f32>() * (hi[f] - lo[f]);
            b += normal[f] * p;
        }
        self.out.normals[node * d..(node + 1) * d].copy_from_slice(&normal);
        self.out.splits[node] = Split {
            threshold: b,
            feature: 0,
        };
        Some(b)
    }

    /// Ends the path at `node`: pass-through below, `depth + c(size)` at the bottom.
    fn leaf(&mut self, node: usize, depth: u32, size: usize) {
        let value = depth as f32 + average_path_length(size) as f32;
        let below = self.height - depth;
        // Every internal descendant (and the node itself) passes rows to the left.
        for k in 0..below {
            let first = ((node + 1) << k) - 1;
            for i in first..first + (1 << k) {
                self.out.splits[i] = Split::PASS;
                if !self.out.normals.is_empty() {
                    self.out.normals[i * self.d..(i + 1) * self.d].fill(0.0);
                }
            }
        }
        let first = ((node + 1) << below) - 1 - (self.stride - 1);
        self.out.leaves[first..first + (1 << below)].fill(value);
    }
}
