//! Severity, a recommended action and an explanation from a detection.

pub use aegis_core::Severity;
use serde::{Deserialize, Serialize};

use crate::{FailurePrediction, FailureType};

/// The severity level of a severity score in [0, 1].
pub fn severity_of(score: f64) -> Severity {
    if score >= 0.85 {
        Severity::Critical
    } else if score >= 0.6 {
        Severity::High
    } else if score >= 0.3 {
        Severity::Medium
    } else {
        Severity::Low
    }
}

/// A remediation the engine may ask the policy engine about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendedAction {
    /// Add replicas.
    ScaleUp,
    /// Remove replicas.
    ScaleDown,
    /// Restart the workload's pods.
    RestartPod,
    /// Roll the deployment back to its previous revision.
    RollbackDeployment,
    /// Do nothing automatically.
    None,
}

impl RecommendedAction {
    /// The wire name (also the policy action).
    pub fn as_str(self) -> &'static str {
        match self {
            RecommendedAction::ScaleUp => "scale_up",
            RecommendedAction::ScaleDown => "scale_down",
            RecommendedAction::RestartPod => "restart_pod",
            RecommendedAction::RollbackDeployment => "rollback_deployment",
            RecommendedAction::None => "none",
        }
    }
}

/// One feature's share of a detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Feature name.
    pub feature: String,
    /// Share in [0, 1]; the shares of a detection sum to 1.
    pub contribution: f64,
    /// The row's value of the feature.
    pub value: f64,
}

/// The recommended action with its confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// What to do.
    pub action: RecommendedAction,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// Why, in one sentence.
    pub explanation: String,
}

/// Severity and recommendation of one detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The level.
    pub severity: Severity,
    /// Severity score in [0, 1].
    pub severity_score: f64,
    /// What to do about it.
    pub recommendation: Recommendation,
    /// Features that drove the anomaly score, largest first.
    pub contributions: Vec<Contribution>,
}

/// How much each failure type weighs when it is certain: a dead service is critical, slow
/// requests less so.
fn failure_weight(t: FailureType) -> f64 {
    match t {
        FailureType::ServiceDown => 1.0,
        FailureType::CrashLoop => 0.9,
        FailureType::ErrorSpike => 0.8,
        FailureType::MemoryLeak => 0.7,
        FailureType::ResourceSaturation => 0.7,
        FailureType::HighLatency => 0.6,
        FailureType::None => 0.0,
    }
}

/// The action for a failure type: crash loops and error spikes usually follow a bad
/// release, so roll back; a dead or leaking process restarts; load problems scale.
fn action_for(t: FailureType) -> RecommendedAction {
    match t {
        FailureType::CrashLoop | FailureType::ErrorSpike => RecommendedAction::RollbackDeployment,
        FailureType::ServiceDown | FailureType::MemoryLeak => RecommendedAction::RestartPod,
        FailureType::HighLatency | FailureType::ResourceSaturation => RecommendedAction::ScaleUp,
        FailureType::None => RecommendedAction::None,
    }
}

/// The severity score in [0, 1] of [`assess`], without the explanation (cheap enough for
/// every row of every tick).
pub fn severity_score(
    anomaly_score: Option<f64>,
    threshold: f64,
    failure: Option<&FailurePrediction>,
) -> f64 {
    // The anomaly part: 0.5 at the threshold, 1 at a score of 1; below the threshold it
    // falls off (and is cut at 0).
    let anomaly_part = anomaly_score.map_or(0.0, |s| {
        let span = (1.0 - threshold).max(1e-9);
        ((s - threshold) / span).clamp(-1.0, 1.0) * 0.5 + 0.5 * f64::from(u8::from(s >= threshold))
    });
    let failure_part = failure.map_or(0.0, |f| f.confidence * failure_weight(f.failure_type));
    anomaly_part.max(failure_part).clamp(0.0, 1.0)
}

/// Assesses a detection: the anomaly score against its threshold, the failure
/// classification when there is one, and the per-feature contributions (shares with
/// names and values, any order).
pub fn assess(
    anomaly_score: Option<f64>,
    threshold: f64,
    failure: Option<&FailurePrediction>,
    mut contributions: Vec<Contribution>,
) -> Assessment {
    contributions.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    let severity_score = severity_score(anomaly_score, threshold, failure);
    let severity = severity_of(severity_score);
    let top: Vec<String> = contributions
        .iter()
        .take(3)
        .map(|c| {
            format!(
                "{} = {} ({:.0}%)",
                c.feature,
                trim(c.value),
                c.contribution * 100.0
            )
        })
        .collect();
    let drivers = if top.is_empty() {
        String::new()
    } else {
        format!("; driven by {}", top.join(", "))
    };
    let score_text = anomaly_score.map_or(String::new(), |s| {
        format!("anomaly score {s:.3} (threshold {threshold:.2})")
    });
    let recommendation = match failure {
        Some(f) if f.failure_type != FailureType::None => {
            let action = action_for(f.failure_type);
            Recommendation {
                action,
                confidence: f.confidence,
                explanation: format!(
                    "{} with probability {:.2}{}{}{}: {}",
                    f.failure_type.as_str(),
                    f.confidence,
                    if score_text.is_empty() { "" } else { ", " },
                    score_text,
                    drivers,
                    action.as_str()
                ),
            }
        }
        _ => {
            let flagged = anomaly_score.is_some_and(|s| s >= threshold);
            // Scale only when load drives it: the dominant feature is CPU or latency above
            // normal (a memory-led anomaly is not helped by more replicas of a leak).
            let saturated = contributions.iter().take(1).any(|c| {
                let n = c.feature.as_str();
                (n.contains("cpu") || n.contains("latency") || n.contains("saturation"))
                    && c.value > 0.0
            });
            let (action, confidence) = if flagged && severity >= Severity::High && saturated {
                (RecommendedAction::ScaleUp, severity_score * 0.6)
            } else {
                (RecommendedAction::None, 1.0 - severity_score * 0.5)
            };
            let what = if flagged {
                "anomalous"
            } else {
                "within normal range"
            };
            Recommendation {
                action,
                confidence,
                explanation: format!(
                    "{what}{}{score_text}{drivers}: {}",
                    if score_text.is_empty() { "" } else { ", " },
                    action.as_str()
                ),
            }
        }
    };
    Assessment {
        severity,
        severity_score,
        recommendation,
        contributions,
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(t: FailureType, p: f64) -> FailurePrediction {
        FailurePrediction {
            failure_type: t,
            confidence: p,
            probabilities: vec![(t, p)],
        }
    }

    #[test]
    fn levels_and_actions() {
        let a = assess(
            Some(0.8),
            0.6,
            Some(&prediction(FailureType::CrashLoop, 0.95)),
            Vec::new(),
        );
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(
            a.recommendation.action,
            RecommendedAction::RollbackDeployment
        );
        assert!(
            a.recommendation.explanation.contains("crash_loop"),
            "{}",
            a.recommendation.explanation
        );
        let calm = assess(
            Some(0.45),
            0.6,
            Some(&prediction(FailureType::None, 0.9)),
            Vec::new(),
        );
        assert_eq!(calm.severity, Severity::Low);
        assert_eq!(calm.recommendation.action, RecommendedAction::None);
        let mid = assess(Some(0.65), 0.6, None, Vec::new());
        assert_eq!(mid.severity, Severity::Medium);
        let saturated = assess(
            Some(0.9),
            0.6,
            None,
            vec![
                Contribution {
                    feature: "memory_usage".into(),
                    contribution: 0.2,
                    value: 0.5,
                },
                Contribution {
                    feature: "cpu_usage".into(),
                    contribution: 0.7,
                    value: 0.99,
                },
            ],
        );
        assert_eq!(saturated.severity, Severity::Critical);
        assert_eq!(saturated.recommendation.action, RecommendedAction::ScaleUp);
        assert_eq!(saturated.contributions[0].feature, "cpu_usage");
        assert!(
            saturated
                .recommendation
                .explanation
                .contains("cpu_usage = 0.99 (70%)")
        );
        let leak = assess(
            None,
            0.6,
            Some(&prediction(FailureType::MemoryLeak, 0.9)),
            Vec::new(),
        );
        assert_eq!(leak.recommendation.action, RecommendedAction::RestartPod);
        assert_eq!(leak.severity, Severity::High);
    }
}
