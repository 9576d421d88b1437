//! The univariate streaming detector: one score per point, in event order, the same
//! whether the points arrive live or from a recorded file.
//!
//! Three parts, each answering a different question:
//! - **Shape** (`shape`): features of the newest point relative to the series' own recent
//!   past (level against a trailing baseline, the step, a short-mean shift, the change in
//!   local spread), so a series' usual rhythm and noise do not look anomalous.
//! - **Isolation forest**: how easy the point's features are to isolate among recent normal
//!   rows; fitted after a warm-up, refitted on a ring of recent rows that did not alarm.
//! - **Likelihood** (`likelihood`): how unusual the recent raw scores are against the
//!   detector's own long-run score distribution, so a noisy series does not alarm on noise
//!   and an incident alarms once, at its start.
//!
//! A value beyond everything the series has shown (by more than a tolerance of its range)
//! is an anomaly on its own, whatever the forest says: a new extreme is the clearest sign.

mod likelihood;
mod shape;

use std::collections::VecDeque;

use aegis_detectors::{IsolationForest, IsolationForestParams, Matrix};

pub use likelihood::{Likelihood, LikelihoodParams};
use shape::{FEATURES, SEASONAL, Shape};

/// Tuning of [`StreamingDetector`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Points seen before the first model is fitted (default 150).
    pub warmup_points: usize,
    /// Points between refits on recent normal points (default 500).
    pub retrain_every: usize,
    /// Points in the trailing baseline (default 360).
    pub baseline_points: usize,
    /// Newest points left out of the baseline (default 60), so a sustained shift keeps
    /// standing out for that long instead of becoming its own baseline at once.
    pub baseline_lag: usize,
    /// Score at or above which a point is anomalous (default 0.45: a tail of about 3e-5).
    pub threshold: f64,
    /// Recent normal rows kept for refits (default 2,048).
    pub reservoir: usize,
    /// Seed of the forests.
    pub seed: u64,
    /// Raw scores averaged before the likelihood (default 7).
    pub average_points: usize,
    /// A second averaging horizon for sustained shifts (default 90; 0 turns it off).
    pub long_average_points: usize,
    /// Short means in the likelihood's long-run distribution (default 2,000).
    pub likelihood_history: usize,
    /// A value beyond the series' whole range by more than this share of the range is
    /// anomalous on its own (default 0.05; 0 turns it off).
    pub novelty_tolerance: f64,
    /// Seconds between points, when known (a backtest takes it from the timestamps, the
    /// live loop from its tick): new extremes count only after a full day of points, since
    /// before that a daily rhythm is still showing its range.
    pub step_secs: Option<f64>,
    /// After an alarm, points during which scores are halved (default 100), so one
    /// incident alarms once instead of at every point of it.
    pub cooldown_points: usize,
    /// Trees per forest (default 50: refits every few hundred points keep them fresh).
    pub trees: usize,
    /// Rows per tree (default 256).
    pub sample_size: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            warmup_points: 150,
            retrain_every: 500,
            baseline_points: 360,
            baseline_lag: 60,
            threshold: 0.45,
            reservoir: 2_048,
            seed: 1,
            average_points: 7,
            long_average_points: 90,
            likelihood_history: 2_000,
            novelty_tolerance: 0.05,
            step_secs: None,
            cooldown_points: 100,
            trees: 50,
            sample_size: 256,
        }
    }
}

/// The score of one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamScore {
    /// Anomaly score in [0, 1]; 0 while the detector is warming up.
    pub score: f64,
    /// `score >= threshold`.
    pub is_anomaly: bool,
    /// The isolation forest's raw score (0 before the first fit).
    pub raw: f64,
}

/// Fits made a warm-up apart before the regular schedule: the first models have seen
/// little, so they are replaced soon.
const EARLY_FITS: usize = 4;
/// Fewest points a forest is fitted on.
const MIN_FIT: usize = 16;

/// Points in a day at `step_secs` (unknown or unusable: `None`), not yet rounded.
fn points_per_day(step_secs: Option<f64>) -> Option<f64> {
    step_secs
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| (86_400.0 / s).min(1e7))
}

/// Scores one series point by point, in event order.
#[derive(Debug)]
pub struct StreamingDetector {
    config: StreamConfig,
    shape: Shape,
    model: Option<IsolationForest>,
    /// Ring of recent rows that did not alarm (row-major, FEATURES wide).
    train: VecDeque<[f32; FEATURES]>,
    likelihood: Likelihood,
    since_fit: usize,
    fits: usize,
    seen: usize,
    range: Option<(f64, f64)>,
    since_alarm: usize,
    /// Whether the model was fitted with the seasonal feature live; until then that
    /// feature is scored as 0 (what the model saw).
    seasonal_model: bool,
    /// Whether rows with the seasonal feature live are being collected.
    seasonal_collecting: bool,
    /// Points before new extremes count: a day of points when the step is known, the
    /// warm-up otherwise (fixed at creation; read at every point).
    novelty_after: usize,
}

impl StreamingDetector {
    /// A detector with no history.
    pub fn new(config: StreamConfig) -> Self {
        let likelihood = Likelihood::new(LikelihoodParams {
            average: config.average_points,
            long_average: config.long_average_points,
            history: config.likelihood_history,
            min_history: 100,
            reestimate_every: 50,
        });
        Self {
            shape: Shape::new(
                config.baseline_points,
                config.baseline_lag,
                points_per_day(config.step_secs).map_or(0, |d| d.round() as usize),
            ),
            novelty_after: points_per_day(config.step_secs)
                .map_or(0, |d| d.ceil() as usize)
                .max(config.warmup_points),
            config,
            model: None,
            train: VecDeque::new(),
            likelihood,
            since_fit: 0,
            fits: 0,
            seen: 0,
            range: None,
            since_alarm: usize::MAX,
            seasonal_model: false,
            seasonal_collecting: false,
        }
    }

    /// Models fitted so far (the first after warm-up, then the refits).
    pub fn fits(&self) -> usize {
        self.fits
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// The training ring as a matrix; `None` below [`MIN_FIT`] rows.
    fn train_matrix(&self) -> Option<Matrix> {
        if self.train.len() < MIN_FIT {
            return None;
        }
        let flat: Vec<f32> = self.train.iter().flatten().copied().collect();
        Matrix::new(flat, FEATURES).ok()
    }

    fn fit(&mut self) {
        let Some(m) = self.train_matrix() else {
            return;
        };
        let params = IsolationForestParams {
            seed: self.config.seed.wrapping_add(self.fits as u64),
            trees: self.config.trees,
            sample_size: self.config.sample_size,
            extension_level: None,
        };
        if let Ok(mut f) = IsolationForest::fit(m.view(), &params) {
            // One row at a time never uses the batch layout; refreshes need not rebuild it.
            f.release_fast_layout();
            self.model = Some(f);
            self.fits += 1;
        }
        self.since_fit = 0;
    }

    /// On the regular schedule: the older half of the trees regrown on the recent rows (a
    /// streaming forest: half the cost of a refit, each tree lives two periods).
    fn refresh(&mut self) {
        let Some(m) = self.train_matrix() else {
            return;
        };
        let seed = self.config.seed.wrapping_add(self.fits as u64);
        let half = self.config.trees.div_ceil(2);
        let done = match &mut self.model {
            Some(model) => model.refresh(m.view(), half, seed).unwrap_or(false),
            None => false,
        };
        if done {
            self.fits += 1;
            self.since_fit = 0;
        } else {
            self.fit();
        }
    }

    /// Whether `value` lies beyond the range seen so far by more than the tolerance (once
    /// the series has shown its range); widens the range.
    fn novel(&mut self, value: f64) -> bool {
        let tol = self.config.novelty_tolerance;
        let novel = match self.range {
            Some((lo, hi)) if tol > 0.0 && hi > lo && self.seen > self.novelty_after => {
                let slack = (hi - lo) * tol;
                value > hi + slack || value < lo - slack
            }
            _ => false,
        };
        self.range = Some(match self.range {
            None => (value, value),
            Some((lo, hi)) => (lo.min(value), hi.max(value)),
        });
        novel
    }

    /// Scores the next point.
    pub fn score(&mut self, value: f64) -> StreamScore {
        self.seen += 1;
        let mut row = self.shape.push(value);
        let novel = self.novel(value);
        if self.shape.seasonal_ready() && !self.seasonal_model {
            // The first day is complete: collect rows with the seasonal feature live, and
            // refit on them alone once there are a warm-up's worth.
            if !self.seasonal_collecting {
                self.seasonal_collecting = true;
                self.train.clear();
            }
            if self.train.len() >= self.config.warmup_points.max(MIN_FIT) {
                self.fit();
                self.seasonal_model = true;
                // The new model's raw scores sit differently from the old one's: judge
                // them against their own history, not the old model's.
                self.likelihood.reset();
            }
        }
        let live = row;
        if !self.seasonal_model {
            row[SEASONAL] = 0.0;
        }
        if self.model.is_none() {
            self.train.push_back(row);
            if self.seen >= self.config.warmup_points.max(MIN_FIT) {
                self.fit();
            }
            return StreamScore {
                score: 0.0,
                is_anomaly: false,
                raw: 0.0,
            };
        }
        let raw = self
            .model
            .as_ref()
            .and_then(|m| m.score_row(&row).ok())
            .unwrap_or(0.0);
        let mut score = self.likelihood.push(raw);
        if novel {
            score = 1.0;
        }
        if self.since_alarm < self.config.cooldown_points {
            score *= 0.5;
        }
        self.since_alarm = self.since_alarm.saturating_add(1);
        let is_anomaly = score >= self.config.threshold;
        if is_anomaly {
            self.since_alarm = 0;
        }
        if !is_anomaly {
            self.train.push_back(if self.shape.seasonal_ready() {
                live
            } else {
                row
            });
            while self.train.len() > self.config.reservoir.max(MIN_FIT) {
                self.train.pop_front();
            }
        }
        self.since_fit += 1;
        // Refit early and often while the model has seen little, then on the schedule.
        let every = if self.fits < EARLY_FITS {
            self.config.warmup_points.max(MIN_FIT)
        } else {
            self.config.retrain_every.max(1)
        };
        if self.since_fit >= every {
            if self.fits < EARLY_FITS {
                self.fit();
            } else {
                self.refresh();
            }
        }
        StreamScore {
            score,
            is_anomaly,
            raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_series(incident: std::ops::Range<usize>) -> Vec<f64> {
        aegis_detectors::synthetic::cpu_series(3 * 1440, incident, 0.0, 0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn the_incident_alarms_at_its_start_and_normal_days_do_not() {
        let incident = 2000..2060;
        let series = cpu_series(incident.clone());
        let config = StreamConfig {
            step_secs: Some(60.0),
            ..Default::default()
        };
        let mut d = StreamingDetector::new(config);
        let scores: Vec<StreamScore> = series.iter().map(|v| d.score(*v)).collect();
        assert!(d.fits() >= 3, "refits happen: {}", d.fits());
        let flagged: Vec<usize> = (0..scores.len())
            .filter(|i| scores[*i].is_anomaly)
            .collect();
        eprintln!("flagged at {flagged:?}");
        assert!(
            flagged
                .iter()
                .any(|i| (incident.start..incident.start + 10).contains(i)),
            "the incident is flagged in its first ten minutes: {flagged:?}"
        );
        // Outside the incident and the hour after it (its end is a change too), three
        // days of a daily rhythm with noise (4,320 points) raise at most two alarms.
        let false_alarms = flagged
            .iter()
            .filter(|i| !(incident.start..incident.end + 60).contains(*i))
            .count();
        assert!(false_alarms <= 2, "false alarms: {flagged:?}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(&s.score)));
    }

    #[test]
    fn the_same_points_give_the_same_scores() {
        let series = cpu_series(500..560);
        let run = || {
            let mut d = StreamingDetector::new(StreamConfig::default());
            series.iter().map(|v| d.score(*v).score).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    /// Healthy series of the shapes monitoring shows (flat, a clean daily rhythm, a square
    /// daily wave, the rhythm with noise, noise alone) at five-minute steps for two weeks:
    /// clean shapes raise no alarm; noise raises few (pure noise keeps setting new extremes
    /// by a little, and its raw scores have heavier tails than the likelihood assumes:
    /// about 1.5 alarms per 1,000 points, docs/detection.md).
    #[test]
    fn healthy_series_of_common_shapes_raise_almost_no_alarm() {
        let n = 4032;
        let day = 288.0;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut noise = move || {
            let mut acc = 0.0;
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                acc += (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            }
            acc
        };
        let phase = |t: usize| std::f64::consts::TAU * t as f64 / day;
        let shapes: Vec<(&str, Vec<f64>)> = vec![
            ("flat", vec![42.0; n]),
            (
                "sine",
                (0..n).map(|t| 50.0 + 20.0 * phase(t).sin()).collect(),
            ),
            (
                "square",
                (0..n)
                    .map(|t| if (t % 288) < 144 { 80.0 } else { 20.0 })
                    .collect(),
            ),
            (
                "noisy sine",
                (0..n)
                    .map(|t| 50.0 + 20.0 * phase(t).sin() + 4.0 * noise())
                    .collect(),
            ),
            ("noise", (0..n).map(|_| 100.0 + 10.0 * noise()).collect()),
        ];
        for (name, series) in shapes {
            let mut d = StreamingDetector::new(StreamConfig {
                step_secs: Some(300.0),
                ..Default::default()
            });
            let flagged: Vec<usize> = series
                .iter()
                .enumerate()
                .filter_map(|(i, v)| d.score(*v).is_anomaly.then_some(i))
                .collect();
            eprintln!("{name}: {flagged:?}");
            let allowed = match name {
                "noise" => 8,
                "noisy sine" => 2,
                _ => 0,
            };
            assert!(flagged.len() <= allowed, "{name}: alarms at {flagged:?}");
        }
    }
}
