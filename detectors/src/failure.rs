//! The failure classifier: a random forest over window features of metrics and logs that
//! names the failure a workload is in.

use serde::{Deserialize, Serialize};

use crate::{ClassMetrics, Error, LogFeatures, Matrix, RandomForest, RandomForestParams, Result};

/// The feature schema of the failure classifier, in column order. Metric features are
/// over the detection window; `*_ratio` compare with the workload's own baseline.
pub const FAILURE_FEATURES: [&str; 16] = [
    "cpu_usage",
    "cpu_max",
    "memory_usage",
    "memory_slope",
    "latency_p99_ms",
    "latency_ratio",
    "error_rate",
    "request_rate_ratio",
    "restarts",
    "ready_ratio",
    "log_error_rate",
    "log_warn_rate",
    "log_new_template_rate",
    "oom_events",
    "crashloop_events",
    "panic_events",
];

/// What a workload is failing with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// Containers crash and restart in a loop.
    CrashLoop,
    /// The service answers nothing or only errors.
    ServiceDown,
    /// Memory grows towards the limit.
    MemoryLeak,
    /// Requests are slow while resources look fine.
    HighLatency,
    /// A burst of errors (often a bad release).
    ErrorSpike,
    /// CPU or memory at the limit under load.
    ResourceSaturation,
    /// Nothing wrong.
    None,
}

impl FailureType {
    /// Every type, in the classifier's class order.
    pub const ALL: [FailureType; 7] = [
        FailureType::CrashLoop,
        FailureType::ServiceDown,
        FailureType::MemoryLeak,
        FailureType::HighLatency,
        FailureType::ErrorSpike,
        FailureType::ResourceSaturation,
        FailureType::None,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureType::CrashLoop => "crash_loop",
            FailureType::ServiceDown => "service_down",
            FailureType::MemoryLeak => "memory_leak",
            FailureType::HighLatency => "high_latency",
            FailureType::ErrorSpike => "error_spike",
            FailureType::ResourceSaturation => "resource_saturation",
            FailureType::None => "none",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|t| *t == self)
            .unwrap_or(Self::ALL.len() - 1)
    }
}

/// A classification with every class's probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailurePrediction {
    /// The most probable type.
    pub failure_type: FailureType,
    /// Its probability.
    pub confidence: f64,
    /// Probability per type, in [`FailureType::ALL`] order.
    pub probabilities: Vec<(FailureType, f64)>,
}

/// The trained classifier with its held-out figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureClassifier {
    forest: RandomForest,
    /// Per-class precision, recall and F1 on the held-out split of the last training.
    pub metrics: Vec<ClassMetrics>,
    /// Rows trained on (the training split).
    pub training_rows: usize,
}

impl FailureClassifier {
    /// Trains on labelled rows of [`FAILURE_FEATURES`]: a seeded 80/20 split per class,
    /// the forest fitted on the 80 and measured on the 20.
    pub fn train(
        rows: &Matrix,
        labels: &[FailureType],
        params: &RandomForestParams,
    ) -> Result<Self> {
        if rows.cols() != FAILURE_FEATURES.len() {
            return Err(Error::SchemaMismatch(format!(
                "training rows have {} features, the classifier needs {}",
                rows.cols(),
                FAILURE_FEATURES.len()
            )));
        }
        if rows.rows() != labels.len() {
            return Err(Error::InvalidInput(format!(
                "{} rows but {} labels",
                rows.rows(),
                labels.len()
            )));
        }
        // Every fifth row of each class is held out: stratified and deterministic.
        let mut seen = [0usize; 7];
        let (mut train, mut test) = (Vec::new(), Vec::new());
        let (mut train_y, mut test_y) = (Vec::new(), Vec::new());
        for (r, label) in labels.iter().enumerate() {
            let c = label.index();
            seen[c] += 1;
            if seen[c] % 5 == 0 {
                test.extend_from_slice(rows.row(r));
                test_y.push(c);
            } else {
                train.extend_from_slice(rows.row(r));
                train_y.push(c);
            }
        }
        let cols = FAILURE_FEATURES.len();
        let train = Matrix::new(train, cols)?;
        let forest = RandomForest::fit(train.view(), &train_y, FailureType::ALL.len(), params)?;
        let names: Vec<&str> = FailureType::ALL.iter().map(|t| t.as_str()).collect();
        let metrics = if test_y.is_empty() {
            Vec::new()
        } else {
            let test = Matrix::new(test, cols)?;
            forest.evaluate(test.view(), &test_y, &names)?
        };
        Ok(Self {
            forest,
            metrics,
            training_rows: train_y.len(),
        })
    }

    /// Trained on the bundled synthetic set, so classification works out of the box.
    pub fn bundled(seed: u64) -> Result<Self> {
        let (rows, labels) = crate::synthetic::failure_training_set(seed, 300);
        Self::train(
            &rows,
            &labels,
            &RandomForestParams {
                trees: 60,
                seed,
                ..Default::default()
            },
        )
    }

    /// Checks a deserialised classifier (see [`RandomForest::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.forest.validate()?;
        if self.forest.classes() != FailureType::ALL.len()
            || self.forest.features() != FAILURE_FEATURES.len()
        {
            return Err(Error::Format(
                "the classifier does not match the failure schema".into(),
            ));
        }
        Ok(())
    }

    /// The out-of-bag accuracy of the forest.
    pub fn oob_accuracy(&self) -> Option<f64> {
        self.forest.oob_accuracy()
    }

    /// Classifies one row of [`FAILURE_FEATURES`].
    pub fn classify(&self, row: &[f32]) -> Result<FailurePrediction> {
        let p = self.forest.predict_proba(row)?;
        let probabilities: Vec<(FailureType, f64)> = FailureType::ALL.into_iter().zip(p).collect();
        let (failure_type, confidence) =
            probabilities
                .iter()
                .copied()
                .fold((FailureType::None, -1.0), |best, (t, q)| {
                    if q > best.1 { (t, q) } else { best }
                });
        Ok(FailurePrediction {
            failure_type,
            confidence,
            probabilities,
        })
    }
}

/// Fills the log columns of a [`FAILURE_FEATURES`] row from a log window.
pub fn apply_log_features(row: &mut [f32], logs: &LogFeatures) {
    if row.len() != FAILURE_FEATURES.len() {
        return;
    }
    row[10] = logs.error_rate as f32;
    row[11] = logs.warn_rate as f32;
    row[12] = logs.new_template_rate as f32;
    row[13] = logs.oom_killed as f32;
    row[14] = logs.crash_loop as f32;
    row[15] = logs.panics as f32;
}

/// The feature values of a healthy workload, used for columns a caller leaves out.
pub const HEALTHY_DEFAULTS: [f32; 16] = [
    0.35, 0.5, 0.45, 0.0, 120.0, 1.0, 0.002, 1.0, 0.0, 1.0, 0.01, 0.02, 0.005, 0.0, 0.0, 0.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_classifier_names_each_failure() {
        let c = FailureClassifier::bundled(7).unwrap();
        for m in &c.metrics {
            eprintln!(
                "{} precision {:.3} recall {:.3} f1 {:.3} support {}",
                m.class, m.precision, m.recall, m.f1, m.support
            );
            assert!(m.f1 >= 0.85, "{m:?}");
            assert!(m.support > 0);
        }
        assert_eq!(c.metrics.len(), 7);
        assert!(c.oob_accuracy().unwrap() > 0.85);
        let mut crash = HEALTHY_DEFAULTS;
        crash[8] = 9.0; // restarts
        crash[9] = 0.3; // ready
        crash[14] = 5.0; // crashloop events
        crash[10] = 0.4;
        let p = c.classify(&crash).unwrap();
        assert_eq!(p.failure_type, FailureType::CrashLoop, "{p:?}");
        let healthy = c.classify(&HEALTHY_DEFAULTS).unwrap();
        assert_eq!(healthy.failure_type, FailureType::None, "{healthy:?}");
        assert!((p.probabilities.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn wire_names_round_trip() {
        for t in FailureType::ALL {
            assert_eq!(FailureType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
        assert_eq!(FailureType::parse("meltdown"), None);
    }
}
