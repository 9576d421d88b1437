//! Scoring detections the way the Numenta Anomaly Benchmark (NAB v1.1) does, so a backtest
//! says how good the detector's judgement is on labelled series, not only what it flagged.
//!
//! The rules (`nab-dev/REFERENCE.md`): per file, the first min(⌊0.15 n⌋, 750) rows are
//! probationary and ignored; a detection inside a labelled window earns a weight that falls
//! along a scaled sigmoid from the window's first row to its last, and only the best one
//! counts; a window without one costs `fn`; a detection outside every window costs `fp`,
//! less right after a window. One threshold serves the whole corpus, chosen per profile as
//! the one with the highest total; the total is normalised between "no detection at all"
//! (0) and "every window at its first row" (100).

use crate::backtest::BacktestError;
use std::collections::BTreeMap;

/// One scoring profile: the weights of a true positive, a false positive and a miss.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// Profile name (`standard`, `reward_low_FP_rate`, `reward_low_FN_rate`).
    pub name: String,
    /// Weight of a window's best detection.
    pub tp: f64,
    /// Cost of a detection outside every window.
    pub fp: f64,
    /// Cost of a window without a detection.
    pub fn_: f64,
}

/// NAB v1.1's three profiles.
pub fn standard_profiles() -> Vec<Profile> {
    let p = |name: &str, fp: f64, fn_: f64| Profile {
        name: name.to_string(),
        tp: 1.0,
        fp,
        fn_,
    };
    vec![
        p("standard", 0.11, 1.0),
        p("reward_low_FP_rate", 0.22, 1.0),
        p("reward_low_FN_rate", 0.11, 2.0),
    ]
}

/// Reads profiles in NAB's `profiles.json` layout (`{name: {CostMatrix: {tpWeight, ...}}}`).
pub fn parse_profiles(json: &str) -> Result<Vec<Profile>, BacktestError> {
    profiles_of(json).map_err(BacktestError::Labels)
}

/// [`parse_profiles`], its message naming what is wrong.
fn profiles_of(json: &str) -> Result<Vec<Profile>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("profiles: not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("profiles: expected an object of profiles")?;
    let mut out = Vec::new();
    for (name, p) in obj {
        let w = |k: &str| {
            p.get("CostMatrix")
                .and_then(|c| c.get(k))
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| format!("profiles: `{name}` has no CostMatrix.{k}"))
        };
        out.push(Profile {
            name: name.clone(),
            tp: w("tpWeight")?,
            fp: w("fpWeight")?,
            fn_: w("fnWeight")?,
        });
    }
    Ok(out)
}

/// Labelled windows per file (keys are paths relative to the data folder, `/`-separated),
/// each `[start, end]` in epoch milliseconds, inclusive.
pub type Labels = BTreeMap<String, Vec<(i64, i64)>>;

/// Reads NAB's `combined_windows.json` (`{"dir/file.csv": [["start", "end"], ...]}`).
pub fn parse_labels(json: &str) -> Result<Labels, BacktestError> {
    labels_of(json).map_err(BacktestError::Labels)
}

/// [`parse_labels`], its message naming what is wrong.
fn labels_of(json: &str) -> Result<Labels, String> {
    let raw: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(json).map_err(|e| format!("labels: {e}"))?;
    let mut out = Labels::new();
    for (file, windows) in raw {
        let mut ws = Vec::with_capacity(windows.len());
        for w in windows {
            let [a, b] = w.as_slice() else {
                return Err(format!("labels: {file}: a window is not [start, end]"));
            };
            let at = |s: &str| {
                crate::time::parse_timestamp(s)
                    .ok_or_else(|| format!("labels: {file}: `{s}` is not a time"))
            };
            ws.push((at(a)?, at(b)?));
        }
        ws.sort_unstable();
        out.insert(file.replace('\\', "/"), ws);
    }
    Ok(out)
}

/// Where a row stands for scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// In the probationary period: never scored.
    Probation,
    /// Inside window `w` (index into the file's windows).
    Window(usize),
    /// Outside every window.
    Outside,
}

/// One file's rows with the weight a detection at each would earn or cost.
#[derive(Debug, Clone)]
struct Swept {
    /// (anomaly score, sweep weight, role) per row.
    rows: Vec<(f64, f64, Role)>,
    /// Windows with at least one scorable row.
    scorable_windows: Vec<bool>,
}

fn scaled_sigmoid(x: f64) -> f64 {
    if x >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// The first min(⌊0.15 n⌋, 750) rows.
pub fn probationary_rows(n: usize) -> usize {
    ((0.15 * n as f64).floor() as usize).min(750)
}

fn sweep(timestamps: &[i64], scores: &[f64], windows: &[(i64, i64)], p: &Profile) -> Swept {
    let probation = probationary_rows(timestamps.len());
    let max_tp = scaled_sigmoid(-1.0);
    let index_of = |t: i64| timestamps.iter().position(|x| *x == t);
    let mut rows = Vec::with_capacity(timestamps.len());
    let mut scorable_windows = vec![false; windows.len()];
    let mut next = 0usize;
    // (window index, right row, width)
    let mut cur: Option<(usize, usize, f64)> = None;
    let mut prev: Option<(usize, f64)> = None;
    for (i, (t, s)) in timestamps.iter().zip(scores).enumerate() {
        if let Some((l, r)) = windows.get(next)
            && *t == *l
        {
            // A window whose end is not a row of the file cannot be scored by NAB either.
            if let (Some(li), Some(ri)) = (index_of(*l), index_of(*r)) {
                cur = Some((next, ri, (ri - li + 1) as f64));
            }
            next += 1;
        }
        let (weight, role) = match cur {
            Some((w, ri, width)) => {
                let pos = -((ri as f64 - i as f64 + 1.0) / width);
                (scaled_sigmoid(pos) * p.tp / max_tp, Role::Window(w))
            }
            None => {
                let pos = match prev {
                    None => 3.0,
                    Some((ri, width)) => (ri as f64 - i as f64).abs() / (width - 1.0),
                };
                (scaled_sigmoid(pos) * p.fp, Role::Outside)
            }
        };
        let role = if i < probation { Role::Probation } else { role };
        if let Role::Window(w) = role {
            scorable_windows[w] = true;
        }
        rows.push((*s, weight, role));
        if let Some((_, ri, width)) = cur
            && i == ri
        {
            prev = Some((ri, width));
            cur = None;
        }
    }
    Swept {
        rows,
        scorable_windows,
    }
}

/// One file's anomaly scores, in row order.
#[derive(Debug, Clone)]
pub struct FileResult {
    /// Path relative to the data folder, `/`-separated (the labels' key).
    pub key: String,
    /// Epoch milliseconds per row.
    pub timestamps: Vec<i64>,
    /// Anomaly score per row.
    pub scores: Vec<f64>,
}

/// How one file fared at a threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FileOutcome {
    /// The file's key.
    pub file: String,
    /// Labelled windows scored.
    pub windows: usize,
    /// Windows with a detection.
    pub found: usize,
    /// Windows without one.
    pub missed: usize,
    /// Detections outside every window (after the probationary period).
    pub false_detections: usize,
    /// Rows scored (after the probationary period).
    pub scored_rows: usize,
    /// The file's raw score.
    pub score: f64,
}

/// A profile's result over a corpus.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProfileReport {
    /// Profile name.
    pub profile: String,
    /// Threshold the score was taken at.
    pub threshold: f64,
    /// Raw corpus total.
    pub raw: f64,
    /// Normalised score: 0 = no detection, 100 = perfect.
    pub normalized: f64,
    /// Per file.
    pub files: Vec<FileOutcome>,
}

impl ProfileReport {
    /// Windows found, windows in all, false detections.
    pub fn totals(&self) -> (usize, usize, usize) {
        self.files.iter().fold((0, 0, 0), |(f, w, fp), o| {
            (f + o.found, w + o.windows, fp + o.false_detections)
        })
    }
}

/// A corpus of results scored against labels under one profile.
pub struct Scorer<'a> {
    profile: &'a Profile,
    files: Vec<(String, Swept)>,
    total_windows: usize,
}

impl<'a> Scorer<'a> {
    /// Sweeps every file once; files without labels have no windows (every detection is
    /// false).
    pub fn new(results: &[FileResult], labels: &Labels, profile: &'a Profile) -> Self {
        let mut total_windows = 0;
        let files = results
            .iter()
            .map(|r| {
                let windows = labels.get(&r.key).map(Vec::as_slice).unwrap_or(&[]);
                total_windows += windows.len();
                (
                    r.key.clone(),
                    sweep(&r.timestamps, &r.scores, windows, profile),
                )
            })
            .collect();
        Self {
            profile,
            files,
            total_windows,
        }
    }

    fn null_score(&self) -> f64 {
        let scorable: usize = self
            .files
            .iter()
            .map(|(_, s)| s.scorable_windows.iter().filter(|b| **b).count())
            .sum();
        -self.profile.fn_ * scorable as f64
    }

    /// The threshold with the highest corpus total (NAB's sweep over every distinct score,
    /// from above the highest down; ties keep the higher threshold).
    pub fn optimal_threshold(&self) -> f64 {
        // (score, weight, (file, window) for a row inside a window)
        type Point = (f64, f64, Option<(usize, usize)>);
        let mut points: Vec<Point> = Vec::new();
        let mut best: Vec<Vec<f64>> = Vec::new();
        let mut total = 0.0;
        for (fi, (_, s)) in self.files.iter().enumerate() {
            let mut b = Vec::with_capacity(s.scorable_windows.len());
            for scorable in &s.scorable_windows {
                b.push(-self.profile.fn_);
                if *scorable {
                    total -= self.profile.fn_;
                }
            }
            best.push(b);
            for (score, weight, role) in &s.rows {
                match role {
                    Role::Probation => {}
                    Role::Outside => points.push((*score, *weight, None)),
                    Role::Window(w) => points.push((*score, *weight, Some((fi, *w)))),
                }
            }
        }
        points.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut best_threshold = 1.1;
        let mut best_total = total;
        let mut i = 0;
        while i < points.len() {
            let t = points[i].0;
            while i < points.len() && points[i].0 == t {
                let (_, weight, role) = points[i];
                match role {
                    None => total += weight,
                    Some((fi, w)) => {
                        let old = best[fi][w];
                        if weight > old {
                            total += weight - old;
                            best[fi][w] = weight;
                        }
                    }
                }
                i += 1;
            }
            if total > best_total {
                best_total = total;
                best_threshold = t;
            }
        }
        best_threshold
    }

    /// The corpus scored with detections at `score >= threshold`.
    pub fn report(&self, threshold: f64) -> ProfileReport {
        let mut files = Vec::with_capacity(self.files.len());
        let mut raw = 0.0;
        for (key, s) in &self.files {
            let mut best: Vec<Option<f64>> = vec![None; s.scorable_windows.len()];
            let mut fp_total = 0.0;
            let mut false_detections = 0;
            let mut scored_rows = 0;
            for (score, weight, role) in &s.rows {
                if *role != Role::Probation {
                    scored_rows += 1;
                }
                if *score < threshold {
                    continue;
                }
                match role {
                    Role::Probation => {}
                    Role::Outside => {
                        fp_total += weight;
                        false_detections += 1;
                    }
                    Role::Window(w) => {
                        let b = &mut best[*w];
                        *b = Some(b.map_or(*weight, |x: f64| x.max(*weight)));
                    }
                }
            }
            let mut score = fp_total;
            let (mut found, mut missed, mut windows) = (0, 0, 0);
            for (b, scorable) in best.iter().zip(&s.scorable_windows) {
                if !scorable {
                    continue;
                }
                windows += 1;
                match b {
                    Some(w) => {
                        found += 1;
                        score += w;
                    }
                    None => {
                        missed += 1;
                        score -= self.profile.fn_;
                    }
                }
            }
            raw += score;
            files.push(FileOutcome {
                file: key.clone(),
                windows,
                found,
                missed,
                false_detections,
                scored_rows,
                score,
            });
        }
        let null = self.null_score();
        let perfect = self.profile.tp * self.total_windows as f64;
        let normalized = if perfect > null {
            100.0 * (raw - null) / (perfect - null)
        } else {
            0.0
        };
        ProfileReport {
            profile: self.profile.name.clone(),
            threshold,
            raw,
            normalized,
            files,
        }
    }
}

/// Scores a corpus under each profile at its optimal threshold, and at `fixed` when given.
pub fn score_corpus(
    results: &[FileResult],
    labels: &Labels,
    profiles: &[Profile],
    fixed: Option<f64>,
) -> Vec<(ProfileReport, Option<ProfileReport>)> {
    profiles
        .iter()
        .map(|p| {
            let scorer = Scorer::new(results, labels, p);
            let best = scorer.report(scorer.optimal_threshold());
            let at = fixed.map(|t| scorer.report(t));
            (best, at)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        standard_profiles().remove(0)
    }

    fn file(n: usize, detections: &[usize]) -> FileResult {
        let mut scores = vec![0.0; n];
        for d in detections {
            scores[*d] = 1.0;
        }
        FileResult {
            key: "f.csv".into(),
            timestamps: (0..n as i64).map(|i| i * 60_000).collect(),
            scores,
        }
    }

    fn labels(windows: &[(i64, i64)]) -> Labels {
        let mut l = Labels::new();
        l.insert(
            "f.csv".into(),
            windows
                .iter()
                .map(|(a, b)| (a * 60_000, b * 60_000))
                .collect(),
        );
        l
    }

    #[test]
    fn a_detection_at_the_first_row_of_every_window_is_perfect() {
        let l = labels(&[(300, 339), (600, 639)]);
        let p = profile();
        let r = Scorer::new(&[file(1000, &[300, 600])], &l, &p).report(0.5);
        assert!((r.normalized - 100.0).abs() < 1e-9, "{r:?}");
        let none = Scorer::new(&[file(1000, &[])], &l, &p).report(0.5);
        assert!(none.normalized.abs() < 1e-9);
    }

    #[test]
    fn later_detections_earn_less_and_false_ones_cost_fp() {
        let l = labels(&[(300, 339)]);
        let p = profile();
        let mid = Scorer::new(&[file(1000, &[320])], &l, &p).report(0.5);
        assert!(mid.raw > 0.5 && mid.raw < 1.0, "{}", mid.raw);
        // Far from any window: a full fp; the probationary period costs nothing.
        let fp = Scorer::new(&[file(1000, &[300, 900, 10])], &l, &p).report(0.5);
        assert!((fp.raw - (1.0 - 0.11)).abs() < 1e-9, "{}", fp.raw);
        assert_eq!(fp.files[0].false_detections, 1);
        // Right after a window a false detection costs almost nothing.
        let near = Scorer::new(&[file(1000, &[300, 340])], &l, &p).report(0.5);
        assert!(near.raw > 0.99, "{}", near.raw);
    }

    #[test]
    fn the_optimal_threshold_is_the_best_of_every_distinct_score() {
        let l = labels(&[(300, 339)]);
        let p = profile();
        let mut f = file(1000, &[]);
        f.scores[300] = 0.9;
        f.scores[700] = 0.95;
        f.scores[800] = 0.4;
        let s = Scorer::new(std::slice::from_ref(&f), &l, &p);
        let t = s.optimal_threshold();
        // 0.9 takes the window and one fp: 1 - 0.11 beats nothing (-1).
        assert_eq!(t, 0.9);
        assert_eq!(s.report(t).files[0].found, 1);
    }
}
