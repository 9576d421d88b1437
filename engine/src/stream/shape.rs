//! Features of the newest point relative to the series' own recent past, each in units of
//! the trailing baseline's spread, as magnitudes: a rise and a fall of the same size are
//! equally unusual, and a model warmed up on a rising stretch still flags a falling one.

use std::collections::VecDeque;

/// Features per point; the last is the seasonal one (0 until a day of history is held).
pub(crate) const FEATURES: usize = 6;
/// Index of the seasonal feature.
pub(crate) const SEASONAL: usize = FEATURES - 1;
/// Longest season followed, in points (two days at one point a minute would be 2,880):
/// memory per series stays bounded.
const MAX_SEASON: usize = 2_880;
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
    /// Running sums over the baseline part of `history`, shifted by `shift` so that a
    /// series far from zero keeps its variance's precision.
    count: usize,
    sum: f64,
    sum_sq: f64,
    shift: f64,
    /// Pushes since the sums were last recomputed exactly (bounds rounding drift).
    since_exact: usize,
    /// Points per day (0: no season followed).
    season: usize,
    /// Short means of the last `season + 1` points (the oldest is a day ago), less
    /// `anchor`, as `f32`: a day of them is most of a series' memory, and the offset keeps
    /// the precision where the changes are, whatever the series' magnitude.
    shorts: VecDeque<f32>,
    /// The first short mean (the offset of `shorts`).
    anchor: Option<f64>,
    /// Running mean of the absolute day-over-day change of the short mean.
    season_spread: f64,
}

impl Shape {
    /// `season`: points per day, when the step is known (0 or out of range: none).
    pub(crate) fn new(baseline: usize, lag: usize, season: usize) -> Self {
        Self {
            baseline: baseline.max(2),
            lag,
            // Exactly what is held (a grown VecDeque would round up to a power of two).
            history: VecDeque::with_capacity(baseline.max(2) + lag + 1),
            count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            shift: 0.0,
            since_exact: 0,
            season: if (4..=MAX_SEASON).contains(&season) {
                season
            } else {
                0
            },
            shorts: VecDeque::new(),
            anchor: None,
            season_spread: 0.0,
        }
    }

    /// Bytes held by the buffers.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.history.capacity() * 8 + self.shorts.capacity() * 4
    }

    /// Whether the seasonal feature is live (a day of history is held).
    pub(crate) fn seasonal_ready(&self) -> bool {
        self.season > 0 && self.shorts.len() > self.season
    }

    /// The short mean against the same time a day ago, in units of its usual size: a
    /// series' daily rhythm is expected, a missing peak or a flat afternoon is not.
    fn seasonal(&mut self, short: f64) -> f64 {
        if self.season == 0 {
            return 0.0;
        }
        let anchor = *self.anchor.get_or_insert(short);
        let here = (short - anchor) as f32;
        self.shorts.push_back(here);
        if self.shorts.len() <= self.season {
            return 0.0;
        }
        if self.shorts.len() > self.season + 1 {
            self.shorts.pop_front();
        }
        let ago = self.shorts.front().copied().unwrap_or(here);
        let change = f64::from(here - ago).abs();

        let spread = if self.season_spread > 0.0 {
            self.season_spread
        } else {
            change
        };
        // A slow average: one unusual day does not redefine "usual" by itself.
        self.season_spread = spread + 0.01 * (change - spread);
        change / spread.max(1e-12)
    }

    /// Rows of `history` in the baseline: all but the newest `lag`, and at least one (all
    /// but the newest when the history is short) so the first points have a reference.
    fn baseline_len(&self) -> usize {
        let n = self.history.len();
        n.saturating_sub(self.lag)
            .max(usize::from(n > 1))
            .min(n.saturating_sub(1))
    }

    /// Moves the running sums to the current history (amortised O(1) per push).
    fn update_sums(&mut self, popped: Option<f64>) {
        let want = self.baseline_len();
        self.since_exact += 1;
        if self.since_exact >= 4096 || self.count == 0 {
            self.since_exact = 0;
            self.shift = self.history.front().copied().unwrap_or(0.0);
            let (mut s, mut q) = (0.0, 0.0);
            for v in self.history.iter().take(want) {
                let d = v - self.shift;
                s += d;
                q += d * d;
            }
            (self.sum, self.sum_sq, self.count) = (s, q, want);
            return;
        }
        if let Some(v) = popped {
            let d = v - self.shift;
            self.sum -= d;
            self.sum_sq -= d * d;
            self.count -= 1;
        }
        while self.count < want {
            let d = self.history[self.count] - self.shift;
            self.sum += d;
            self.sum_sq += d * d;
            self.count += 1;
        }
    }

    /// Takes the next value and returns its features (then forgets what is too old).
    pub(crate) fn push(&mut self, value: f64) -> [f32; FEATURES] {
        self.history.push_back(value);
        let mut popped = None;
        if self.history.len() > self.baseline + self.lag {
            popped = self.history.pop_front();
        }
        self.update_sums(popped);
        let n = self.history.len();
        let (base_mean, base_std) = if self.count > 0 {
            let c = self.count as f64;
            let m = self.sum / c;
            (m + self.shift, (self.sum_sq / c - m * m).max(0.0).sqrt())
        } else {
            (value, 0.0)
        };
        let scale = base_mean.abs().max(1e-9);
        // A flat baseline has no spread; a small floor keeps its first move finite and large.
        let spread = base_std.max(1e-3 * scale).max(1e-12);
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
        let level = base_mean;
        let row = [
            (value - level) / spread,
            (value - prev) / spread,
            (short - level) / spread,
            ((local_var.sqrt() + 1e-3 * spread) / (spread + 1e-3 * spread)).ln(),
            (value - median) / spread,
            0.0,
        ];
        let mut row = row;
        row[SEASONAL] = self.seasonal(short);
        row.map(|f| (f.abs() as f32).min(CLAMP))
    }
}
