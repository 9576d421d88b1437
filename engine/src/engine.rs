//! The engine's state between ticks: samples routed to their entity's windows, and a tick
//! that builds the feature matrix of the entities with new data, scores it, and turns
//! scores into detections through per-entity incidents.

use std::collections::HashMap;

use aegis_detectors::Matrix;

use crate::matrix::{EntityWindows, build_refs};
use crate::{Entity, Hysteresis, Incidents, SeriesWindow, Transition, resolve_entity};

/// What the engine tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Metric names (`__name__`) that become features, in column order.
    pub metrics: Vec<String>,
    /// Short window per metric.
    pub window_ms: i64,
    /// Longer baseline per metric (for z-scores).
    pub baseline_ms: i64,
    /// Slot width of both.
    pub resolution_ms: i64,
    /// Most entities held; samples of further entities are counted and dropped.
    pub max_entities: usize,
    /// When incidents open and close.
    pub hysteresis: Hysteresis,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            metrics: vec!["cpu_usage".into(), "memory_usage".into()],
            window_ms: 300_000,
            baseline_ms: 3_600_000,
            resolution_ms: 15_000,
            max_entities: 100_000,
            hysteresis: Hysteresis::default(),
        }
    }
}

/// A new incident to decide on.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The workload.
    pub entity: Entity,
    /// Incident id.
    pub incident: u64,
    /// The score that opened it.
    pub score: f64,
    /// The feature row (for explanations and the decision record).
    pub features: Vec<f32>,
}

/// What the engine has dropped, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Samples of metrics not configured.
    pub untracked: u64,
    /// Samples whose labels name no workload.
    pub no_entity: u64,
    /// Samples of new entities past `max_entities`.
    pub over_limit: u64,
    /// Samples older than their window.
    pub late: u64,
}

#[derive(Debug)]
struct State {
    entity: Entity,
    windows: EntityWindows,
    dirty: bool,
}

/// Windows per entity, and the incidents they led to.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    states: Vec<State>,
    index: HashMap<Entity, usize>,
    incidents: Incidents,
    counters: EngineCounters,
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Self {
        let incidents = Incidents::new(config.hysteresis);
        Self {
            config,
            states: Vec::new(),
            index: HashMap::new(),
            incidents,
            counters: EngineCounters::default(),
        }
    }

    /// Entities held.
    pub fn entities(&self) -> usize {
        self.states.len()
    }

    /// Feature columns per row.
    pub fn columns(&self) -> usize {
        self.config.metrics.len() * crate::matrix::PER_METRIC
    }

    /// What was dropped so far.
    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// Open incidents.
    pub fn open_incidents(&self) -> usize {
        self.incidents.open_count()
    }

    /// Routes one sample of the series with `labels` to its entity's windows; `false` when
    /// it is not tracked (see [`counters`](Self::counters)).
    pub fn ingest(&mut self, labels: &[(String, String)], timestamp_ms: i64, value: f64) -> bool {
        let name = labels
            .iter()
            .find(|(k, _)| k == "__name__")
            .map(|(_, v)| v.as_str());
        let Some(metric) = name.and_then(|n| self.config.metrics.iter().position(|m| m == n))
        else {
            self.counters.untracked += 1;
            return false;
        };
        let Some(entity) = resolve_entity(labels) else {
            self.counters.no_entity += 1;
            return false;
        };
        let idx = match self.index.get(&entity) {
            Some(i) => *i,
            None => {
                if self.states.len() >= self.config.max_entities {
                    self.counters.over_limit += 1;
                    return false;
                }
                let c = &self.config;
                let metrics = (0..c.metrics.len())
                    .map(|_| {
                        (
                            SeriesWindow::new(c.window_ms, c.resolution_ms),
                            SeriesWindow::new(c.baseline_ms, c.resolution_ms),
                        )
                    })
                    .collect();
                self.states.push(State {
                    entity: entity.clone(),
                    windows: EntityWindows { metrics },
                    dirty: false,
                });
                self.index.insert(entity, self.states.len() - 1);
                self.states.len() - 1
            }
        };
        let state = &mut self.states[idx];
        let Some((window, baseline)) = state.windows.metrics.get_mut(metric) else {
            return false;
        };
        let stored = window.insert(timestamp_ms, value);
        baseline.insert(timestamp_ms, value);
        if stored == crate::Insert::TooLate {
            self.counters.late += 1;
            return false;
        }
        state.dirty = true;
        true
    }

    /// One tick: the feature matrix of the entities with new data since the last tick,
    /// scored by `score` (one score per row), turned into detections of newly opened
    /// incidents. Entities without new data keep their incidents as they are.
    pub fn tick(&mut self, score: impl FnOnce(&Matrix) -> Vec<f64>) -> Vec<Detection> {
        let dirty: Vec<usize> = (0..self.states.len())
            .filter(|i| self.states[*i].dirty)
            .collect();
        if dirty.is_empty() {
            return Vec::new();
        }
        let refs: Vec<&EntityWindows> = dirty.iter().map(|i| &self.states[*i].windows).collect();
        let matrix = build_refs(&refs, self.config.metrics.len());
        let scores = score(&matrix);
        let mut detections = Vec::new();
        for (row, i) in dirty.iter().enumerate() {
            let state = &mut self.states[*i];
            state.dirty = false;
            let s = scores.get(row).copied().unwrap_or(0.0);
            if let Transition::Opened { id } = self.incidents.observe(&state.entity, s) {
                detections.push(Detection {
                    entity: state.entity.clone(),
                    incident: id,
                    score: s,
                    features: matrix.row(row).to_vec(),
                });
            }
        }
        detections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str, ns: &str, pod: &str) -> Vec<(String, String)> {
        [("__name__", name), ("namespace", ns), ("pod", pod)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Scores by the CPU z-score column: high when the last value is far above baseline.
    fn z_scorer(m: &Matrix) -> Vec<f64> {
        (0..m.rows())
            .map(|r| if m.row(r)[7] > 4.0 { 0.8 } else { 0.4 })
            .collect()
    }

    #[test]
    fn a_sustained_spike_is_detected_once_and_only_for_its_workload() {
        let mut engine = Engine::new(EngineConfig {
            hysteresis: Hysteresis {
                open_at: 0.6,
                calm_below: 0.55,
                calm_ticks: 4,
            },
            ..Default::default()
        });
        let api = labels("cpu_usage", "production", "api-7d4b9c8f6a-x2kqp");
        let api2 = labels("cpu_usage", "production", "api-7d4b9c8f6a-b7wqz");
        let db = labels("cpu_usage", "production", "db-5f6b7c8d9e-qqqqq");
        let mut detections = Vec::new();
        for tick in 0..200i64 {
            let t = tick * 15_000;
            let wobble = (tick % 5) as f64 * 0.01;
            let api_cpu = if (120..140).contains(&tick) {
                0.95
            } else {
                0.30 + wobble
            };
            assert!(engine.ingest(&api, t, api_cpu));
            assert!(engine.ingest(&api2, t + 1, api_cpu));
            assert!(engine.ingest(&db, t, 0.50 + wobble));
            detections.extend(engine.tick(z_scorer));
        }
        // Two pods of one Deployment are one entity.
        assert_eq!(engine.entities(), 2);
        assert_eq!(detections.len(), 1, "{detections:?}");
        assert_eq!(detections[0].entity.to_string(), "production/api");
        assert_eq!(detections[0].features.len(), engine.columns());
        // Untracked metrics and label sets without a workload are counted, not kept.
        assert!(!engine.ingest(
            &labels("http_requests_total", "production", "api-7d4b9c8f6a-x2kqp"),
            0,
            1.0
        ));
        assert!(!engine.ingest(&[("__name__".to_string(), "cpu_usage".to_string())], 0, 1.0));
        let c = engine.counters();
        assert_eq!((c.untracked, c.no_entity), (1, 1));
        // Nothing new: the tick does nothing.
        assert!(engine.tick(|_| panic!("no rows to score")).is_empty());
    }

    #[test]
    fn entities_are_bounded() {
        let mut engine = Engine::new(EngineConfig {
            max_entities: 2,
            ..Default::default()
        });
        for d in ["a", "b", "c"] {
            let l = [
                ("__name__", "cpu_usage"),
                ("namespace", "ns"),
                ("deployment", d),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>();
            engine.ingest(&l, 0, 1.0);
        }
        assert_eq!(engine.entities(), 2);
        assert_eq!(engine.counters().over_limit, 1);
    }
}
