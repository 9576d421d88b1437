//! Anomaly likelihood: how unusual the recent raw scores are against the detector's own
//! long-run score distribution (the idea behind HTM's and CAD OSE's figures on NAB).
//!
//! A raw score says "this point is easy to isolate"; a series whose points are often easy to
//! isolate (a noisy one) should not alarm on that alone. The likelihood compares the mean
//! of the last few raw scores with the mean and spread of those short means over a long
//! history, as a Gaussian tail probability, and reports it on a log scale so that a tail
//! of 1e-5 is 0.5 and 1e-10 is 1.0. Consecutive alarms are damped: the first point of a
//! red run keeps its likelihood, the ones after it are shown as yellow, so one incident is
//! one alarm.

use std::collections::VecDeque;

/// Settings of [`Likelihood`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LikelihoodParams {
    /// Raw scores averaged into one short mean.
    pub average: usize,
    /// A second, longer horizon (0: none), for a moderate rise that lasts: the mean of many
    /// raw scores varies little, so a sustained shift stands out there first.
    pub long_average: usize,
    /// Short means kept for the long-run distribution (in blocks of `reestimate_every`:
    /// between `history - reestimate_every` and `history` are held).
    pub history: usize,
    /// Short means needed before a likelihood is given (0 before that).
    pub min_history: usize,
    /// Points between re-estimates of the distribution.
    pub reestimate_every: usize,
}

/// Smallest spread assumed, so a series whose scores never move does not alarm on noise.
const MIN_STD: f64 = 0.02;

/// Sums of a run of consecutive short means: the long-run distribution is kept as blocks,
/// not as every mean, so a series costs a kilobyte here instead of tens.
#[derive(Debug, Clone, Copy, Default)]
struct Block {
    /// `f32`: fifty means in [0, 1] lose nothing that matters at a spread of 1e-2, and
    /// the blocks are most of a series' likelihood memory.
    sum: f32,
    sum_sq: f32,
    count: u32,
}

/// One averaging horizon: the mean of the last `average` raw scores, and the distribution
/// of such means over the long history.
#[derive(Debug, Clone)]
struct Horizon {
    average: usize,
    recent: VecDeque<f64>,
    recent_sum: f64,
    /// The long history in blocks of `block` means, oldest first.
    blocks: VecDeque<Block>,
    held: usize,
    mean: f64,
    std: f64,
}

impl Horizon {
    fn new(average: usize, blocks: usize) -> Self {
        Self {
            average: average.max(1),
            recent: VecDeque::with_capacity(average.max(1) + 1),
            recent_sum: 0.0,
            blocks: VecDeque::with_capacity(blocks + 1),
            held: 0,
            mean: 0.0,
            std: 1.0,
        }
    }

    /// Adds a raw score to the short window.
    fn push(&mut self, raw: f64) {
        self.recent.push_back(raw);
        self.recent_sum += raw;
        if self.recent.len() > self.average
            && let Some(old) = self.recent.pop_front()
        {
            self.recent_sum -= old;
        }
    }

    /// The current short mean.
    fn short(&self) -> f64 {
        self.recent_sum / self.recent.len().max(1) as f64
    }

    /// Adds the current short mean to the long-run history: blocks of `block` means, at
    /// most `history` of them (the oldest block goes when a new one starts past that).
    fn remember(&mut self, history: usize, block: usize) {
        let short = self.short();
        let block = block.max(1);
        if self.blocks.back().is_none_or(|b| b.count as usize >= block) {
            self.blocks.push_back(Block::default());
            while self.blocks.len() > history.max(2).div_ceil(block) {
                if let Some(old) = self.blocks.pop_front() {
                    self.held -= old.count as usize;
                }
            }
        }
        if let Some(b) = self.blocks.back_mut() {
            b.sum += short as f32;
            b.sum_sq += (short * short) as f32;
            b.count += 1;
            self.held += 1;
        }
    }

    fn estimate(&mut self) {
        let n = self.held.max(1) as f64;
        let (sum, sum_sq) = self.blocks.iter().fold((0.0, 0.0), |(s, q), b| {
            (s + f64::from(b.sum), q + f64::from(b.sum_sq))
        });
        let mean = sum / n;
        let var = (sum_sq / n - mean * mean).max(0.0);
        self.mean = mean;
        // Means of many scores spread less than means of few; the floor shrinks alike.
        self.std = var.sqrt().max(MIN_STD / (self.average as f64).sqrt());
    }

    fn tail(&self, short: f64) -> f64 {
        upper_tail((short - self.mean) / self.std)
    }
}

/// Streaming anomaly likelihood over raw scores.
#[derive(Debug, Clone)]
pub struct Likelihood {
    params: LikelihoodParams,
    horizons: Vec<Horizon>,
    since_estimate: usize,
    estimated: bool,
    prev_red: bool,
}

/// Tail probability below which a point is red (the first of a run is kept).
const RED_TAIL: f64 = 1e-5;
/// What later points of a red run are shown as.
const YELLOW_TAIL: f64 = 1e-4;

impl Likelihood {
    /// An empty history.
    pub fn new(params: LikelihoodParams) -> Self {
        let blocks = params
            .history
            .max(2)
            .div_ceil(params.reestimate_every.max(1));
        let mut horizons = vec![Horizon::new(params.average, blocks)];
        if params.long_average > params.average {
            horizons.push(Horizon::new(params.long_average, blocks));
        }
        Self {
            params,
            horizons,
            since_estimate: 0,
            estimated: false,
            prev_red: false,
        }
    }

    /// Bytes held by the buffers.
    pub fn memory_bytes(&self) -> usize {
        self.horizons
            .iter()
            .map(|h| h.recent.capacity() * 8 + h.blocks.capacity() * size_of::<Block>())
            .sum()
    }

    /// Forgets the score history (a new kind of model scores from here on).
    pub fn reset(&mut self) {
        *self = Self::new(self.params);
    }

    /// Takes the next raw score; returns the log-scaled likelihood in [0, 1].
    pub fn push(&mut self, raw: f64) -> f64 {
        for h in &mut self.horizons {
            h.push(raw);
        }
        let ready = self
            .horizons
            .first()
            .is_some_and(|h| h.held >= self.params.min_history.max(2));
        let out = if ready {
            self.since_estimate += 1;
            if !self.estimated || self.since_estimate >= self.params.reestimate_every.max(1) {
                self.horizons.iter_mut().for_each(Horizon::estimate);
                self.estimated = true;
                self.since_estimate = 0;
            }
            // The most unusual horizon, corrected for looking at several.
            let k = self.horizons.len() as f64;
            let tail = self
                .horizons
                .iter()
                .map(|h| h.tail(h.short()))
                .fold(1.0f64, f64::min)
                * k;
            let red = tail <= RED_TAIL;
            let shown = if red && self.prev_red {
                YELLOW_TAIL
            } else {
                tail.min(1.0)
            };
            self.prev_red = red;
            log_scale(shown)
        } else {
            0.0
        };
        let (history, block) = (self.params.history, self.params.reestimate_every);
        for h in &mut self.horizons {
            h.remember(history, block);
        }
        out
    }
}

/// A tail probability on the log scale: 1e-5 → 0.5, 1e-10 or less → 1.0, 1 → 0.
pub fn log_scale(tail: f64) -> f64 {
    (tail.max(1e-10).log10() / -10.0).clamp(0.0, 1.0)
}

/// P(Z ≥ z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_matches_the_normal_table() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-6);
        assert!((upper_tail(1.96) - 0.025).abs() < 1e-4);
        assert!((upper_tail(4.2649) - 1e-5).abs() < 1e-7);
        assert!((upper_tail(-1.96) - 0.975).abs() < 1e-4);
        assert!((log_scale(1e-5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_jump_in_raw_scores_is_likely_once_then_damped() {
        let mut l = Likelihood::new(LikelihoodParams {
            average: 1,
            long_average: 0,
            history: 500,
            min_history: 100,
            reestimate_every: 10,
        });
        let mut out = Vec::new();
        for i in 0..400 {
            out.push(l.push(0.4 + 0.01 * ((i * 7919) % 13) as f64 / 13.0));
        }
        assert!(out.iter().all(|s| *s < 0.3), "normal noise stays low");
        let first = l.push(0.9);
        let second = l.push(0.9);
        assert!(first > 0.9, "{first}");
        assert!(second < first, "{second}");
    }
}
