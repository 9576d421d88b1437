//! The engine's state between ticks: samples and log lines routed to their entity's
//! windows, and a tick that builds the feature matrix of the entities with new data, lets
//! the caller score it, and turns scores into detections through per-entity incidents.
//!
//! Long because it is one state machine (routing, windows, eviction, the phased tick) whose
//! invariants hold across those steps; it is easier to check whole than split.

use std::collections::HashMap;

use aegis_detectors::{Drain, LogFeatures, LogWindow, Matrix};

use crate::live::{EntityStreams, MetricScores, Pools};
use crate::matrix::{EntityWindows, build_refs};
use crate::{
    Entity, Hysteresis, Incidents, SeriesWindow, StreamConfig, Transition, resolve_entity,
};

/// What the engine tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Metric names (`__name__`) that become features, in column order.
    pub metrics: Vec<String>,
    /// Short window per metric.
    pub window_ms: i64,
    /// Slot width of the short window.
    pub resolution_ms: i64,
    /// Longer baseline per metric (for z-scores).
    pub baseline_ms: i64,
    /// Slot width of the baseline: coarser than the window, since a baseline's mean and
    /// spread need minutes, not seconds, and it is most of the memory per series.
    pub baseline_resolution_ms: i64,
    /// An entity is scored only once its first sample is this old (its baseline means
    /// something by then).
    pub warmup_ms: i64,
    /// Entities without data for this long are dropped (and counted).
    pub idle_ms: i64,
    /// Most entities held; samples of further entities are counted and dropped.
    pub max_entities: usize,
    /// When incidents open and close.
    pub hysteresis: Hysteresis,
    /// The streaming detector every metric of every workload runs (its step is
    /// `resolution_ms` unless set).
    pub stream: StreamConfig,
}

/// The metrics the engine tracks by default: CPU and memory (fractions of the limit),
/// p99 latency (ms), error rate (fraction of requests) and container restarts (counter).
pub const DEFAULT_METRICS: [&str; 5] = [
    "cpu_usage",
    "memory_usage",
    "latency_p99_ms",
    "error_rate",
    "restarts",
];

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            metrics: DEFAULT_METRICS.iter().map(|m| (*m).to_owned()).collect(),
            window_ms: 300_000,
            resolution_ms: 15_000,
            baseline_ms: 3_600_000,
            baseline_resolution_ms: 60_000,
            warmup_ms: 600_000,
            idle_ms: 3_600_000,
            max_entities: 100_000,
            hysteresis: Hysteresis::default(),
            stream: StreamConfig::default(),
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
    /// Row index in the tick's matrix (for the caller's per-row results).
    pub row: usize,
    /// The feature row (for explanations and the decision record).
    pub features: Vec<f32>,
    /// The entity's log features over the current window.
    pub logs: LogFeatures,
    /// Newest sample time of the entity (event time, ms).
    pub at_ms: i64,
    /// `true` when this tick opened the incident; `false` for a tick of an incident that
    /// is open already and still at or above the threshold (the caller may escalate when
    /// its diagnosis changed).
    pub opened: bool,
}

/// What the engine has dropped, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Samples of metrics not configured.
    pub untracked: u64,
    /// Samples and log lines whose labels name no workload.
    pub no_entity: u64,
    /// Samples of new entities past `max_entities`.
    pub over_limit: u64,
    /// Samples older than their window.
    pub late: u64,
    /// Samples that jumped more than a window ahead of their series and were not followed
    /// (a skewed clock, a sample from years ahead): dropped, the window unmoved.
    pub jumps_refused: u64,
    /// Entities dropped after `idle_ms` without data.
    pub evicted: u64,
    /// Samples stored.
    pub samples: u64,
    /// Log lines stored.
    pub log_lines: u64,
}

/// What a tick hands the scorer: one row per entity with new data.
#[derive(Debug)]
pub struct TickInput<'a> {
    /// The feature matrix ([`crate::matrix::column_names`] order).
    pub matrix: &'a Matrix,
    /// The entity of each row.
    pub entities: Vec<&'a Entity>,
    /// Log features of each row (empty when the entity has no logs).
    pub logs: Vec<LogFeatures>,
    /// Whether each row's entity is past its warm-up.
    pub warm: Vec<bool>,
    /// Per row, the entity's newest sample time (event time, ms).
    pub last_ms: Vec<i64>,
    /// Per row, per metric: the streaming detector's highest score over the entity's new
    /// points (`None`: no point scored this tick — no new slot, or the series is warming
    /// up).
    pub streams: Vec<MetricScores>,
}

impl TickInput<'_> {
    /// A row's anomaly score: its most anomalous metric's (`None`: none scored).
    pub fn anomaly(&self, row: usize) -> Option<f64> {
        self.streams
            .get(row)?
            .iter()
            .flatten()
            .map(|p| p.score)
            .reduce(f64::max)
    }
}

/// Which entities with new data a tick takes.
///
/// A tick at ten thousands of workloads spends tens of milliseconds building and scoring
/// rows, nearly all of them normal. The engine screens every sample as it arrives (its
/// distance from the metric's baseline in baseline deviations, against per-metric bounds
/// the scorer sets with [`Engine::set_screen_bounds`]; an error or crash log line), so a
/// tick can take the surprising entities first ([`Phase::Urgent`]), hand their detections
/// on, and only then do the rest ([`Phase::Rest`]). Every entity is still scored once per
/// tick with the same features: the screen changes the order, never the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Starts a tick: the entities whose new data crossed a screen bound.
    Urgent,
    /// Ends the tick begun by `Urgent`: the other entities with new data.
    Rest,
    /// A whole tick in one go: every entity with new data.
    All,
}

#[derive(Debug)]
struct LogState {
    window: LogWindow,
    start_ms: i64,
}

#[derive(Debug)]
struct State {
    entity: Entity,
    windows: EntityWindows,
    /// Per metric, the streaming detector's series.
    streams: EntityStreams,
    logs: Option<LogState>,
    dirty: bool,
    /// The largest screen value of the samples since the entity was last scored (≥ 1:
    /// urgent).
    surprise: f32,
    /// The tick that scored the entity last (so `Rest` skips what `Urgent` took).
    scored_in: u64,
    first_ms: i64,
    last_ms: i64,
}

/// Where a known series' samples go.
#[derive(Debug, Clone, Copy)]
enum Route {
    Tracked { state: usize, metric: usize },
    Untracked,
    NoEntity,
}

/// Windows per entity, and the incidents they led to.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    states: Vec<State>,
    index: HashMap<Entity, usize>,
    /// Series id → route, so a sample costs one hash lookup once its series is known.
    routes: HashMap<u32, Route>,
    /// Log stream id → entity index.
    stream_routes: HashMap<u32, Option<usize>>,
    incidents: Incidents,
    counters: EngineCounters,
    /// Per metric, the distance from the baseline (in baseline deviations) that makes a
    /// sample urgent; empty: only log lines are.
    screen: Vec<f64>,
    tick_seq: u64,
    /// The streaming detector's pooled forests, one pool per metric.
    pools: Pools,
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Self {
        let incidents = Incidents::new(config.hysteresis);
        let pools = Pools::new(&config.stream, config.metrics.len(), config.resolution_ms);
        Self {
            pools,
            config,
            states: Vec::new(),
            index: HashMap::new(),
            routes: HashMap::new(),
            stream_routes: HashMap::new(),
            incidents,
            counters: EngineCounters::default(),
            screen: Vec::new(),
            tick_seq: 0,
        }
    }

    /// Sets, per metric (configured order), how far from its baseline mean a sample must
    /// be, in baseline standard deviations, to make its entity urgent (see [`Phase`]).
    /// Non-finite or missing bounds screen nothing for that metric.
    pub fn set_screen_bounds(&mut self, bounds: Vec<f64>) {
        self.screen = bounds;
    }

    /// Entities with new data whose samples crossed a screen bound since they were last
    /// scored.
    pub fn urgent_entities(&self) -> usize {
        self.states
            .iter()
            .filter(|s| s.dirty && s.surprise >= 1.0)
            .count()
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Entities held.
    pub fn entities(&self) -> usize {
        self.states.len()
    }

    /// Entities past their warm-up at `now_ms`.
    pub fn warm_entities(&self, now_ms: i64) -> usize {
        self.states
            .iter()
            .filter(|s| now_ms - s.first_ms >= self.config.warmup_ms)
            .count()
    }

    /// Feature columns per row.
    pub fn columns(&self) -> usize {
        self.config.metrics.len() * crate::matrix::PER_METRIC
    }

    /// Column names, in order.
    pub fn column_names(&self) -> Vec<String> {
        let names: Vec<&str> = self.config.metrics.iter().map(String::as_str).collect();
        crate::matrix::column_names(&names)
    }

    /// What was dropped so far.
    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// The streaming detector's pools: whether a model is fitted, the rows held for the
    /// next fits, and models fitted so far.
    pub fn stream_status(&self) -> (bool, usize, usize) {
        self.pools.status()
    }

    /// A new incident id, for an incident opened outside the scores (an alert).
    pub fn allocate_incident(&mut self) -> u64 {
        self.incidents.allocate_id()
    }

    /// Open incidents.
    pub fn open_incidents(&self) -> usize {
        self.incidents.open_count()
    }

    /// Every sample held in the short windows: `(entity, metric name, timestamp_ms,
    /// value)`, per entity and metric oldest first (SQL over recent data reads this).
    pub fn for_each_sample(&self, mut f: impl FnMut(&Entity, &str, i64, f64)) {
        for s in &self.states {
            for (m, (window, _)) in s.windows.metrics.iter().enumerate() {
                let name = self.config.metrics.get(m).map_or("", String::as_str);
                window.for_each(|t, v| f(&s.entity, name, t, v));
            }
        }
    }

    /// The samples `entity` holds in its short windows, per metric oldest first:
    /// `(metric name, timestamp_ms, value)` (the evidence behind a decision).
    pub fn entity_samples(&self, entity: &Entity) -> Vec<(String, i64, f64)> {
        let mut out = Vec::new();
        let Some(s) = self.index.get(entity).and_then(|i| self.states.get(*i)) else {
            return out;
        };
        for (m, (window, _)) in s.windows.metrics.iter().enumerate() {
            let name = self.config.metrics.get(m).map_or("", String::as_str);
            window.for_each(|t, v| out.push((name.to_owned(), t, v)));
        }
        out
    }

    /// Bytes held by the windows and the stream detector's series and pools (an estimate
    /// for memory accounting).
    pub fn memory_bytes(&self) -> usize {
        self.states
            .iter()
            .map(|s| {
                s.windows
                    .metrics
                    .iter()
                    .map(|(w, b)| w.memory_bytes() + b.memory_bytes())
                    .sum::<usize>()
                    + crate::live::streams_bytes(&s.streams)
            })
            .sum::<usize>()
            + self.pools.memory_bytes()
    }

    fn entity_index(&mut self, entity: Entity) -> Option<usize> {
        if let Some(i) = self.index.get(&entity) {
            return Some(*i);
        }
        if self.states.len() >= self.config.max_entities {
            return None;
        }
        let c = &self.config;
        let metrics = (0..c.metrics.len())
            .map(|_| {
                (
                    SeriesWindow::new(c.window_ms, c.resolution_ms),
                    SeriesWindow::new(c.baseline_ms, c.baseline_resolution_ms),
                )
            })
            .collect();
        self.states.push(State {
            entity: entity.clone(),
            windows: EntityWindows { metrics },
            streams: self.pools.streams(),
            logs: None,
            dirty: false,
            surprise: 0.0,
            scored_in: 0,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
        });
        self.index.insert(entity, self.states.len() - 1);
        Some(self.states.len() - 1)
    }

    fn route(&mut self, labels: &[(String, String)]) -> Route {
        let name = labels
            .iter()
            .find(|(k, _)| k == "__name__")
            .map(|(_, v)| v.as_str());
        let Some(metric) = name.and_then(|n| self.config.metrics.iter().position(|m| m == n))
        else {
            return Route::Untracked;
        };
        let Some(entity) = resolve_entity(labels) else {
            return Route::NoEntity;
        };
        match self.entity_index(entity) {
            Some(state) => Route::Tracked { state, metric },
            // Not cached: the entity may fit after an eviction.
            None => Route::NoEntity,
        }
    }

    /// Routes one sample of the series with `labels` to its entity's windows; `false` when
    /// it is not tracked (see [`counters`](Self::counters)).
    pub fn ingest(&mut self, labels: &[(String, String)], timestamp_ms: i64, value: f64) -> bool {
        let route = self.route(labels);
        self.store(route, labels, timestamp_ms, value)
    }

    /// Like [`ingest`](Self::ingest) for a series with a stable id: its labels are read
    /// (through `labels`) and resolved once, later samples cost one lookup.
    pub fn ingest_series(
        &mut self,
        series: u32,
        labels: impl FnOnce() -> Option<Vec<(String, String)>>,
        timestamp_ms: i64,
        value: f64,
    ) -> bool {
        let route = match self.routes.get(&series) {
            Some(r) => *r,
            None => {
                let Some(labels) = labels() else {
                    self.counters.no_entity += 1;
                    return false;
                };
                let route = self.route(&labels);
                let over = matches!(route, Route::NoEntity) && resolve_entity(&labels).is_some();
                if over {
                    self.counters.over_limit += 1;
                    return false;
                }
                self.routes.insert(series, route);
                route
            }
        };
        self.store(route, &[], timestamp_ms, value)
    }

    fn store(
        &mut self,
        route: Route,
        labels: &[(String, String)],
        timestamp_ms: i64,
        value: f64,
    ) -> bool {
        let (state, metric) = match route {
            Route::Tracked { state, metric } => (state, metric),
            Route::Untracked => {
                self.counters.untracked += 1;
                return false;
            }
            Route::NoEntity => {
                if !labels.is_empty() && resolve_entity(labels).is_some() {
                    self.counters.over_limit += 1;
                } else {
                    self.counters.no_entity += 1;
                }
                return false;
            }
        };
        let Some(state) = self.states.get_mut(state) else {
            return false;
        };
        let Some((window, baseline)) = state.windows.metrics.get_mut(metric) else {
            return false;
        };
        // Screened against the baseline as it was before this sample, so a first step
        // off a flat line counts in full.
        let before = (!self.screen.is_empty()).then(|| baseline.mean_std());
        let refused_before = window.jumps_refused;
        let stored = window.insert(timestamp_ms, value);
        baseline.insert(timestamp_ms, value);
        self.counters.jumps_refused += window.jumps_refused - refused_before;
        if matches!(
            stored,
            crate::Insert::TooLate | crate::Insert::Invalid | crate::Insert::Held
        ) {
            self.counters.late += u64::from(stored == crate::Insert::TooLate);
            return false;
        }
        if stored == crate::Insert::Stored {
            self.pools
                .take(&mut state.streams, metric, timestamp_ms, value);
        }
        let bound = self
            .screen
            .get(metric)
            .filter(|b| b.is_finite() && **b > 0.0);
        if let (Some(bound), Some(before)) = (bound, before) {
            let s = surprise(value, before) / bound;
            state.surprise = state.surprise.max(s as f32);
        }
        state.first_ms = state.first_ms.min(timestamp_ms);
        state.last_ms = state.last_ms.max(timestamp_ms);
        state.dirty = true;
        self.counters.samples += 1;
        true
    }

    /// Adds one log line of the stream `stream` to its entity's log window, through the
    /// shared template miner; `false` when the stream names no tracked workload.
    pub fn ingest_log(
        &mut self,
        stream: u32,
        labels: impl FnOnce() -> Option<Vec<(String, String)>>,
        timestamp_ms: i64,
        line: &str,
        level: Option<&str>,
        drain: &mut Drain,
    ) -> bool {
        let idx = match self.stream_routes.get(&stream) {
            Some(r) => *r,
            None => {
                let r = labels()
                    .and_then(|l| resolve_entity(&l))
                    .and_then(|e| self.entity_index(e));
                self.stream_routes.insert(stream, r);
                r
            }
        };
        let Some(state) = idx.and_then(|i| self.states.get_mut(i)) else {
            self.counters.no_entity += 1;
            return false;
        };
        let window_ms = self.config.window_ms;
        let logs = state.logs.get_or_insert_with(|| LogState {
            window: LogWindow::new(),
            start_ms: timestamp_ms,
        });
        if timestamp_ms - logs.start_ms >= window_ms {
            // A new window: the log features describe the recent lines, like the metric
            // windows describe the recent samples.
            logs.window = LogWindow::new();
            logs.start_ms = timestamp_ms;
        }
        let alarming = logs.window.alarming_lines();
        logs.window.add(drain, line, level);
        if logs.window.alarming_lines() > alarming {
            // An error or crash line: worth a look before the normal rows.
            state.surprise = f32::INFINITY;
        }
        state.first_ms = state.first_ms.min(timestamp_ms);
        state.last_ms = state.last_ms.max(timestamp_ms);
        state.dirty = true;
        self.counters.log_lines += 1;
        true
    }

    /// Forgets the routes of series and log streams ingest no longer knows (their ids are
    /// never handed out again), so the maps do not grow with every series ever seen.
    pub fn forget_series(&mut self, series: &[u32], streams: &[u32]) {
        for id in series {
            self.routes.remove(id);
        }
        for id in streams {
            self.stream_routes.remove(id);
        }
    }

    /// Drops entities without data since `now_ms - idle_ms`; returns how many.
    pub fn evict_idle(&mut self, now_ms: i64) -> usize {
        let cutoff = now_ms - self.config.idle_ms;
        let before = self.states.len();
        for s in self.states.iter().filter(|s| s.last_ms < cutoff) {
            self.pools.leave(&s.streams);
        }
        self.states.retain(|s| s.last_ms >= cutoff);
        let evicted = before - self.states.len();
        if evicted > 0 {
            // Indices moved: rebuild the index, resolve series again on their next sample.
            self.index = self
                .states
                .iter()
                .enumerate()
                .map(|(i, s)| (s.entity.clone(), i))
                .collect();
            self.routes.clear();
            self.stream_routes.clear();
            self.counters.evicted += evicted as u64;
        }
        evicted
    }

    /// One tick: the feature matrix of the entities with new data since the last tick,
    /// scored by `score` (one score per row), turned into detections of newly opened
    /// incidents. Entities without new data keep their incidents as they are.
    pub fn tick(&mut self, score: impl FnOnce(&Matrix) -> Vec<f64>) -> Vec<Detection> {
        let mut d = self.tick_with(i64::MAX, |input| score(input.matrix));
        d.retain(|d| d.opened);
        d
    }

    /// Like [`tick`](Self::tick) with the entities, their log features and warm-up state
    /// at `now_ms` for the scorer; also returns the rows of open incidents still at or
    /// above the threshold (`opened == false`). A `NaN` score (a row the scorer declines, e.g. during
    /// warm-up) leaves the entity's incident as it is.
    pub fn tick_with(
        &mut self,
        now_ms: i64,
        score: impl FnOnce(&TickInput<'_>) -> Vec<f64>,
    ) -> Vec<Detection> {
        self.tick_phase(now_ms, Phase::All, score)
    }

    /// Like [`tick_with`](Self::tick_with) over the entities `phase` takes.
    pub fn tick_phase(
        &mut self,
        now_ms: i64,
        phase: Phase,
        score: impl FnOnce(&TickInput<'_>) -> Vec<f64>,
    ) -> Vec<Detection> {
        if phase != Phase::Rest {
            self.tick_seq += 1;
        }
        let seq = self.tick_seq;
        let dirty: Vec<usize> = (0..self.states.len())
            .filter(|i| {
                let s = &self.states[*i];
                s.dirty
                    && match phase {
                        Phase::Urgent => s.surprise >= 1.0,
                        // New data since `Urgent` took an entity waits for the next tick,
                        // so hysteresis counts one observation per entity and tick.
                        Phase::Rest => s.scored_in != seq,
                        Phase::All => true,
                    }
            })
            .collect();
        if dirty.is_empty() {
            return Vec::new();
        }
        let streams = {
            let mut take = dirty.iter().peekable();
            let picked: Vec<&mut EntityStreams> = self
                .states
                .iter_mut()
                .enumerate()
                .filter_map(|(i, s)| take.next_if_eq(&&i).map(|_| &mut s.streams))
                .collect();
            self.pools.score(picked)
        };
        let refs: Vec<&EntityWindows> = dirty.iter().map(|i| &self.states[*i].windows).collect();
        let matrix = build_refs(&refs, self.config.metrics.len());
        let warmup = self.config.warmup_ms;
        let input = TickInput {
            matrix: &matrix,
            entities: dirty.iter().map(|i| &self.states[*i].entity).collect(),
            logs: dirty
                .iter()
                .map(|i| {
                    self.states[*i]
                        .logs
                        .as_ref()
                        .map(|l| l.window.features())
                        .unwrap_or_default()
                })
                .collect(),
            warm: dirty
                .iter()
                .map(|i| now_ms.saturating_sub(self.states[*i].first_ms) >= warmup)
                .collect(),
            last_ms: dirty.iter().map(|i| self.states[*i].last_ms).collect(),
            streams,
        };
        let scores = score(&input);
        let logs = input.logs;
        let mut detections = Vec::new();
        for (row, (i, log)) in dirty.iter().zip(logs).enumerate() {
            let state = &mut self.states[*i];
            state.dirty = false;
            state.surprise = 0.0;
            state.scored_in = seq;
            let s = scores.get(row).copied().unwrap_or(f64::NAN);
            if s.is_nan() {
                continue;
            }
            let (id, opened) = match self.incidents.observe(&state.entity, s) {
                Transition::Opened { id } => (id, true),
                Transition::Ongoing { id } if s >= self.config.hysteresis.open_at => (id, false),
                _ => continue,
            };
            detections.push(Detection {
                entity: state.entity.clone(),
                incident: id,
                score: s,
                row,
                features: matrix.row(row).to_vec(),
                logs: log,
                at_ms: state.last_ms,
                opened,
            });
        }
        detections
    }
}

/// How far `value` is from a baseline `(count, mean, std)`, in standard deviations; a
/// change from a flat baseline (a counter that never moved, an error rate that was zero)
/// is infinitely far.
fn surprise(value: f64, (count, mean, std): (usize, f64, f64)) -> f64 {
    if count < 2 {
        return 0.0;
    }
    let d = (value - mean).abs();
    let scale = mean.abs().max(1.0);
    if std <= 1e-9 * scale {
        return if d > 1e-9 * scale { f64::INFINITY } else { 0.0 };
    }
    d / std
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
                open_ticks: 1,
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

    fn deployment(name: &str, d: &str) -> Vec<(String, String)> {
        [
            ("__name__", name),
            ("namespace", "production"),
            ("deployment", d),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn rows(input: &TickInput<'_>) -> Vec<String> {
        input.entities.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn urgent_entities_go_first_and_each_entity_is_scored_once_a_tick() {
        let mut engine = Engine::new(EngineConfig::default());
        let noise = |t: i64| 0.30 + ((t * 7919) % 11) as f64 * 0.004;
        // 50 minutes of history: 50 baseline slots.
        for t in 0..200i64 {
            for d in ["api", "db", "web"] {
                engine.ingest(&deployment("cpu_usage", d), t * 15_000, noise(t));
            }
        }
        // No bounds yet: nothing is urgent, even a spike.
        engine.ingest(&deployment("cpu_usage", "web"), 200 * 15_000, 0.97);
        assert_eq!(engine.urgent_entities(), 0);
        engine.tick_phase(0, Phase::All, |i| vec![0.0; i.matrix.rows()]);

        engine.set_screen_bounds(vec![4.0; 5]);
        for d in ["api", "db", "web"] {
            let v = if d == "api" { 0.97 } else { noise(201) };
            engine.ingest(&deployment("cpu_usage", d), 201 * 15_000, v);
        }
        assert_eq!(engine.urgent_entities(), 1);
        let mut urgent = Vec::new();
        engine.tick_phase(0, Phase::Urgent, |i| {
            urgent = rows(i);
            vec![0.0; i.matrix.rows()]
        });
        assert_eq!(urgent, ["production/api"]);
        // New data for `api` between the phases waits for the next tick.
        engine.ingest(&deployment("cpu_usage", "api"), 201 * 15_000 + 5, noise(3));
        let mut rest = Vec::new();
        engine.tick_phase(0, Phase::Rest, |i| {
            rest = rows(i);
            vec![0.0; i.matrix.rows()]
        });
        assert_eq!(rest, ["production/db", "production/web"]);
        let mut next = Vec::new();
        engine.tick_phase(0, Phase::Urgent, |_| vec![]);
        engine.tick_phase(0, Phase::Rest, |i| {
            next = rows(i);
            vec![0.0; i.matrix.rows()]
        });
        assert_eq!(next, ["production/api"]);
        // A counter moving off a flat baseline is urgent too.
        for t in 0..10i64 {
            engine.ingest(&deployment("restarts", "db"), t * 60_000, 0.0);
        }
        engine.tick_with(0, |i| vec![0.0; i.matrix.rows()]);
        engine.ingest(&deployment("restarts", "db"), 10 * 60_000, 1.0);
        assert_eq!(engine.urgent_entities(), 1);
    }

    #[test]
    fn an_error_log_line_makes_its_entity_urgent() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut drain = Drain::new(aegis_detectors::DrainConfig::default());
        let l = || Some(deployment("x", "api"));
        engine.ingest_log(1, l, 0, "GET /health 200 in 3ms", Some("info"), &mut drain);
        assert_eq!(engine.urgent_entities(), 0);
        engine.ingest_log(
            1,
            l,
            1,
            "connection refused to db:5432",
            Some("error"),
            &mut drain,
        );
        assert_eq!(engine.urgent_entities(), 1);
    }

    #[test]
    fn two_phases_find_what_one_tick_finds() {
        // The same data through `All` and through `Urgent` + `Rest`: the same detections
        // with the same features, whatever the screen took first.
        let mut one = Engine::new(EngineConfig::default());
        let mut two = Engine::new(EngineConfig::default());
        two.set_screen_bounds(vec![3.0; 5]);
        let scorer = |i: &TickInput<'_>| {
            (0..i.matrix.rows())
                .map(|r| if i.matrix.row(r)[7] > 3.0 { 0.9 } else { 0.1 })
                .collect::<Vec<f64>>()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for t in 0..120i64 {
            for w in 0..30 {
                let d = format!("svc-{w}");
                let spike = w % 7 == 3 && (80 + w as i64..90 + w as i64).contains(&t);
                let v = if spike {
                    0.95
                } else {
                    0.3 + ((t * 31 + w as i64 * 17) % 13) as f64 * 0.003
                };
                one.ingest(&deployment("cpu_usage", &d), t * 15_000, v);
                two.ingest(&deployment("cpu_usage", &d), t * 15_000, v);
            }
            a.extend(one.tick_phase(t * 15_000, Phase::All, scorer));
            b.extend(two.tick_phase(t * 15_000, Phase::Urgent, scorer));
            b.extend(two.tick_phase(t * 15_000, Phase::Rest, scorer));
        }
        let key = |d: &Detection| {
            (
                d.entity.to_string(),
                d.incident,
                d.opened,
                d.features.clone(),
            )
        };
        let mut a: Vec<_> = a.iter().map(key).collect();
        let mut b: Vec<_> = b.iter().map(key).collect();
        a.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        b.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        assert!(!a.is_empty());
        // Four spiking workloads, each one incident, escalation rows after the first.
        assert_eq!(a.iter().filter(|d| d.2).count(), 4);
        assert_eq!(a, b);
    }
}
