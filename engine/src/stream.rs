//! The univariate streaming detector: relative features per point, an isolation forest
//! fitted after a warm-up and refitted on recent normal points, scores in event time.
//!
//! Features are magnitudes relative to the series' own recent past (a z-score against a
//! trailing baseline, the step, the distance from a short median and from an EWMA, each in
//! units of the baseline's spread), so a daily rhythm does not look anomalous, while a
//! step or a spike does.

use std::collections::VecDeque;

use aegis_detectors::{IsolationForest, IsolationForestParams, Matrix, Reservoir};

use crate::features::{summarize, z_score};

/// Tuning of [`StreamingDetector`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Points seen before the first model is fitted (default 240: four hours at one a minute).
    pub warmup_points: usize,
    /// Points between refits on recent normal points (default 720).
    pub retrain_every: usize,
    /// Points in the trailing baseline (default 360).
    pub baseline_points: usize,
    /// Newest points left out of the baseline (default 60), so a sustained shift keeps
    /// standing out for that long instead of becoming its own baseline at once.
    pub baseline_lag: usize,
    /// Score at or above which a point is anomalous (default 0.6).
    pub threshold: f64,
    /// Normal points kept for refits (default 4,096).
    pub reservoir: usize,
    /// Seed of the forests.
    pub seed: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            warmup_points: 240,
            retrain_every: 720,
            baseline_points: 360,
            baseline_lag: 60,
            threshold: 0.6,
            reservoir: 4_096,
            seed: 1,
        }
    }
}

/// The score of one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamScore {
    /// Anomaly score in (0, 1]; 0 when the series ended before a model could be fitted.
    pub score: f64,
    /// `score >= threshold`.
    pub is_anomaly: bool,
}

const FEATURES: usize = 4;
/// Features are clamped so one absurd value cannot stretch the forest's ranges.
const CLAMP: f32 = 50.0;
/// Fewest points a forest is fitted on.
const MIN_FIT: usize = 16;

/// Scores one series point by point, in event order.
#[derive(Debug)]
pub struct StreamingDetector {
    config: StreamConfig,
    history: VecDeque<f64>,
    scratch: Vec<f64>,
    ewma: Option<f64>,
    model: Option<IsolationForest>,
    pending: Vec<[f32; FEATURES]>,
    reservoir: Reservoir,
    since_fit: usize,
    fits: usize,
}

impl StreamingDetector {
    /// A detector with no history.
    pub fn new(config: StreamConfig) -> Self {
        let reservoir = Reservoir::new(FEATURES, config.reservoir.max(MIN_FIT), config.seed);
        Self {
            config,
            history: VecDeque::new(),
            scratch: Vec::new(),
            ewma: None,
            model: None,
            pending: Vec::new(),
            reservoir,
            since_fit: 0,
            fits: 0,
        }
    }

    /// Models fitted so far (the first after warm-up, then the refits).
    pub fn fits(&self) -> usize {
        self.fits
    }

    fn features(&mut self, value: f64) -> [f32; FEATURES] {
        self.scratch.clear();
        let lagged = self.history.len().saturating_sub(self.config.baseline_lag);
        self.scratch.extend(
            self.history
                .iter()
                .take(lagged.max(2.min(self.history.len())))
                .copied(),
        );
        let baseline = summarize(&self.scratch);
        let spread = if baseline.count >= 2 && baseline.std > f64::EPSILON {
            baseline.std
        } else {
            1.0
        };
        let prev = self.history.back().copied().unwrap_or(value);
        let mut recent = [0f64; 10];
        let n = self
            .history
            .iter()
            .rev()
            .take(10)
            .zip(&mut recent)
            .map(|(v, r)| *r = *v)
            .count();
        let recent = &mut recent[..n];
        recent.sort_by(f64::total_cmp);
        let median = recent.get(n / 2).copied().unwrap_or(value);
        let ewma = self.ewma.unwrap_or(value);
        let row = [
            z_score(value, &baseline),
            (value - prev) / spread,
            (value - median) / spread,
            (value - ewma) / spread,
        ];
        self.ewma = Some(ewma + 0.1 * (value - ewma));
        self.history.push_back(value);
        while self.history.len() > self.config.baseline_points.max(2) + self.config.baseline_lag {
            self.history.pop_front();
        }
        // Magnitudes: a rise and a fall of the same size are equally unusual, and a model
        // warmed up on a rising stretch does not flag the first falling one.
        row.map(|f| (f.abs() as f32).min(CLAMP))
    }

    fn fit(&mut self, rows: Matrix) {
        let params = IsolationForestParams {
            seed: self.config.seed.wrapping_add(self.fits as u64),
            ..Default::default()
        };
        if let Ok(f) = IsolationForest::fit(rows.view(), &params) {
            self.model = Some(f);
            self.fits += 1;
            self.since_fit = 0;
        }
    }

    fn score_rows(&mut self, rows: &[[f32; FEATURES]]) -> Vec<StreamScore> {
        let threshold = self.config.threshold;
        let Some(model) = &self.model else {
            return rows
                .iter()
                .map(|_| StreamScore {
                    score: 0.0,
                    is_anomaly: false,
                })
                .collect();
        };
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let scores = Matrix::new(flat, FEATURES)
            .and_then(|m| model.score(m.view()))
            .unwrap_or_default();
        let mut out = Vec::with_capacity(rows.len());
        for (row, s) in rows.iter().zip(scores) {
            if s < threshold {
                self.reservoir.offer(row);
            }
            out.push(StreamScore {
                score: s,
                is_anomaly: s >= threshold,
            });
        }
        out
    }

    /// Adds the next point; returns the scores now known, in order: nothing during warm-up,
    /// then the whole warm-up at once, then one per point.
    pub fn push(&mut self, value: f64) -> Vec<StreamScore> {
        let row = self.features(value);
        if self.model.is_none() {
            self.pending.push(row);
            if self.pending.len() < self.config.warmup_points.max(MIN_FIT) {
                return Vec::new();
            }
            let rows = std::mem::take(&mut self.pending);
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            if let Ok(m) = Matrix::new(flat, FEATURES) {
                self.fit(m);
            }
            return self.score_rows(&rows);
        }
        self.since_fit += 1;
        if self.since_fit >= self.config.retrain_every.max(1) && self.reservoir.len() >= MIN_FIT {
            let rows = self.reservoir.to_matrix();
            self.fit(rows);
        }
        self.score_rows(&[row])
    }

    /// Ends the series: points still in warm-up are scored by a model fitted on them (when
    /// there are enough), or get 0.
    pub fn finish(&mut self) -> Vec<StreamScore> {
        let rows = std::mem::take(&mut self.pending);
        if rows.is_empty() {
            return Vec::new();
        }
        if self.model.is_none() && rows.len() >= MIN_FIT {
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            if let Ok(m) = Matrix::new(flat, FEATURES) {
                self.fit(m);
            }
        }
        self.score_rows(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_series(incident: std::ops::Range<usize>) -> Vec<f64> {
        aegis_detectors::synthetic::cpu_series(3 * 1440, incident, 0.0, 0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn the_incident_hour_scores_above_every_normal_hour() {
        let incident = 2000..2060;
        let series = cpu_series(incident.clone());
        let mut d = StreamingDetector::new(StreamConfig::default());
        let mut scores = Vec::new();
        for v in &series {
            scores.extend(d.push(*v).into_iter().map(|s| s.score));
        }
        scores.extend(d.finish().into_iter().map(|s| s.score));
        assert_eq!(scores.len(), series.len());
        assert!(d.fits() >= 3, "refits happen: {}", d.fits());
        let mean =
            |r: std::ops::Range<usize>| scores[r.clone()].iter().sum::<f64>() / r.len() as f64;
        let incident_mean = mean(incident.clone());
        let worst_normal = (0..=series.len() - 60)
            .filter(|s| s + 60 <= incident.start || *s >= incident.end)
            .map(|s| mean(s..s + 60))
            .fold(0.0, f64::max);
        let worst_at = (0..=series.len() - 60)
            .filter(|s| s + 60 <= incident.start || *s >= incident.end)
            .max_by(|a, b| mean(*a..*a + 60).total_cmp(&mean(*b..*b + 60)))
            .unwrap_or(0);
        eprintln!(
            "incident hour {incident_mean:.3}, worst normal hour {worst_normal:.3} (at {worst_at})"
        );
        assert!(
            incident_mean > worst_normal,
            "incident {incident_mean:.3} vs worst normal hour {worst_normal:.3} at {worst_at}"
        );
    }
}
