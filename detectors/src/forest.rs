//! A random forest of CART classification trees (Breiman 2001): Gini impurity, bootstrap
//! samples, a random subset of features at every split, class probabilities averaged over
//! the trees, and the out-of-bag accuracy as a free generalisation estimate.

use rand::Rng;
use rand::seq::index;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::rng;
use crate::{Error, MatrixView, Result};

/// Parameters of [`RandomForest::fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomForestParams {
    /// Trees (default 100).
    pub trees: usize,
    /// Deepest split (default 16).
    pub max_depth: usize,
    /// Fewest rows in a leaf (default 1).
    pub min_samples_leaf: usize,
    /// Features tried per split; `None` = ⌈√features⌉.
    pub max_features: Option<usize>,
    /// Seed: same data, parameters and seed give the same forest.
    pub seed: u64,
}

impl Default for RandomForestParams {
    fn default() -> Self {
        Self {
            trees: 100,
            max_depth: 16,
            min_samples_leaf: 1,
            max_features: None,
            seed: 42,
        }
    }
}

/// A node: `feature == LEAF` marks a leaf whose class distribution starts at `left`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u32,
    threshold: f32,
    left: u32,
    right: u32,
}

const LEAF: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tree {
    nodes: Vec<Node>,
    /// `classes` probabilities per leaf.
    leaves: Vec<f32>,
}

/// Precision, recall and F1 of one class on held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub class: String,
    /// Of the rows predicted as this class, the share that were.
    pub precision: f64,
    /// Of the rows of this class, the share found.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Held-out rows of this class.
    pub support: usize,
}

/// A fitted random forest classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomForest {
    params: RandomForestParams,
    classes: usize,
    features: usize,
    trees: Vec<Tree>,
    /// Out-of-bag accuracy, when every row was out of bag at least once.
    oob_accuracy: Option<f64>,
}

impl RandomForest {
    /// Fits on rows `x` with labels in `0..classes`.
    pub fn fit(
        x: MatrixView<'_>,
        labels: &[usize],
        classes: usize,
        params: &RandomForestParams,
    ) -> Result<Self> {
        if x.rows() != labels.len() {
            return Err(Error::InvalidInput(format!(
                "{} rows but {} labels",
                x.rows(),
                labels.len()
            )));
        }
        if x.rows() < 2 || classes < 2 {
            return Err(Error::InvalidInput(
                "at least 2 rows and 2 classes are needed".into(),
            ));
        }
        if let Some(l) = labels.iter().find(|l| **l >= classes) {
            return Err(Error::InvalidInput(format!(
                "label {l} is not below {classes}"
            )));
        }
        if params.trees == 0
            || params.trees > 10_000
            || params.max_depth == 0
            || params.min_samples_leaf == 0
        {
            return Err(Error::InvalidParams(
                "trees must be 1..=10000, max depth and min samples per leaf at least 1".into(),
            ));
        }
        let d = x.cols();
        let mtry = params
            .max_features
            .unwrap_or_else(|| (d as f64).sqrt().ceil() as usize)
            .clamp(1, d);
        let n = x.rows();
        let built: Vec<(Tree, Vec<bool>)> = (0..params.trees)
            .into_par_iter()
            .map(|t| {
                let mut rng = rng::stream(params.seed, t as u64);
                let mut in_bag = vec![false; n];
                let mut rows: Vec<u32> = (0..n)
                    .map(|_| {
                        let r = rng.random_range(0..n);
                        in_bag[r] = true;
                        r as u32
                    })
                    .collect();
                let mut b = Builder {
                    x,
                    labels,
                    classes,
                    mtry,
                    params,
                    rng: &mut rng,
                    tree: Tree {
                        nodes: Vec::new(),
                        leaves: Vec::new(),
                    },
                };
                b.grow(&mut rows, 0);
                (b.tree, in_bag)
            })
            .collect();
        // Out-of-bag votes.
        let mut votes = vec![0f32; n * classes];
        let mut seen = vec![false; n];
        for (tree, in_bag) in &built {
            for r in (0..n).filter(|r| !in_bag[*r]) {
                let p = leaf_of(tree, x.row(r), classes);
                for (v, q) in votes[r * classes..(r + 1) * classes].iter_mut().zip(p) {
                    *v += q;
                }
                seen[r] = true;
            }
        }
        let oob_accuracy = seen.iter().all(|s| *s).then(|| {
            let correct = (0..n)
                .filter(|&r| argmax(&votes[r * classes..(r + 1) * classes]) == labels[r])
                .count();
            correct as f64 / n as f64
        });
        Ok(Self {
            params: params.clone(),
            classes,
            features: d,
            trees: built.into_iter().map(|(t, _)| t).collect(),
            oob_accuracy,
        })
    }

    /// Checks a deserialised forest is consistent: children point forward inside the
    /// tree (so walking ends), features and leaf slots exist.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Format(format!("inconsistent random forest: {m}")));
        if self.trees.is_empty() || self.classes < 2 || self.features == 0 {
            return bad("no trees, classes or features");
        }
        for t in &self.trees {
            if t.leaves.len() % self.classes != 0 || t.nodes.is_empty() {
                return bad("leaf distributions do not match the classes");
            }
            let slots = t.leaves.len() / self.classes;
            for (i, n) in t.nodes.iter().enumerate() {
                let ok = if n.feature == LEAF {
                    (n.left as usize) < slots
                } else {
                    (n.feature as usize) < self.features
                        && (n.left as usize) > i
                        && (n.right as usize) > i
                        && (n.left as usize) < t.nodes.len()
                        && (n.right as usize) < t.nodes.len()
                };
                if !ok {
                    return bad("a node points outside its tree");
                }
            }
        }
        Ok(())
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of features a row must have.
    pub fn features(&self) -> usize {
        self.features
    }

    /// The out-of-bag accuracy.
    pub fn oob_accuracy(&self) -> Option<f64> {
        self.oob_accuracy
    }

    /// The parameters it was fitted with.
    pub fn params(&self) -> &RandomForestParams {
        &self.params
    }

    /// Class probabilities of one row.
    pub fn predict_proba(&self, row: &[f32]) -> Result<Vec<f64>> {
        if row.len() != self.features {
            return Err(Error::SchemaMismatch(format!(
                "the model expects {} features, the row has {}",
                self.features,
                row.len()
            )));
        }
        let mut p = vec![0f64; self.classes];
        for t in &self.trees {
            for (a, b) in p.iter_mut().zip(leaf_of(t, row, self.classes)) {
                *a += f64::from(*b);
            }
        }
        let k = self.trees.len() as f64;
        p.iter_mut().for_each(|v| *v /= k);
        Ok(p)
    }

    /// The most probable class of one row.
    pub fn predict(&self, row: &[f32]) -> Result<usize> {
        let p = self.predict_proba(row)?;
        Ok(argmax(&p))
    }

    /// Per-class precision, recall and F1 on labelled rows.
    pub fn evaluate(
        &self,
        x: MatrixView<'_>,
        labels: &[usize],
        names: &[&str],
    ) -> Result<Vec<ClassMetrics>> {
        let mut tp = vec![0usize; self.classes];
        let mut fp = vec![0usize; self.classes];
        let mut fneg = vec![0usize; self.classes];
        let mut support = vec![0usize; self.classes];
        for (r, &truth) in labels.iter().enumerate().take(x.rows()) {
            let guess = self.predict(x.row(r))?;
            support[truth] += 1;
            if guess == truth {
                tp[truth] += 1;
            } else {
                fp[guess] += 1;
                fneg[truth] += 1;
            }
        }
        Ok((0..self.classes)
            .map(|c| {
                let (precision, recall, f1) =
                    crate::metrics::precision_recall_f1(tp[c], fp[c], fneg[c]);
                ClassMetrics {
                    class: names
                        .get(c)
                        .map_or_else(|| c.to_string(), |s| s.to_string()),
                    precision,
                    recall,
                    f1,
                    support: support[c],
                }
            })
            .collect())
    }
}

fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn leaf_of<'a>(tree: &'a Tree, row: &[f32], classes: usize) -> &'a [f32] {
    let mut i = 0usize;
    loop {
        let n = tree.nodes[i];
        if n.feature == LEAF {
            let at = n.left as usize * classes;
            return &tree.leaves[at..at + classes];
        }
        i = if row[n.feature as usize] <= n.threshold {
            n.left
        } else {
            n.right
        } as usize;
    }
}

struct Builder<'a> {
    x: MatrixView<'a>,
    labels: &'a [usize],
    classes: usize,
    mtry: usize,
    params: &'a RandomForestParams,
    rng: &'a mut rng::DetRng,
    tree: Tree,
}

fn gini(counts: &[usize], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    1.0 - counts.iter().map(|&c| (c as f64 / n).powi(2)).sum::<f64>()
}

impl Builder<'_> {
    fn leaf(&mut self, rows: &[u32]) -> u32 {
        let mut counts = vec![0f32; self.classes];
        for &r in rows {
            counts[self.labels[r as usize]] += 1.0;
        }
        let total = rows.len().max(1) as f32;
        let slot = (self.tree.leaves.len() / self.classes) as u32;
        self.tree.leaves.extend(counts.iter().map(|c| c / total));
        let id = self.tree.nodes.len() as u32;
        self.tree.nodes.push(Node {
            feature: LEAF,
            threshold: 0.0,
            left: slot,
            right: 0,
        });
        id
    }

    /// Grows a subtree over `rows` and returns its node index.
    fn grow(&mut self, rows: &mut [u32], depth: usize) -> u32 {
        let mut counts = vec![0usize; self.classes];
        for &r in rows.iter() {
            counts[self.labels[r as usize]] += 1;
        }
        let pure = counts.iter().filter(|c| **c > 0).count() <= 1;
        if pure || depth >= self.params.max_depth || rows.len() < 2 * self.params.min_samples_leaf {
            return self.leaf(rows);
        }
        let parent = gini(&counts, rows.len());
        let d = self.x.cols();
        let mut best: Option<(f64, usize, f32)> = None;
        let mut pairs: Vec<(f32, usize)> = Vec::with_capacity(rows.len());
        let min_leaf = self.params.min_samples_leaf;
        for f in index::sample(self.rng, d, self.mtry) {
            pairs.clear();
            pairs.extend(
                rows.iter()
                    .map(|&r| (self.x.row(r as usize)[f], self.labels[r as usize])),
            );
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut left = vec![0usize; self.classes];
            let n = pairs.len();
            for i in 0..n - 1 {
                left[pairs[i].1] += 1;
                if pairs[i].0 == pairs[i + 1].0 || i + 1 < min_leaf || n - i - 1 < min_leaf {
                    continue;
                }
                let right: Vec<usize> = counts.iter().zip(&left).map(|(c, l)| c - l).collect();
                let nl = i + 1;
                let impurity = (nl as f64 * gini(&left, nl)
                    + (n - nl) as f64 * gini(&right, n - nl))
                    / n as f64;
                let gain = parent - impurity;
                if best.is_none_or(|(g, _, _)| gain > g) {
                    let mid = pairs[i].0 + (pairs[i + 1].0 - pairs[i].0) / 2.0;
                    // Midpoints can round up onto the right value; keep the left one then.
                    let threshold = if mid >= pairs[i + 1].0 {
                        pairs[i].0
                    } else {
                        mid
                    };
                    best = Some((gain, f, threshold));
                }
            }
        }
        let Some((gain, f, threshold)) = best else {
            return self.leaf(rows);
        };
        if gain <= 0.0 {
            return self.leaf(rows);
        }
        let mut split = 0;
        for i in 0..rows.len() {
            if self.x.row(rows[i] as usize)[f] <= threshold {
                rows.swap(i, split);
                split += 1;
            }
        }
        let id = self.tree.nodes.len() as u32;
        self.tree.nodes.push(Node {
            feature: f as u32,
            threshold,
            left: 0,
            right: 0,
        });
        let (l, r) = rows.split_at_mut(split);
        let left = self.grow(l, depth + 1);
        let right = self.grow(r, depth + 1);
        self.tree.nodes[id as usize].left = left;
        self.tree.nodes[id as usize].right = right;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matrix;

    #[test]
    fn separates_three_blobs_with_probabilities_and_oob() {
        let mut rng = rng::stream(1, 0);
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..600 {
            let c = i % 3;
            data.push((c as f64 * 3.0 + rng::normal(&mut rng)) as f32);
            data.push((rng::normal(&mut rng)) as f32);
            labels.push(c);
        }
        let x = Matrix::new(data, 2).unwrap();
        let f = RandomForest::fit(
            x.view(),
            &labels,
            3,
            &RandomForestParams {
                trees: 30,
                ..Default::default()
            },
        )
        .unwrap();
        let oob = f.oob_accuracy().unwrap();
        assert!(oob > 0.85, "oob {oob}");
        let p = f.predict_proba(&[6.0, 0.0]).unwrap();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert_eq!(f.predict(&[6.0, 0.0]).unwrap(), 2);
        assert_eq!(f.predict(&[-1.0, 0.0]).unwrap(), 0);
        let m = f.evaluate(x.view(), &labels, &["a", "b", "c"]).unwrap();
        assert!(m.iter().all(|c| c.f1 > 0.9), "{m:?}");
        let again = RandomForest::fit(
            x.view(),
            &labels,
            3,
            &RandomForestParams {
                trees: 30,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(f, again);
        assert!(f.predict_proba(&[1.0]).is_err());
    }

    #[test]
    fn refuses_bad_labels() {
        let x = Matrix::new(vec![0.0, 1.0, 2.0], 1).unwrap();
        assert!(
            RandomForest::fit(x.view(), &[0, 1, 5], 2, &RandomForestParams::default()).is_err()
        );
        assert!(RandomForest::fit(x.view(), &[0, 1], 2, &RandomForestParams::default()).is_err());
    }
}
