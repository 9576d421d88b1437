//! The isolation forest (Liu, Ting and Zhou, ICDM 2008) and its extended, hyperplane
//! variant (Hariri, Carrasco Kind and Brunner, 2018).
//!
//! Every tree is stored as a complete binary tree of height ⌈log2 ψ⌉: a branch that the
//! algorithm ends early becomes a chain of pass-through nodes (threshold +∞, always left)
//! down to one bottom leaf that carries `depth + c(size)`. Scoring is then the same fixed
//! number of steps for every row — no branch to mispredict — and a block of rows walks
//! each tree together so the independent steps overlap in the CPU.

mod build;
mod score;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::{Error, MatrixView, Result};

/// Parameters of [`IsolationForest::fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationForestParams {
    /// Number of trees `t` (default 100).
    pub trees: usize,
    /// Subsample size ψ per tree (default 256); fewer rows than ψ use all rows.
    pub sample_size: usize,
    /// Seed: the same data, parameters and seed give the same model on any thread count.
    pub seed: u64,
    /// `None` for axis-parallel splits; `Some(e)` for the extended forest with extension
    /// level `e` (`e + 1` non-zero components per hyperplane normal, `0 ≤ e < features`).
    #[serde(default)]
    pub extension_level: Option<usize>,
}

impl Default for IsolationForestParams {
    fn default() -> Self {
        Self {
            trees: 100,
            sample_size: 256,
            seed: 42,
            extension_level: None,
        }
    }
}

/// One internal node of the flat layout: go right when `x[feature] >= threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[repr(C)]
pub(crate) struct Split {
    pub(crate) threshold: f32,
    pub(crate) feature: u32,
}

impl Split {
    /// The node below an early leaf: every row goes left.
    pub(crate) const PASS: Split = Split {
        threshold: f32::INFINITY,
        feature: 0,
    };
}

/// A fitted isolation forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    params: IsolationForestParams,
    features: usize,
    /// Levels of internal nodes; every path has exactly this many steps.
    height: u32,
    /// ψ actually used (≤ the rows fitted on).
    sample_size: usize,
    /// `2^height` entries per tree (the last one unused) so indices can be masked.
    #[serde(with = "splits_serde")]
    splits: Vec<Split>,
    /// Extended forest only: `features` normal components per internal node slot.
    #[serde(default)]
    normals: Vec<f32>,
    /// `2^height` leaves per tree: depth + c(size of the leaf).
    leaves: Vec<f32>,
    /// The fast scoring layout (see `score::Fast`), derived from the above; empty when
    /// the forest is too deep or too wide for it, or not prepared yet.
    #[serde(skip)]
    fast: score::Fast,
    /// The tree [`refresh`](IsolationForest::refresh) replaces next (oldest first).
    #[serde(skip)]
    refresh_at: usize,
}

/// c(n): the average path length of an unsuccessful search in a binary search tree of
/// `n` items, the normaliser of the score and the correction at external nodes.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let m = (n - 1) as f64;
            2.0 * (m.ln() + 0.577_215_664_901_532_9) - 2.0 * m / n as f64
        }
    }
}

impl IsolationForest {
    /// Fits `params.trees` trees on subsamples of `x`, in parallel on the rayon pool.
    pub fn fit(x: MatrixView<'_>, params: &IsolationForestParams) -> Result<Self> {
        if params.trees == 0 || params.trees > 10_000 {
            return Err(Error::InvalidParams(format!(
                "trees must be between 1 and 10000, got {}",
                params.trees
            )));
        }
        if params.sample_size < 2 || params.sample_size > 65_536 {
            return Err(Error::InvalidParams(format!(
                "sample size must be between 2 and 65536, got {}",
                params.sample_size
            )));
        }
        if x.rows() < 2 {
            return Err(Error::InvalidInput(format!(
                "at least 2 rows are needed to fit, got {}",
                x.rows()
            )));
        }
        if let Some(e) = params.extension_level
            && e >= x.cols()
        {
            return Err(Error::InvalidParams(format!(
                "extension level must be below the number of features ({}), got {e}",
                x.cols()
            )));
        }
        if x.as_slice().iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(
                "the data holds a value that is not a finite number".into(),
            ));
        }
        Ok(build::fit(x, params))
    }

    /// Replaces the `count` oldest trees with trees grown on `x` (a streaming forest: each
    /// refresh costs `count` trees, not the whole forest, and every tree is replaced in
    /// turn). Returns `Ok(false)`, changing nothing, when `x` would give trees of another
    /// shape (fewer rows than ψ, other features); fit afresh then.
    pub fn refresh(&mut self, x: MatrixView<'_>, count: usize, seed: u64) -> Result<bool> {
        let count = count.clamp(1, self.params.trees);
        let params = IsolationForestParams {
            trees: count,
            sample_size: self.params.sample_size,
            seed,
            extension_level: self.params.extension_level,
        };
        let fresh = Self::fit(x, &params)?;
        if fresh.height != self.height
            || fresh.sample_size != self.sample_size
            || fresh.features != self.features
        {
            return Ok(false);
        }
        let stride = 1usize << self.height;
        let width = stride * self.features;
        for t in 0..count {
            let to = (self.refresh_at + t) % self.params.trees;
            self.splits[to * stride..(to + 1) * stride]
                .copy_from_slice(&fresh.splits[t * stride..(t + 1) * stride]);
            self.leaves[to * stride..(to + 1) * stride]
                .copy_from_slice(&fresh.leaves[t * stride..(t + 1) * stride]);
            if !self.normals.is_empty() {
                self.normals[to * width..(to + 1) * width]
                    .copy_from_slice(&fresh.normals[t * width..(t + 1) * width]);
            }
        }
        self.refresh_at = (self.refresh_at + count) % self.params.trees;
        if self.fast.is_built() {
            self.prepare();
        }
        Ok(true)
    }

    /// Drops the fast scoring layout (about 12 bytes per node slot): a model that scores one
    /// row at a time never uses it, and a streaming model that is refreshed often would
    /// rebuild it at every refresh. Batch scoring still works, only slower; [`prepare`]
    /// brings it back.
    ///
    /// [`prepare`]: IsolationForest::prepare
    pub fn release_fast_layout(&mut self) {
        self.fast = score::Fast::default();
    }

    /// Builds the fast scoring layout; done by `fit` and by [`ModelFile`](crate::ModelFile)
    /// loading. Scoring works without it, only slower.
    pub fn prepare(&mut self) {
        self.fast = score::Fast::build(self);
    }

    /// Checks a deserialised forest is consistent (sizes, feature indices), so a damaged
    /// or hostile model file is refused instead of mis-scoring.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Format(format!("inconsistent isolation forest: {m}")));
        if self.height == 0 || self.height > 16 || self.features == 0 || self.params.trees == 0 {
            return bad("height, features or trees out of range");
        }
        let stride = 1usize << self.height;
        let slots = self.params.trees * stride;
        if self.splits.len() != slots || self.leaves.len() != slots {
            return bad("node arrays do not match trees × 2^height");
        }
        if !self.normals.is_empty() && self.normals.len() != slots * self.features {
            return bad("normal vectors do not match the nodes");
        }
        if self
            .splits
            .iter()
            .any(|s| s.feature as usize >= self.features || s.threshold.is_nan())
        {
            return bad("a split names a feature the model does not have");
        }
        if self
            .leaves
            .iter()
            .chain(&self.normals)
            .any(|v| !v.is_finite())
        {
            return bad("a leaf or normal is not finite");
        }
        Ok(())
    }

    /// The parameters it was fitted with.
    pub fn params(&self) -> &IsolationForestParams {
        &self.params
    }

    /// Number of features a row must have.
    pub fn features(&self) -> usize {
        self.features
    }

    /// ψ actually used.
    pub fn sample_size(&self) -> usize {
        self.sample_size
    }

    /// Whether this is the extended (hyperplane) variant.
    pub fn is_extended(&self) -> bool {
        !self.normals.is_empty()
    }

    fn check_cols(&self, cols: usize) -> Result<()> {
        if cols != self.features {
            return Err(Error::SchemaMismatch(format!(
                "the model was fitted on {} features, the data has {cols}",
                self.features
            )));
        }
        Ok(())
    }

    /// Anomaly scores in (0, 1] for every row of `x`, rows split across the rayon pool.
    pub fn score(&self, x: MatrixView<'_>) -> Result<Vec<f64>> {
        let mut out = vec![0.0; x.rows()];
        self.score_into(x, &mut out)?;
        Ok(out)
    }

    /// Like [`score`](Self::score), into a caller's buffer of one slot per row.
    pub fn score_into(&self, x: MatrixView<'_>, out: &mut [f64]) -> Result<()> {
        self.check_cols(x.cols())?;
        if out.len() != x.rows() {
            return Err(Error::InvalidInput(format!(
                "output has {} slots for {} rows",
                out.len(),
                x.rows()
            )));
        }
        score::score_parallel(self, x, out);
        Ok(())
    }

    /// The score of one row.
    pub fn score_row(&self, row: &[f32]) -> Result<f64> {
        let view = MatrixView::new(row, row.len().max(1))?;
        self.check_cols(view.cols())?;
        let mut out = [0.0];
        score::score_serial(self, view, &mut out);
        Ok(out[0])
    }

    /// The mean path length of one row over the trees, walked node by node (no flat
    /// tricks), and each feature's share of the isolation: along every tree's path a split
    /// on feature `f` adds `1 / h` (h the path length), so features that isolate the row
    /// in few steps weigh most. Shares sum to 1.
    pub fn explain_row(&self, row: &[f32]) -> Result<(f64, Vec<f64>)> {
        self.check_cols(row.len())?;
        let mut contrib = vec![0.0; self.features];
        let mut total_h = 0.0;
        let stride = 1usize << self.height;
        let internal = stride - 1;
        for t in 0..self.params.trees {
            let splits = &self.splits[t * stride..(t + 1) * stride];
            let mut idx = 0usize;
            let mut used: Vec<usize> = Vec::with_capacity(self.height as usize);
            for _ in 0..self.height {
                let s = splits[idx];
                let right = if self.is_extended() {
                    let n = &self.normals[(t * stride + idx) * self.features..][..self.features];
                    if s.threshold.is_finite() {
                        for (f, w) in n.iter().enumerate() {
                            if *w != 0.0 {
                                used.push(f);
                            }
                        }
                    }
                    dot(n, row) >= s.threshold
                } else {
                    if s.threshold.is_finite() {
                        used.push(s.feature as usize);
                    }
                    row[s.feature as usize] >= s.threshold
                };
                idx = 2 * idx + 1 + usize::from(right);
            }
            let h = f64::from(self.leaves[t * stride + idx - internal]);
            total_h += h;
            if h > 0.0 && !used.is_empty() {
                let w = 1.0 / h;
                for f in used {
                    contrib[f] += w;
                }
            }
        }
        let sum: f64 = contrib.iter().sum();
        if sum > 0.0 {
            contrib.iter_mut().for_each(|c| *c /= sum);
        }
        Ok((total_h / self.params.trees as f64, contrib))
    }

    /// The anomaly score of a mean path length `h` (as [`explain_row`](Self::explain_row)
    /// returns it): 2^(−h / c(ψ)). Lets a caller that explains a row skip scoring it again.
    pub fn score_of_path_length(&self, h: f64) -> f64 {
        2f64.powf(-h / average_path_length(self.sample_size).max(f64::MIN_POSITIVE))
    }

    /// The score threshold that flags `contamination` of `x` (a share in (0, 0.5]) as
    /// anomalous: the matching upper quantile of the scores.
    pub fn threshold_for_contamination(
        &self,
        x: MatrixView<'_>,
        contamination: f64,
    ) -> Result<f64> {
        if !(contamination > 0.0 && contamination <= 0.5) {
            return Err(Error::InvalidParams(format!(
                "contamination must be in (0, 0.5], got {contamination}"
            )));
        }
        let mut scores = self.score(x)?;
        scores.sort_by(|a, b| b.total_cmp(a));
        let k = ((contamination * scores.len() as f64).ceil() as usize).clamp(1, scores.len());
        Ok(scores[k - 1])
    }
}

/// Splits as two arrays in files; JSON has no infinity, so a pass-through is `null`.
mod splits_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Split;

    #[derive(Serialize, Deserialize)]
    struct Columns {
        thresholds: Vec<Option<f32>>,
        features: Vec<u32>,
    }

    pub(super) fn serialize<S: Serializer>(splits: &[Split], s: S) -> Result<S::Ok, S::Error> {
        Columns {
            thresholds: splits
                .iter()
                .map(|x| x.threshold.is_finite().then_some(x.threshold))
                .collect(),
            features: splits.iter().map(|x| x.feature).collect(),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Split>, D::Error> {
        let c = Columns::deserialize(d)?;
        if c.thresholds.len() != c.features.len() {
            return Err(serde::de::Error::custom(
                "thresholds and features differ in length",
            ));
        }
        Ok(c.thresholds
            .into_iter()
            .zip(c.features)
            .map(|(t, feature)| Split {
                threshold: t.unwrap_or(f32::INFINITY),
                feature,
            })
            .collect())
    }
}

/// `n · x` in `f32`, the extended forest's projection.
pub(crate) fn dot(n: &[f32], x: &[f32]) -> f32 {
    n.iter().zip(x).map(|(a, b)| a * b).sum()
}
