//! Features of the newest point relative to the series' own recent past, each in units of
//! the trailing baseline's spread, as magnitudes: a rise and a fall of the same size are
//! equally unusual, and a model warmed up on a rising stretch still flags a falling one.

use std::collections::VecDeque;

use crate::features::summarize;

/// Features per point.
pub(crate) const FEATURES: usize = 5;
/// Features are clamped so one absurd value cannot stretch the forest's ranges.
const CLAMP: f32 = 50.0;
/// Points in the short mean.
const SHORT_MEAN: usize = 6;
/// Points in the local spread.
const LOCAL_SPREAD: usize = 12;
/// Points in the local median.
const LOCAL_MEDIAN: usize = 10;

/// The recent past of one series.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    baseline: usize,
    lag: usize,
    history: VecDeque<f64>,
    scratch: Vec<f64>,
}

impl Shape {
    pub(crate) fn new(baseline: usize, lag: usize) -> Self {
        Self {
            baseline: baseline.max(2),
            lag,
            history: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// Takes the next value and returns its features (then forgets what is too old).
    pub(crate) fn push(&mut self, value: f64) -> [f32; FEATURES] {
        self.history.push_back(value);
        while self.history.len() > self.baseline + self.lag {
            self.history.pop_front();
        }
        let n = self.history.len();
        // The baseline leaves out the newest `lag` points (all but the newest when the
        // history is short, so the first points still have something to compare with).
        let base_len = n.saturating_sub(self.lag).max((n > 1) as usize).min(n - 1);
        self.scratch.clear();
        self.scratch.extend(self.history.iter().take(base_len).copied());
        let base = summarize(&self.scratch);
        let scale = base.mean.abs().max(base.max.abs()).max(1e-9);
        // A flat baseline has no spread; a small floor keeps its first move finite and large.
        let spread = base.std.max(1e-3 * scale).max(1e-12);
        let prev = if n >= 2 { self.history[n - 2] } else { value };
        let tail = |k: usize| self.history.iter().rev().take(k);
        let short = tail(SHORT_MEAN).sum::<f64>() / n.min(SHORT_MEAN) as f64;
        let local_n = n.min(LOCAL_SPREAD);
        let local_mean = tail(LOCAL_SPREAD).sum::<f64>() / local_n as f64;
        let local_var = tail(LOCAL_SPREAD)
            .map(|v| (v - local_mean).powi(2))
            .sum::<f64>()
            / local_n as f64;
        let mut recent = [0f64; LOCAL_MEDIAN];
        let m = tail(LOCAL_MEDIAN)
            .zip(recent.iter_mut())
            .map(|(v, r)| *r = *v)
            .count();
        let recent = &mut recent[..m];
        recent.sort_by(f64::total_cmp);
        let median = recent[m / 2];
        let level = if base.count > 0 { base.mean } else { value };
        let row = [
            (value - level) / spread,
            (value - prev) / spread,
            (short - level) / spread,
            ((local_var.sqrt() + 1e-3 * spread) / (spread + 1e-3 * spread)).ln(),
            (value - median) / spread,
        ];
        row.map(|f| (f.abs() as f32).min(CLAMP))
    }
}
