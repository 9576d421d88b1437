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
mod pool;
mod shape;

pub use likelihood::{Likelihood, LikelihoodParams};
use pool::MIN_FIT;
pub use pool::{ModelKind, Offer, Pool};
use shape::{SEASONAL, Shape};

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
    /// How far the point is from the series' lagged baseline, in baseline deviations
    /// (clamped at 50): not whether it is unusual — the score says that — but how far.
    pub level: f64,
}

/// How many times farther off its baseline than the last alarm (at least one deviation) a
/// point must be to alarm in full during that alarm's cooldown.
const NEW_INCIDENT: f64 = 5.0;

/// Points in a day at `step_secs` (unknown or unusable: `None`), not yet rounded.
fn points_per_day(step_secs: Option<f64>) -> Option<f64> {
    step_secs
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| (86_400.0 / s).min(1e7))
}

/// The per-series half of the detector: the shape of the recent past, the likelihood of
/// recent raw scores, the range shown so far, the cooldown. A few kilobytes, so the live
/// loop holds one per workload metric; the forests live in the [`Pool`].
#[derive(Debug, Clone)]
pub struct Series {
    shape: Shape,
    likelihood: Likelihood,
    seen: usize,
    range: Option<(f64, f64)>,
    since_alarm: usize,
    /// The level (deviations off the lagged baseline) of the last alarm.
    alarm_level: f64,
    /// The pool model this series is scored by.
    kind: ModelKind,
    /// Points before new extremes count: a day of points when the step is known, the
    /// warm-up otherwise (fixed at creation; read at every point).
    novelty_after: usize,
}

impl Series {
    /// A series with no history; `config` is its pool's, which [`Self::observe`] reads.
    pub fn new(config: &StreamConfig) -> Self {
        Self {
            shape: Shape::new(
                config.baseline_points,
                config.baseline_lag,
                points_per_day(config.step_secs).map_or(0, |d| d.round() as usize),
            ),
            likelihood: Likelihood::new(LikelihoodParams {
                average: config.average_points,
                long_average: config.long_average_points,
                history: config.likelihood_history,
                min_history: 100,
                reestimate_every: 50,
            }),
            seen: 0,
            range: None,
            since_alarm: usize::MAX,
            alarm_level: 0.0,
            kind: ModelKind::Plain,
            novelty_after: points_per_day(config.step_secs)
                .map_or(0, |d| d.ceil() as usize)
                .max(config.warmup_points),
        }
    }

    /// The pool model that scores this series now.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Bytes held, buffers included.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.shape.memory_bytes() + self.likelihood.memory_bytes()
    }

    /// Whether `value` lies beyond the range seen so far by more than the tolerance (once
    /// the series has shown its range); widens the range.
    fn novel(&mut self, value: f64, tol: f64) -> bool {
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

    /// Scores the next point against `pool` (read only, so many series can score at once);
    /// what the point offers the pool goes to [`Pool::absorb`] afterwards, in event order.
    pub fn observe(&mut self, value: f64, pool: &Pool) -> (StreamScore, Offer) {
        let config = pool.config();
        self.seen += 1;
        let live = self.shape.push(value);
        let novel = self.novel(value, config.novelty_tolerance);
        let ready = self.shape.seasonal_ready();
        let kind = if ready {
            ModelKind::Seasonal
        } else {
            ModelKind::Plain
        };
        // Rows train the model of the series' kind: the seasonal feature live once a day
        // is held, held at 0 before (what the plain model sees).
        let mut plain = live;
        plain[SEASONAL] = 0.0;
        let train = if ready { live } else { plain };
        let mut switched = false;
        if ready && self.kind == ModelKind::Plain && pool.forest(ModelKind::Seasonal).is_some() {
            // The seasonal model scores this series from here; its raw scores sit
            // differently from the plain model's, so judge them against their own history.
            self.kind = ModelKind::Seasonal;
            self.likelihood.reset();
            switched = true;
        }
        let (forest, row) = match self.kind {
            ModelKind::Seasonal => (pool.forest(ModelKind::Seasonal), live),
            ModelKind::Plain => (pool.forest(ModelKind::Plain), plain),
        };
        let quiet = StreamScore {
            score: 0.0,
            is_anomaly: false,
            raw: 0.0,
            level: f64::from(live[0]),
        };
        let warmup = config.warmup_points.max(MIN_FIT);
        let Some(forest) = forest.filter(|_| self.seen > warmup) else {
            return (
                quiet,
                Offer {
                    kind,
                    row: Some(train),
                    scored_by: None,
                    switched,
                },
            );
        };
        let raw = forest.score_row(&row).unwrap_or(0.0);
        let mut score = self.likelihood.push(raw);
        if novel {
            score = 1.0;
        }
        // A point far beyond the alarm that started the cooldown is a new incident, not
        // more of that one: a wiggle's alarm must not hide the outage that follows it.
        let level = f64::from(live[0]);
        let bigger = level > NEW_INCIDENT * self.alarm_level.max(1.0);
        if self.since_alarm < config.cooldown_points && !bigger {
            score *= 0.5;
        }
        self.since_alarm = self.since_alarm.saturating_add(1);
        let is_anomaly = score >= config.threshold;
        if is_anomaly {
            self.since_alarm = 0;
            self.alarm_level = level;
        }
        (
            StreamScore {
                score,
                is_anomaly,
                raw,
                level: f64::from(live[0]),
            },
            Offer {
                kind,
                row: (!is_anomaly && self.since_alarm >= config.cooldown_points).then_some(train),
                scored_by: Some(self.kind),
                switched,
            },
        )
    }
}

/// Scores one series point by point, in event order: a [`Series`] with a pool of its own.
#[derive(Debug)]
pub struct StreamingDetector {
    pool: Pool,
    series: Series,
}

impl StreamingDetector {
    /// A detector with no history.
    pub fn new(config: StreamConfig) -> Self {
        let series = Series::new(&config);
        let mut pool = Pool::new(config, 0);
        pool.join();
        Self { pool, series }
    }

    /// Models fitted so far (the first after warm-up, then the refits).
    pub fn fits(&self) -> usize {
        self.pool.fits()
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        self.pool.config()
    }

    /// Scores the next point.
    pub fn score(&mut self, value: f64) -> StreamScore {
        let (score, offer) = self.series.observe(value, &self.pool);
        self.pool.absorb(offer);
        score
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

    /// A small alarm starts a cooldown; an outage thirty points later, far beyond it, still
    /// alarms: the cooldown keeps one incident to one alarm, it must not hide the next.
    #[test]
    fn an_outage_during_a_small_alarms_cooldown_still_alarms() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mut d = StreamingDetector::new(StreamConfig {
            step_secs: Some(60.0),
            ..Default::default()
        });
        let mut flagged = Vec::new();
        for i in 0..1_300 {
            // Noise of spread 0.03; a bump four spreads up; an outage twenty-two up.
            let v = match i {
                1_200..1_206 => 0.42 + 0.1 * noise(),
                1_230.. => 0.95 + 0.01 * noise(),
                _ => 0.30 + 0.1 * noise(),
            };
            if d.score(v).is_anomaly {
                flagged.push(i);
            }
        }
        assert!(
            flagged.iter().any(|i| (1_200..1_210).contains(i)),
            "the bump alarms: {flagged:?}"
        );
        assert!(
            flagged.iter().any(|i| (1_230..1_240).contains(i)),
            "the outage alarms within its first ten points: {flagged:?}"
        );
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
                "noisy sine" => 3,
                _ => 0,
            };
            assert!(flagged.len() <= allowed, "{name}: alarms at {flagged:?}");
        }
    }
}
