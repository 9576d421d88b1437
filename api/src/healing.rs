//! The self-healing loop: telemetry in, decisions and actions out.
//!
//! Ingest batches land in the [`Engine`]'s per-entity windows ([`HealingLoop::apply`]).
//! Every tick ([`HealingLoop::tick_at`]) the engine builds the feature matrix of the
//! workloads with new data; the loop scores it with its isolation forests — one per metric
//! over a scale-free view (z-score against the baseline, deviation from the EWMA), so one
//! model serves workloads of any size and a spike in one metric is not diluted by the
//! noise of the others (feature bagging, Lazarevic & Kumar 2005); a row's anomaly score is
//! its most anomalous metric's — and, for rows that look wrong, the failure classifier; per-workload incidents with hysteresis
//! turn scores into detections; each detection is assessed (severity, recommended action,
//! explanation), put to the policy engine as a `self_healing` question from role
//! `service`, and — when allowed, on the leader only — handed to the executor through its
//! guards. Every step lands in the audit trails; detections in prediction history.
//!
//! Models: entities warm up first (their baseline must mean something); warm rows fill a
//! reservoir; once it holds `warmup_rows` the forest is fitted, and refitted every
//! `retrain_every` on rows that scored normal, swapped atomically.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_detectors::{
    Assessment, Contribution, FailurePrediction, FailureType, IsolationForest,
    IsolationForestParams, LogFeatures, Matrix, RecommendedAction, Reservoir, assess,
};
use aegis_engine::matrix::PER_METRIC;
use aegis_engine::{Detection, Engine, EngineConfig, Phase, TickInput};
use aegis_executor::{Action, ActionRequest, Params};
use aegis_policy::{Context, PolicyType, Request as PolicyRequest};
use aegis_store::{AuditLog, NewPrediction, Store};
use arc_swap::ArcSwapOption;
use arrow_array::{Array, Float64Array, Int64Array, StringArray, UInt32Array};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use crate::PolicyService;
use crate::detector_service::DetectorService;
use crate::executor_service::{ExecutorService, policy_request};

/// The actor the loop's decisions and actions are recorded under.
pub const ENGINE_ACTOR: &str = "aegis-engine";

/// Scale-free features per metric the forest sees: z-score against the baseline,
/// deviation of the last value from the EWMA, spread and trend relative to the mean.
const VIEW_PER_METRIC: usize = 2;

/// What a decision record needs from the decision path.
#[derive(Debug)]
struct RecordDraft {
    id: String,
    question: PolicyRequest,
    request: Option<ActionRequest>,
    guards: Option<serde_json::Value>,
}

/// An action whose effect is to be judged at `due_ms`.
#[derive(Debug, Clone)]
struct PendingVerification {
    entity: aegis_engine::Entity,
    action_id: String,
    action: String,
    target: String,
    due_ms: i64,
    score_at_action: f64,
}

/// A detection with its scores and assessment.
type Assessed = (Detection, RowResult, Assessment);

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct HealingSettings {
    /// Windows, metrics, warm-up per entity, limits, hysteresis (over the severity score).
    pub engine: EngineConfig,
    /// Tick interval.
    pub tick: Duration,
    /// Warm rows collected before the first forest is fitted.
    pub warmup_rows: usize,
    /// Refit interval.
    pub retrain_every: Duration,
    /// Anomaly score at which a row is anomalous.
    pub threshold: f64,
    /// Replicas a scale-up adds.
    pub scale_step: i32,
    /// Seed of the forests (deterministic replays).
    pub seed: u64,
    /// Trees per metric forest. Each forest sees two dimensions, where path lengths settle
    /// with far fewer trees than the 100 a wide forest needs; every tick scores one per
    /// metric for every workload, so this is most of the tick.
    pub trees: usize,
    /// How long after an action its target's signal is read again to judge it effective
    /// (severity below the calm threshold) or ineffective.
    pub verify_after: Duration,
    /// Ineffective actions in a row on one target that open its circuit breaker.
    pub breaker_threshold: u32,
    /// Series and log streams nothing arrived for in this long are forgotten by ingest's
    /// registries and the engine's routes (a cardinality burst is not kept for ever).
    pub series_idle: Duration,
}

impl Default for HealingSettings {
    fn default() -> Self {
        Self {
            engine: EngineConfig {
                // Over the severity score: 0.5 is an anomaly at the threshold or a
                // probable failure; calm below 0.4.
                hysteresis: aegis_engine::Hysteresis {
                    open_at: 0.5,
                    calm_below: 0.4,
                    calm_ticks: 30,
                    open_ticks: 2,
                },
                ..EngineConfig::default()
            },
            tick: Duration::from_secs(1),
            warmup_rows: 1_000,
            retrain_every: Duration::from_secs(600),
            threshold: 0.6,
            scale_step: 1,
            seed: 42,
            trees: 50,
            verify_after: Duration::from_secs(300),
            breaker_threshold: 3,
            series_idle: Duration::from_secs(3_600),
        }
    }
}

/// The fitted forests of the loop, one per metric.
#[derive(Debug)]
pub struct LoopModel {
    forests: Vec<IsolationForest>,
    /// Per view column, the largest magnitude in the training rows.
    reach: Vec<f32>,
    /// The anomaly threshold in force: the configured one, or above it the highest training
    /// score plus a margin — a workload's normal tails must not page.
    pub threshold: f64,
    /// `engine-iforest-<unix>-<rows>`.
    pub version: String,
    /// Rows it was fitted on.
    pub rows: usize,
}

/// What became of a detection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoopEvent {
    /// `namespace/workload`.
    pub entity: String,
    /// Incident id (per process).
    pub incident: u64,
    /// `opened` for a new incident, `escalated` when an open incident's diagnosis changed
    /// to a new action.
    pub kind: &'static str,
    /// Event time of the newest sample (RFC 3339).
    pub at: DateTime<Utc>,
    /// Anomaly score of the forest (absent during warm-up).
    pub anomaly_score: Option<f64>,
    /// Failure type named by the classifier, when it was asked.
    pub failure_type: Option<String>,
    /// Its probability.
    pub failure_confidence: Option<f64>,
    /// Severity level and score.
    pub severity: String,
    /// Severity score in [0, 1].
    pub severity_score: f64,
    /// Recommended action (`scale_up`, `restart_pod`, `rollback_deployment`, `none`).
    pub recommended_action: String,
    /// Why, in one sentence.
    pub explanation: String,
    /// `ALLOW`, `DENY` (as in the policy audit), or `NOT_ASKED` (nothing to do).
    pub decision: String,
    /// The policy that decided.
    pub policy: Option<String>,
    /// The decision's reason.
    pub decision_reason: String,
    /// "Why not": every other candidate policy and what kept it from deciding (a failed
    /// condition, or a policy ahead of it), `NAME (EFFECT PRIORITY): reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why_not: Vec<String>,
    /// The id of this decision's record (`GET /api/v1/decisions/{id}`); not in the event's
    /// JSON, which replays compare.
    #[serde(skip)]
    pub decision_record: Option<String>,
    /// `succeeded`, `dry_run`, `failed`, `denied` (a guard refused), `skipped` (not
    /// allowed, or nothing to do), `handed_off` (allowed on a replica that is not the
    /// leader: queued for the leader), `awaiting_approval` (the deciding policy asks for a
    /// person's approval first).
    pub action_status: String,
    /// What the executor said.
    pub action_message: String,
    /// The executor's action id.
    pub action_id: Option<String>,
    /// Microseconds from the start of the tick that saw it to the executor's call (to the
    /// answer when a guard refused).
    #[serde(skip)]
    pub tick_to_action_us: u64,
    /// When the executor was called (or a guard answered).
    #[serde(skip)]
    pub acted_at: Option<Instant>,
}

/// Counters of the loop, for `/api/v1/metrics/stats`.
#[derive(Debug, Default)]
struct Counters {
    ticks: AtomicU64,
    last_tick_us: AtomicU64,
    rows_scored: AtomicU64,
    rows_urgent: AtomicU64,
    detections: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    actions: AtomicU64,
    refused: AtomicU64,
    predictions_dropped: AtomicU64,
    skipped_ticks: AtomicU64,
}

/// Per-row results of one tick's scoring.
#[derive(Debug, Clone, Default)]
struct RowResult {
    anomaly: Option<f64>,
    failure: Option<FailurePrediction>,
}

/// The loop's state; shared by the ingest consumer, the ticker and the API.
#[derive(Debug)]
pub struct HealingLoop {
    settings: HealingSettings,
    engine: Mutex<Engine>,
    model: ArcSwapOption<LoopModel>,
    reservoir: Mutex<Reservoir>,
    detectors: Arc<DetectorService>,
    policies: Arc<PolicyService>,
    executor: Arc<ExecutorService>,
    store: Store,
    leader: Arc<AtomicBool>,
    counters: Counters,
    last_fit: Mutex<Option<Instant>>,
    /// Per workload: its newest incident and the actions already put to the policy engine
    /// for it, so an incident whose diagnosis sharpens (an anomaly that turns out to be a
    /// memory leak) is decided again once per new action, never twice for the same one.
    asked: Mutex<std::collections::HashMap<aegis_engine::Entity, (u64, Vec<RecommendedAction>)>>,
    /// Actions waiting for their post-action verification.
    verifications: Mutex<Vec<PendingVerification>>,
    /// The latest severity score of each entity with a pending verification (NaN until
    /// it is scored again after the action).
    watched: Mutex<std::collections::HashMap<aegis_engine::Entity, f64>>,
    events: tokio::sync::broadcast::Sender<LoopEvent>,
    /// The most recent log batches (for SQL over `logs`), at most [`RECENT_LOG_LINES`]
    /// lines and [`RECENT_LOG_BYTES`]; the Arrow buffers are shared with ingest, not copied.
    recent_logs: Mutex<std::collections::VecDeque<arrow_array::RecordBatch>>,
}

/// How old a handed-over action may be when the leader reads it.
pub const HANDOFF_MAX_AGE: Duration = Duration::from_secs(120);

/// Log lines kept for SQL over recent logs.
pub const RECENT_LOG_LINES: usize = 100_000;
/// Bytes of log batches kept for SQL over recent logs (the newest batch is always kept;
/// ingest caps a line at `max_log_line_bytes`, so one batch is bounded too).
pub const RECENT_LOG_BYTES: usize = 64 << 20;

/// The warm-up and activity figures of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct LoopStats {
    /// `warming_up` until the first forest is fitted, then `ready`.
    pub state: &'static str,
    /// Warm rows collected / needed for the first fit.
    pub warmup_rows: usize,
    /// Rows needed.
    pub warmup_rows_needed: usize,
    /// Entities held / past their warm-up.
    pub entities: usize,
    /// Entities past their own warm-up.
    pub warm_entities: usize,
    /// The forest in use.
    pub model_version: Option<String>,
    /// Ticks run.
    pub ticks: u64,
    /// Duration of the last tick with rows (µs).
    pub last_tick_us: u64,
    /// Rows scored in total.
    pub rows_scored: u64,
    /// Of those, rows the screen sent ahead of the rest of their tick.
    pub rows_urgent: u64,
    /// Incidents opened.
    pub detections: u64,
    /// Decisions allowed / denied.
    pub decisions_allowed: u64,
    /// Decisions denied.
    pub decisions_denied: u64,
    /// Actions handed to the executor that it performed (or dry-ran).
    pub actions: u64,
    /// Actions a guard or the cluster refused.
    pub actions_refused: u64,
    /// Whether this replica executes actions.
    pub leader: bool,
    /// Open incidents.
    pub open_incidents: usize,
    /// Samples and lines taken, and what was dropped.
    pub samples: u64,
    /// Log lines taken.
    pub log_lines: u64,
    /// Samples of metrics not tracked.
    pub untracked: u64,
    /// Samples and lines naming no workload.
    pub no_entity: u64,
    /// Samples of entities past the limit.
    pub over_limit: u64,
    /// Samples older than their window.
    pub late: u64,
    /// Samples that jumped far ahead of their series and were not followed (dropped).
    pub jumps_refused: u64,
    /// Entities dropped when idle.
    pub evicted: u64,
    /// Bytes held by the windows.
    pub window_bytes: usize,
    /// Ticks skipped because the previous one was still running.
    pub skipped_ticks: u64,
    /// Detections that could not be written to prediction history.
    pub predictions_dropped: u64,
}

impl HealingLoop {
    /// A loop over `settings`, deciding with `policies`, acting with `executor`.
    pub fn new(
        settings: HealingSettings,
        detectors: Arc<DetectorService>,
        policies: Arc<PolicyService>,
        executor: Arc<ExecutorService>,
        store: Store,
    ) -> Arc<Self> {
        let cols = settings.engine.metrics.len() * VIEW_PER_METRIC;
        let reservoir = Reservoir::new(cols, 8_192, settings.seed);
        let (events, _) = tokio::sync::broadcast::channel(1_024);
        Arc::new(Self {
            engine: Mutex::new(Engine::new(settings.engine.clone())),
            settings,
            model: ArcSwapOption::empty(),
            reservoir: Mutex::new(reservoir),
            detectors,
            policies,
            executor,
            store,
            leader: Arc::new(AtomicBool::new(true)),
            counters: Counters::default(),
            last_fit: Mutex::new(None),
            asked: Mutex::default(),
            verifications: Mutex::default(),
            watched: Mutex::default(),
            events,
            recent_logs: Mutex::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &HealingSettings {
        &self.settings
    }

    /// The flag that says whether this replica executes actions (leader election sets it).
    pub fn leader_flag(&self) -> &Arc<AtomicBool> {
        &self.leader
    }

    /// Every event, as it happens.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LoopEvent> {
        self.events.subscribe()
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds one ingest batch into the windows; returns rows taken.
    pub fn apply(&self, batch: &aegis_ingest::SampleBatch, ingest: &aegis_ingest::Ingest) -> usize {
        let b = &batch.batch;
        let mut taken = 0;
        match batch.kind {
            aegis_ingest::BatchKind::Samples => {
                let (Some(ids), Some(ts), Some(vs)) = (
                    b.column(0).as_any().downcast_ref::<UInt32Array>(),
                    b.column(1).as_any().downcast_ref::<Int64Array>(),
                    b.column(2).as_any().downcast_ref::<Float64Array>(),
                ) else {
                    return 0;
                };
                let mut engine = self.engine();
                for i in 0..b.num_rows() {
                    let id = ids.value(i);
                    let labels = || labels_of(ingest.registry(), id);
                    taken +=
                        usize::from(engine.ingest_series(id, labels, ts.value(i), vs.value(i)));
                }
            }
            aegis_ingest::BatchKind::Logs => {
                {
                    let mut recent = self.recent_logs.lock().unwrap_or_else(|p| p.into_inner());
                    recent.push_back(b.clone());
                    let mut lines: usize = recent.iter().map(|r| r.num_rows()).sum();
                    let mut bytes: usize = recent.iter().map(|r| r.get_array_memory_size()).sum();
                    // Lines and bytes both bound it: 100,000 lines of 200 bytes are 20 MB,
                    // ten lines of 50 MB would be 500 MB.
                    while (lines > RECENT_LOG_LINES || bytes > RECENT_LOG_BYTES) && recent.len() > 1
                    {
                        let Some(old) = recent.pop_front() else { break };
                        lines -= old.num_rows();
                        bytes = bytes.saturating_sub(old.get_array_memory_size());
                    }
                }
                let mut engine = self.engine();
                self.detectors.with_drain(|drain| {
                    for_each_line(b, |id, ts_ns, line, level| {
                        let labels = || labels_of(ingest.streams(), id);
                        taken += usize::from(engine.ingest_log(
                            id,
                            labels,
                            ts_ns / 1_000_000,
                            line,
                            level,
                            drain,
                        ));
                    });
                });
            }
        }
        taken
    }

    /// Every sample in the engine's short windows: `(entity, metric, timestamp_ms, value)`.
    pub fn for_each_sample(&self, f: impl FnMut(&aegis_engine::Entity, &str, i64, f64)) {
        self.engine().for_each_sample(f);
    }

    /// The recent log lines kept: `(stream id, timestamp_ns, line, level)`, oldest first.
    pub fn for_each_log(&self, mut f: impl FnMut(u32, i64, &str, Option<&str>)) {
        let recent = self.recent_logs.lock().unwrap_or_else(|p| p.into_inner());
        for b in recent.iter() {
            for_each_line(b, &mut f);
        }
    }

    /// Adds one sample directly (scenario files, the demo, tests).
    pub fn ingest_sample(
        &self,
        labels: &[(String, String)],
        timestamp_ms: i64,
        value: f64,
    ) -> bool {
        self.engine().ingest(labels, timestamp_ms, value)
    }

    /// Adds one log line directly; `stream` identifies its label set.
    pub fn ingest_log(
        &self,
        stream: u32,
        labels: &[(String, String)],
        timestamp_ms: i64,
        line: &str,
        level: Option<&str>,
    ) -> bool {
        let mut engine = self.engine();
        self.detectors.with_drain(|drain| {
            engine.ingest_log(
                stream,
                || Some(labels.to_vec()),
                timestamp_ms,
                line,
                level,
                drain,
            )
        })
    }

    /// The scale-free view the forest scores: per metric, z-score, deviation of the last
    /// value from the EWMA, spread and trend relative to the mean, each clipped.
    fn view(&self, m: &Matrix) -> Matrix {
        let metrics = self.settings.engine.metrics.len();
        let mut out = Vec::with_capacity(m.rows() * metrics * VIEW_PER_METRIC);
        for r in 0..m.rows() {
            let row = m.row(r);
            for k in 0..metrics {
                let f = &row[k * PER_METRIC..(k + 1) * PER_METRIC];
                let (last, mean, z, ewma) = (f[0], f[1], f[7], f[8]);
                let scale = mean.abs().max(ewma.abs()).max(1e-3);
                out.push(z.clamp(-50.0, 50.0));
                out.push(((last - ewma) / scale).clamp(-50.0, 50.0));
            }
        }
        Matrix::new(out, metrics * VIEW_PER_METRIC).unwrap_or_else(|_| Matrix::empty(1))
    }

    /// The failure classifier's row from the engine's features and the log window.
    fn failure_row(&self, row: &[f32], logs: &LogFeatures) -> [f32; 16] {
        let metric = |name: &str| {
            self.settings
                .engine
                .metrics
                .iter()
                .position(|m| m == name)
                .map(|k| &row[k * PER_METRIC..(k + 1) * PER_METRIC])
        };
        let names = &aegis_engine::DEFAULT_METRICS;
        let cpu = metric(names[0]);
        let mem = metric(names[1]);
        let lat = metric(names[2]);
        let err = metric(names[3]);
        let restarts = metric(names[4]);
        let mut r = [0f32; 16];
        r[0] = cpu.map_or(0.3, |f| f[1]);
        r[1] = cpu.map_or(0.4, |f| f[4]);
        r[2] = mem.map_or(0.4, |f| f[0]);
        r[3] = mem.map_or(0.0, |f| f[5]);
        r[4] = lat.map_or(100.0, |f| f[0]);
        r[5] = lat.map_or(1.0, |f| {
            // Latency against its own normal: the EWMA lags a spike, the mean shows it.
            let base = (f[1] - f[7] * f[2]).abs().max(1e-3);
            (f[0] / base).clamp(0.0, 100.0)
        });
        r[6] = err.map_or(0.0, |f| f[0]);
        r[7] = 1.0;
        // Restarts is a counter: its increase over the window.
        r[8] = restarts.map_or(0.0, |f| (f[4] - f[3]).max(0.0));
        r[9] = 1.0;
        r[10] = logs.error_rate as f32;
        r[11] = logs.warn_rate as f32;
        r[12] = logs.new_template_rate as f32;
        r[13] = logs.oom_killed as f32;
        r[14] = logs.crash_loop as f32;
        r[15] = logs.panics as f32;
        r
    }

    /// Whether a row shows a sign of failure worth the classifier's time: anomalous, or
    /// restarting, crashing, logging or answering errors. Everything else is healthy enough
    /// that the forest of a hundred deep trees would only confirm it (and at ten thousand
    /// rows a tick it would be most of the tick).
    fn suspicious(failure_row: &[f32; 16], anomaly: Option<f64>, threshold: f64) -> bool {
        anomaly.is_some_and(|s| s >= threshold)
            || failure_row[8] > 0.0
            || failure_row[13] + failure_row[14] + failure_row[15] > 0.0
            || failure_row[10] > 0.1
            || failure_row[6] > 0.05
    }

    /// Scores one tick's rows; fills `results` (one per row).
    fn score(&self, input: &TickInput<'_>, results: &mut Vec<RowResult>) -> Vec<f64> {
        let rows = input.matrix.rows();
        let view = self.view(input.matrix);
        let model = self.model.load_full();
        let threshold = model
            .as_ref()
            .map_or(self.settings.threshold, |m| m.threshold);
        let anomaly: Vec<Option<f64>> = match &model {
            Some(m) => match m.score(&view) {
                Some(per_metric) => per_metric
                    .iter()
                    .map(|s| s.iter().copied().reduce(f64::max))
                    .collect(),
                None => vec![None; rows],
            },
            None => vec![None; rows],
        };
        {
            // Warm rows that look normal (or all warm rows before the first fit) are the
            // material of the next fit.
            let mut reservoir = self.reservoir.lock().unwrap_or_else(|p| p.into_inner());
            for (r, a) in anomaly.iter().enumerate() {
                if input.warm[r] && a.is_none_or(|s| s < threshold) {
                    reservoir.offer(view.row(r));
                }
            }
        }
        let classifier = self.detectors.classifier();
        results.clear();
        let mut scores = Vec::with_capacity(rows);
        for (r, a) in anomaly.iter().copied().enumerate() {
            if !input.warm[r] {
                results.push(RowResult::default());
                scores.push(f64::NAN);
                continue;
            }
            let frow = self.failure_row(input.matrix.row(r), &input.logs[r]);
            let failure = if Self::suspicious(&frow, a, threshold) {
                classifier.classifier.classify(&frow).ok()
            } else {
                None
            };
            scores.push(aegis_detectors::severity_score(
                a,
                threshold,
                failure.as_ref(),
            ));
            results.push(RowResult {
                anomaly: a,
                failure,
            });
        }
        {
            // Entities with an action to verify: keep their newest score.
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            if !watched.is_empty() {
                for (r, s) in scores.iter().enumerate() {
                    if let (Some(e), false) = (input.entities.get(r), s.is_nan())
                        && let Some(slot) = watched.get_mut(*e)
                    {
                        *slot = *s;
                    }
                }
            }
        }
        self.counters
            .rows_scored
            .fetch_add(rows as u64, Ordering::Relaxed);
        scores
    }

    /// Fits a new forest on the reservoir when warm-up is done or a refit is due; returns
    /// its version.
    pub fn maybe_fit(&self, now_ms: i64) -> Option<String> {
        let due = {
            let last = self.last_fit.lock().unwrap_or_else(|p| p.into_inner());
            match *last {
                None => true,
                Some(t) => t.elapsed() >= self.settings.retrain_every,
            }
        };
        if !due {
            return None;
        }
        let rows = {
            let reservoir = self.reservoir.lock().unwrap_or_else(|p| p.into_inner());
            if reservoir.len() < self.settings.warmup_rows.max(2) {
                return None;
            }
            reservoir.to_matrix()
        };
        let params = IsolationForestParams {
            seed: self.settings.seed,
            trees: self.settings.trees,
            ..IsolationForestParams::default()
        };
        let forests = (0..self.settings.engine.metrics.len())
            .map(|k| IsolationForest::fit(columns(&rows, k).view(), &params))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let version = format!("engine-iforest-{}-{}", now_ms / 1000, rows.rows());
        let mut reach = vec![0f32; rows.cols()];
        for r in 0..rows.rows() {
            for (m, x) in reach.iter_mut().zip(rows.row(r)) {
                *m = m.max(x.abs());
            }
        }
        let mut model = LoopModel {
            forests,
            reach,
            threshold: self.settings.threshold,
            version: version.clone(),
            rows: rows.rows(),
        };
        if let Some(scores) = model.score(&rows) {
            let mut max: Vec<f64> = scores
                .iter()
                .filter_map(|s| s.iter().copied().reduce(f64::max))
                .collect();
            max.sort_by(f64::total_cmp);
            // Above every training row, with a margin: beyond the training range a score
            // grows with the distance, so only rows clearly outside what normal looked
            // like cross it — at 10,000 workloads per tick, a 0.1% false-alarm rate per
            // row would be ten false incidents every tick.
            if let Some(q) = max.last() {
                model.threshold = self.settings.threshold.max(q + 0.02).min(0.95);
            }
        }
        let threshold = model.threshold;
        // A sample beyond the largest z-score the model was trained on is what the forest
        // scores highest: the engine takes such entities first in a tick.
        let bounds = (0..self.settings.engine.metrics.len())
            .map(|k| {
                f64::from(
                    model
                        .reach
                        .get(k * VIEW_PER_METRIC)
                        .copied()
                        .unwrap_or(f32::INFINITY),
                )
                .max(1.0)
            })
            .collect();
        self.model.store(Some(Arc::new(model)));
        self.engine().set_screen_bounds(bounds);
        *self.last_fit.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        tracing::info!(%version, rows = rows.rows(), threshold, "the engine's anomaly model is (re)fitted");
        Some(version)
    }

    /// One tick at `now_ms` (event or wall time): score, decide, act. `policy_time` is
    /// the time the policy engine judges by (`None`: now). Returns what happened to each
    /// new incident.
    ///
    /// The tick runs in two phases (see [`Phase`]): the entities whose new samples the
    /// engine screened as surprising are scored, decided and handed to the executor first;
    /// then the bulk of normal rows is built and scored (and anything it finds is decided
    /// too). A spike does not wait behind tens of milliseconds of healthy rows.
    pub async fn tick_at(
        self: &Arc<Self>,
        now_ms: i64,
        policy_time: Option<DateTime<Utc>>,
    ) -> Vec<LoopEvent> {
        let started = Instant::now();
        let mut events = Vec::new();
        let mut rows = 0;
        let mut rows_urgent = 0;
        for phase in [Phase::Urgent, Phase::Rest] {
            let this = Arc::clone(self);
            let span = tracing::info_span!(
                "engine.score",
                phase = if phase == Phase::Urgent {
                    "urgent"
                } else {
                    "rest"
                },
                rows = tracing::field::Empty,
                detections = tracing::field::Empty,
            );
            // Scoring is CPU work on the rayon pool; keep it off the async workers.
            let scored = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let (assessed, n) = this.score_phase(now_ms, phase);
                span.record("rows", n);
                span.record("detections", assessed.len());
                (assessed, n)
            })
            .await;
            let Ok((assessed, n)) = scored else {
                tracing::error!("an engine tick panicked; the next tick starts afresh");
                break;
            };
            rows += n;
            if phase == Phase::Urgent {
                rows_urgent = n;
            }
            self.act_on(assessed, policy_time, started, &mut events)
                .await;
        }
        let tick = tracing::Span::current();
        tick.record("rows", rows);
        tick.record("rows_urgent", rows_urgent);
        tick.record("events", events.len());
        if rows > 0 {
            self.counters.last_tick_us.store(
                crate::detector_service::micros_since(started),
                Ordering::Relaxed,
            );
        }
        if !events.is_empty() {
            self.persist(&events).await;
        }
        if self.leader.load(Ordering::Relaxed) {
            self.run_handoffs().await;
        }
        self.verify_due(now_ms).await;
        events
    }

    fn watch(&self, v: PendingVerification) {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(v.entity.clone(), f64::NAN);
        self.verifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(v);
    }

    /// Post-action verification: for each action whose delay has passed, the target's
    /// newest severity score says whether it helped (below the calm threshold: effective).
    /// Each verdict goes to the action audit chain and the target's breaker; the breaker
    /// opens after `breaker_threshold` ineffective actions in a row.
    async fn verify_due(&self, now_ms: i64) {
        let due: Vec<PendingVerification> = {
            let mut pending = self.verifications.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return;
            }
            let (due, wait): (Vec<_>, Vec<_>) = pending.drain(..).partition(|v| v.due_ms <= now_ms);
            *pending = wait;
            due
        };
        for v in due {
            let score = {
                let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
                let score = watched.get(&v.entity).copied().unwrap_or(f64::NAN);
                let still = self
                    .verifications
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|o| o.entity == v.entity);
                if !still {
                    watched.remove(&v.entity);
                }
                score
            };
            let calm = self.settings.engine.hysteresis.calm_below;
            let after = self.settings.verify_after.as_secs();
            let (status, reason) = if score.is_nan() {
                (
                    "unknown",
                    format!("no new data on {} within {after} s of the action", v.entity),
                )
            } else if score < calm {
                (
                    "effective",
                    format!(
                        "severity {:.2} at the action, {score:.2} {after} s later: below {calm:.2}",
                        v.score_at_action
                    ),
                )
            } else {
                (
                    "ineffective",
                    format!(
                        "severity {:.2} at the action, {score:.2} {after} s later: still at or above {calm:.2}",
                        v.score_at_action
                    ),
                )
            };
            metrics::counter!(aegis_core::metric_names::ACTION_VERIFICATIONS_TOTAL, "result" => status)
                .increment(1);
            let mut rows = vec![aegis_store::NewActionAudit {
                created_at: None,
                action_id: v.action_id.clone(),
                phase: "verification".to_owned(),
                action: v.action.clone(),
                namespace: v.entity.namespace.clone(),
                target: v.target.clone(),
                status: status.to_owned(),
                actor: Some(ENGINE_ACTOR.to_owned()),
                reason: Some(reason),
                details: json!({"score_at_action": round3(v.score_at_action),
                                "score_after": (!score.is_nan()).then(|| round3(score)),
                                "after_secs": after}),
            }];
            if status != "unknown" {
                match self
                    .store
                    .record_verification(
                        &v.entity.to_string(),
                        status == "effective",
                        i64::from(self.settings.breaker_threshold),
                    )
                    .await
                {
                    Ok((breaker, true)) => {
                        tracing::error!(entity = %v.entity, ineffective = breaker.ineffective,
                            "circuit breaker open: the engine stops acting on this target until an operator resets it");
                        metrics::counter!(aegis_core::metric_names::BREAKER_TRIPS_TOTAL)
                            .increment(1);
                        rows.push(aegis_store::NewActionAudit {
                            created_at: None,
                            action_id: v.action_id.clone(),
                            phase: "breaker".to_owned(),
                            action: v.action.clone(),
                            namespace: v.entity.namespace.clone(),
                            target: v.target.clone(),
                            status: "open".to_owned(),
                            actor: Some(ENGINE_ACTOR.to_owned()),
                            reason: Some(format!(
                                "{} ineffective actions in a row on {}: no more actions until an operator resets the breaker",
                                breaker.ineffective, v.entity
                            )),
                            details: json!({"entity": v.entity.to_string()}),
                        });
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, entity = %v.entity, "recording a verification failed");
                    }
                }
            }
            if let Err(error) = self.store.append_action_audit(&rows).await {
                tracing::warn!(%error, "writing a verification to the audit failed");
            }
        }
    }

    /// One phase of a tick on the calling (blocking) thread: the engine's rows scored and
    /// assessed; returns the detections and how many rows were scored.
    fn score_phase(&self, now_ms: i64, phase: Phase) -> (Vec<Assessed>, usize) {
        let mut results = Vec::new();
        let detections = {
            let mut engine = self.engine();
            if phase != Phase::Rest {
                let ticks = self.counters.ticks.fetch_add(1, Ordering::Relaxed);
                if ticks.is_multiple_of(60) {
                    engine.evict_idle(now_ms);
                }
            }
            engine.tick_phase(now_ms, phase, |input| self.score(input, &mut results))
        };
        if phase == Phase::Urgent {
            self.counters
                .rows_urgent
                .fetch_add(results.len() as u64, Ordering::Relaxed);
        }
        if phase != Phase::Urgent {
            self.maybe_fit(now_ms);
        }
        let assessed = detections
            .into_iter()
            .map(|d| {
                let r = results.get(d.row).cloned().unwrap_or_default();
                let a = self.assessment(&d, &r);
                (d, r, a)
            })
            .collect();
        (assessed, results.len())
    }

    /// Decides and acts on one phase's detections, the most severe first, so a real
    /// incident is not queued behind marginal ones.
    async fn act_on(
        &self,
        mut assessed: Vec<Assessed>,
        policy_time: Option<DateTime<Utc>>,
        started: Instant,
        events: &mut Vec<LoopEvent>,
    ) {
        assessed.sort_by(|x, y| {
            y.2.severity_score
                .total_cmp(&x.2.severity_score)
                .then_with(|| x.0.entity.cmp(&y.0.entity))
        });
        for (d, r, a) in assessed {
            let rec = a.recommendation.action;
            {
                let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
                if d.opened {
                    self.counters.detections.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(aegis_core::metric_names::DETECTIONS_TOTAL,
                        "detector" => "engine", "severity" => a.severity.as_str())
                    .increment(1);
                    asked.insert(d.entity.clone(), (d.incident, vec![rec]));
                } else {
                    let Some((incident, actions)) = asked.get_mut(&d.entity) else {
                        continue;
                    };
                    if *incident != d.incident
                        || rec == RecommendedAction::None
                        || actions.contains(&rec)
                    {
                        continue;
                    }
                    actions.push(rec);
                }
            }
            let span = tracing::info_span!(
                "engine.decide",
                entity = %d.entity,
                incident = d.incident,
                action = rec.as_str(),
                decision = tracing::field::Empty,
                status = tracing::field::Empty,
            );
            let event = self
                .decide_and_act(&d, &r, &a, policy_time, started)
                .instrument(span.clone())
                .await;
            span.record("decision", event.decision.as_str());
            span.record("status", event.action_status.as_str());
            let _ = self.events.send(event.clone());
            events.push(event);
        }
    }

    /// The leader executes what other replicas decided and allowed, through its guards
    /// (cooldown and blast radius see every replica's actions in the shared database).
    /// Handoffs older than [`HANDOFF_MAX_AGE`] are dropped: the situation has moved on.
    async fn run_handoffs(&self) {
        let handoffs = match self.store.claim_handoffs(32).await {
            Ok(h) => h,
            Err(error) => {
                tracing::warn!(%error, "cannot read actions handed over by other replicas");
                return;
            }
        };
        for h in handoffs {
            let age = Utc::now() - h.created_at;
            if age > chrono::Duration::from_std(HANDOFF_MAX_AGE).unwrap_or_default() {
                tracing::warn!(entity = %h.entity, age_secs = age.num_seconds(), "a handed-over action is too old; dropped");
                continue;
            }
            let (Ok(req), Ok(question)) = (
                serde_json::from_str::<ActionRequest>(&h.request),
                serde_json::from_str::<PolicyRequest>(&h.question),
            ) else {
                tracing::error!(id = h.id, "a handed-over action does not parse; dropped");
                continue;
            };
            match self
                .executor
                .execute_internal(&self.store, &self.policies, req, ENGINE_ACTOR, question)
                .await
            {
                Ok(r) => {
                    self.counters.actions.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(entity = %h.entity, status = r.status, "executed an action handed over by a replica");
                }
                Err(e) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(entity = %h.entity, reason = e.message(), "a handed-over action was refused by a guard");
                }
            }
        }
    }

    /// Severity, recommendation and per-feature contributions of a detection.
    fn assessment(&self, d: &Detection, r: &RowResult) -> Assessment {
        // Each metric's share of the detection is its forest's score among all of them.
        let contributions = match (&*self.model.load(), r.anomaly) {
            (Some(m), Some(_)) => {
                let m1 = Matrix::new(d.features.clone(), d.features.len())
                    .unwrap_or_else(|_| Matrix::empty(1));
                let v = self.view(&m1);
                let scores = m
                    .score(&v)
                    .and_then(|s| s.into_iter().next())
                    .unwrap_or_default();
                let total: f64 = scores.iter().sum::<f64>().max(1e-9);
                scores
                    .iter()
                    .enumerate()
                    .map(|(k, s)| Contribution {
                        feature: format!("{}_zscore", self.settings.engine.metrics[k]),
                        contribution: s / total,
                        value: f64::from(v.row(0)[k * VIEW_PER_METRIC]),
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let threshold = self
            .model
            .load()
            .as_ref()
            .map_or(self.settings.threshold, |m| m.threshold);
        assess(r.anomaly, threshold, r.failure.as_ref(), contributions)
    }

    async fn decide_and_act(
        &self,
        d: &Detection,
        r: &RowResult,
        a: &Assessment,
        policy_time: Option<DateTime<Utc>>,
        tick_started: Instant,
    ) -> LoopEvent {
        let mut draft = None;
        let mut event = self
            .decide_and_act_inner(d, r, a, policy_time, tick_started, &mut draft)
            .await;
        if let Some(draft) = draft {
            event.decision_record = Some(draft.id.clone());
            self.save_record(d, r, a, &event, draft).await;
        }
        event
    }

    /// The decision record of a remediation: evidence, decision and why not, guards,
    /// approval, request, outcome. Written after the outcome, off the path to the executor.
    async fn save_record(
        &self,
        d: &Detection,
        r: &RowResult,
        a: &Assessment,
        event: &LoopEvent,
        draft: RecordDraft,
    ) {
        let (names, samples) = {
            let engine = self.engine();
            (engine.column_names(), engine.entity_samples(&d.entity))
        };
        let features: serde_json::Map<String, serde_json::Value> = names
            .into_iter()
            .zip(&d.features)
            .map(|(n, v)| (n, json!(round3(f64::from(*v)))))
            .collect();
        let samples: Vec<serde_json::Value> = samples
            .into_iter()
            .map(|(m, t, v)| json!([m, t, v]))
            .collect();
        let approval = (event.action_status == "awaiting_approval")
            .then(|| event.action_id.clone())
            .flatten();
        let record = json!({
            "entity": event.entity,
            "incident": event.incident,
            "at": event.at,
            "evidence": {
                "anomaly_score": event.anomaly_score,
                "severity": event.severity,
                "severity_score": event.severity_score,
                "failure_type": event.failure_type,
                "failure_confidence": event.failure_confidence,
                "explanation": event.explanation,
                "contributions": a.contributions.iter().map(|c| json!({
                    "feature": c.feature, "share": round3(c.contribution), "value": round3(c.value)
                })).collect::<Vec<_>>(),
                "features": features,
                "logs": {"lines": d.logs.lines, "error_rate": round3(d.logs.error_rate),
                         "oom_killed": d.logs.oom_killed, "crash_loop": d.logs.crash_loop,
                         "panics": d.logs.panics, "top_templates": d.logs.templates.iter().take(5).collect::<Vec<_>>()},
                "samples": samples,
                "classifier_ran": r.failure.is_some(),
            },
            "decision": {
                "question": draft.question,
                "decision": event.decision,
                "policy": event.policy,
                "reason": event.decision_reason,
                "why_not": event.why_not,
            },
            "guards": draft.guards,
            "approval": approval,
            // In-process requests are not signed: the loop and the executor share a process.
            "request": draft.request,
            "signed": false,
            "outcome": {"status": event.action_status, "message": event.action_message,
                        "action_id": event.action_id},
        });
        let row = aegis_store::DecisionRecord {
            id: draft.id,
            created_at: Utc::now(),
            entity: event.entity.clone(),
            incident: i64::try_from(event.incident).ok(),
            action_id: if approval.is_some() {
                None
            } else {
                event.action_id.clone()
            },
            approval_id: approval,
            outcome: event.action_status.clone(),
            record: record.to_string(),
        };
        if let Err(error) = self.store.insert_decision_record(&row).await {
            tracing::warn!(%error, entity = %event.entity, "writing a decision record failed");
        }
    }

    async fn decide_and_act_inner(
        &self,
        d: &Detection,
        r: &RowResult,
        a: &Assessment,
        policy_time: Option<DateTime<Utc>>,
        tick_started: Instant,
        draft: &mut Option<RecordDraft>,
    ) -> LoopEvent {
        let rec = a.recommendation.action;
        let mut event = LoopEvent {
            entity: d.entity.to_string(),
            incident: d.incident,
            kind: if d.opened { "opened" } else { "escalated" },
            at: DateTime::from_timestamp_millis(d.at_ms).unwrap_or_else(Utc::now),
            anomaly_score: r.anomaly.map(round3),
            failure_type: r
                .failure
                .as_ref()
                .map(|f| f.failure_type.as_str().to_owned()),
            failure_confidence: r.failure.as_ref().map(|f| round3(f.confidence)),
            severity: a.severity.as_str().to_owned(),
            severity_score: round3(a.severity_score),
            recommended_action: rec.as_str().to_owned(),
            explanation: a.recommendation.explanation.clone(),
            decision: "NOT_ASKED".to_owned(),
            policy: None,
            decision_reason: "no action recommended".to_owned(),
            why_not: Vec::new(),
            decision_record: None,
            action_status: "skipped".to_owned(),
            action_message: String::new(),
            action_id: None,
            tick_to_action_us: 0,
            acted_at: None,
        };
        if rec == RecommendedAction::None {
            return event;
        }
        let mut metadata = serde_json::Map::new();
        metadata.insert("severity".into(), json!(a.severity.as_str()));
        metadata.insert("score".into(), json!(round3(a.severity_score)));
        if let Some(s) = r.anomaly {
            metadata.insert("anomaly_score".into(), json!(round3(s)));
        }
        let failure = r
            .failure
            .as_ref()
            .map_or(FailureType::None, |f| f.failure_type);
        metadata.insert("failure_type".into(), json!(failure.as_str()));
        metadata.insert("namespace".into(), json!(d.entity.namespace));
        metadata.insert("target".into(), json!(d.entity.workload));
        metadata.insert("kind".into(), json!("deployment"));
        metadata.insert("incident".into(), json!(d.incident));
        let record_id = uuid::Uuid::now_v7().to_string();
        metadata.insert("decision_record".into(), json!(record_id));
        let question = PolicyRequest {
            action: rec.as_str().to_owned(),
            resource: format!(
                "cluster:{}/deployment/{}",
                d.entity.namespace, d.entity.workload
            ),
            policy_type: PolicyType::SelfHealing,
            context: Context {
                user_id: Some(ENGINE_ACTOR.to_owned()),
                role: None,
                roles: vec!["service".to_owned()],
                metadata: metadata.clone(),
                time: policy_time,
            },
        };
        *draft = Some(RecordDraft {
            id: record_id,
            question: question.clone(),
            request: None,
            guards: None,
        });
        // Replays decide as of their event time; live, the engine's clock decides.
        let decision = match policy_time {
            Some(at) => self.policies.engine().evaluate_at(&question, at),
            None => self.policies.engine().evaluate(&question),
        };
        self.policies
            .record_queued(
                &question,
                &decision,
                None,
                Some(crate::policy_service::Asker {
                    id: ENGINE_ACTOR,
                    role: Some("service".to_owned()),
                }),
            )
            .await;

        event.decision = decision.decision().to_owned();
        event.policy = decision.policy().map(|p| p.name.clone());
        event.decision_reason = decision.reason();
        if !decision.allowed() {
            self.counters.denied.fetch_add(1, Ordering::Relaxed);
            event.action_message = "not allowed by policy".to_owned();
            event.why_not = self.why_not(&question, &decision, policy_time);
            return event;
        }
        self.counters.allowed.fetch_add(1, Ordering::Relaxed);
        let (action, params) = match rec {
            RecommendedAction::ScaleUp => (
                Action::ScaleDeployment,
                Params {
                    scale_by: Some(self.settings.scale_step.max(1)),
                    ..Params::default()
                },
            ),
            RecommendedAction::ScaleDown => (
                Action::ScaleDeployment,
                Params {
                    scale_by: Some(-self.settings.scale_step.max(1)),
                    ..Params::default()
                },
            ),
            RecommendedAction::RestartPod => (Action::RestartPod, Params::default()),
            RecommendedAction::RollbackDeployment => {
                (Action::RollbackDeployment, Params::default())
            }
            RecommendedAction::None => return event,
        };
        let req = ActionRequest {
            action,
            namespace: d.entity.namespace.clone(),
            target: format!("deployment/{}", d.entity.workload),
            params,
            reason: Some(truncate(&a.recommendation.explanation, 1_900)),
            timestamp: Utc::now(),
            nonce: uuid::Uuid::now_v7().to_string(),
            idempotency_key: None,
        };
        let mut guard_question = policy_request(&req, None);
        guard_question.context.user_id = Some(ENGINE_ACTOR.to_owned());
        guard_question.context.time = policy_time;
        for (k, v) in metadata {
            guard_question.context.metadata.entry(k).or_insert(v);
        }
        if let Some(draft) = draft.as_mut() {
            draft.request = Some(req.clone());
            draft.guards = Some(self.executor.guard_state(&self.store, &req).await);
        }
        if !self.leader.load(Ordering::Relaxed) {
            // Not the leader: the leader executes it, through its own guards.
            let handed = match (
                serde_json::to_string(&req),
                serde_json::to_string(&guard_question),
            ) {
                (Ok(r), Ok(q)) => self.store.push_handoff(&event.entity, &r, &q).await.ok(),
                _ => None,
            };
            event.action_status = "handed_off".to_owned();
            event.why_not = self.why_not(&question, &decision, policy_time);
            event.action_message = match handed {
                Some(id) => format!("not the leader: handed to the leader (handoff {id})"),
                None => "not the leader, and the handoff could not be written".to_owned(),
            };
            return event;
        }
        let answer = self
            .executor
            .execute_internal(
                &self.store,
                &self.policies,
                req,
                ENGINE_ACTOR,
                guard_question,
            )
            .await;
        event.tick_to_action_us = crate::detector_service::micros_since(tick_started);
        event.acted_at = Some(Instant::now());
        // After the call: explaining is not on the path to the executor.
        event.why_not = self.why_not(&question, &decision, policy_time);
        match answer {
            Ok(r) => {
                // Latency to the executor call itself (the measure), not to the
                // answer after the result row is committed.
                if let Some(called) = r.called_at {
                    event.tick_to_action_us =
                        called.saturating_duration_since(tick_started).as_micros() as u64;
                    event.acted_at = Some(called);
                }
                self.counters.actions.fetch_add(1, Ordering::Relaxed);
                if matches!(r.status, "succeeded" | "dry_run") {
                    self.watch(PendingVerification {
                        entity: d.entity.clone(),
                        action_id: r.id.clone(),
                        action: action.as_str().to_owned(),
                        target: format!("deployment/{}", d.entity.workload),
                        due_ms: d.at_ms.saturating_add(
                            i64::try_from(self.settings.verify_after.as_millis())
                                .unwrap_or(i64::MAX),
                        ),
                        score_at_action: a.severity_score,
                    });
                }
                event.action_status = r.status.to_owned();
                event.action_message = r.message;
                event.action_id = Some(r.id);
            }
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                event.action_status = "denied".to_owned();
                event.action_message = e.message().to_owned();
            }
        }
        event
    }

    /// The other candidate policies of a decision and why they did not decide.
    fn why_not(
        &self,
        question: &PolicyRequest,
        decision: &aegis_policy::Decision,
        policy_time: Option<DateTime<Utc>>,
    ) -> Vec<String> {
        let (mut policies, files) = self.policies.engine().sources();
        policies.extend(files);
        let at = policy_time.unwrap_or_else(Utc::now);
        aegis_policy::explain::explain(&policies, question, at, decision)
            .into_iter()
            .filter(|c| c.verdict != aegis_policy::explain::Verdict::Decided)
            .map(|c| format!("{} ({} {}): {}", c.name, c.effect, c.priority, c.reason))
            .collect()
    }

    /// Detections into prediction history, one batch per tick.
    async fn persist(&self, events: &[LoopEvent]) {
        let version = self
            .model
            .load()
            .as_ref()
            .map_or_else(|| "warming-up".to_owned(), |m| m.version.clone());
        let rows: Vec<NewPrediction> = events
            .iter()
            .map(|e| NewPrediction {
                detector: "engine".to_owned(),
                entity: e.entity.clone(),
                model_version: version.clone(),
                score: e.anomaly_score.unwrap_or(e.severity_score),
                is_anomaly: true,
                severity: e.severity.clone(),
                failure_type: e.failure_type.clone(),
                recommended_action: e.recommended_action.clone(),
                confidence: e.failure_confidence.unwrap_or(e.severity_score),
                latency_us: i64::try_from(e.tick_to_action_us).unwrap_or(i64::MAX),
                features: "{}".to_owned(),
                details: serde_json::to_string(e).unwrap_or_default(),
            })
            .collect();
        if let Err(error) = self.detectors.record(&rows).await {
            self.counters
                .predictions_dropped
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            tracing::warn!(%error, "recording the engine's detections failed");
        }
    }

    /// Ticks run and rows scored so far: two atomic reads, for `/metrics` (without the
    /// engine lock [`Self::stats`] takes).
    pub fn progress(&self) -> (u64, u64) {
        (
            self.counters.ticks.load(Ordering::Relaxed),
            self.counters.rows_scored.load(Ordering::Relaxed),
        )
    }

    /// Warm-up state and activity.
    pub fn stats(&self, now_ms: i64) -> LoopStats {
        let (entities, warm, c, open, bytes) = {
            let e = self.engine();
            (
                e.entities(),
                e.warm_entities(now_ms),
                e.counters(),
                e.open_incidents(),
                e.memory_bytes(),
            )
        };
        let model = self.model.load_full();
        let rows = self
            .reservoir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoopStats {
            state: if model.is_some() {
                "ready"
            } else {
                "warming_up"
            },
            warmup_rows: rows.min(self.settings.warmup_rows),
            warmup_rows_needed: self.settings.warmup_rows,
            entities,
            warm_entities: warm,
            model_version: model.as_ref().map(|m| m.version.clone()),
            ticks: n(&self.counters.ticks),
            last_tick_us: n(&self.counters.last_tick_us),
            rows_scored: n(&self.counters.rows_scored),
            rows_urgent: n(&self.counters.rows_urgent),
            detections: n(&self.counters.detections),
            decisions_allowed: n(&self.counters.allowed),
            decisions_denied: n(&self.counters.denied),
            actions: n(&self.counters.actions),
            actions_refused: n(&self.counters.refused),
            leader: self.leader.load(Ordering::Relaxed),
            open_incidents: open,
            samples: c.samples,
            log_lines: c.log_lines,
            untracked: c.untracked,
            no_entity: c.no_entity,
            over_limit: c.over_limit,
            late: c.late,
            jumps_refused: c.jumps_refused,
            evicted: c.evicted,
            window_bytes: bytes,
            skipped_ticks: n(&self.counters.skipped_ticks),
            predictions_dropped: n(&self.counters.predictions_dropped),
        }
    }

    /// Forgets the series and streams ingest evicted as idle (`series_idle`), and the state
    /// the engine and the latest samples keep per id.
    pub fn forget_idle_series(
        &self,
        ingest: &aegis_ingest::Ingest,
        latest: &Mutex<aegis_ingest::LatestSamples>,
    ) -> (usize, usize) {
        let (series, streams) = ingest.evict_idle(self.settings.series_idle);
        if series.is_empty() && streams.is_empty() {
            return (0, 0);
        }
        self.engine().forget_series(&series, &streams);
        latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(&series);
        tracing::info!(
            series = series.len(),
            streams = streams.len(),
            "forgot series and log streams idle for {} s",
            self.settings.series_idle.as_secs()
        );
        (series.len(), streams.len())
    }

    /// Runs the loop: drains `batches` into the windows and ticks every `tick`, until
    /// `stop` resolves.
    pub async fn run(
        self: Arc<Self>,
        ingest: aegis_ingest::Ingest,
        mut batches: tokio::sync::mpsc::Receiver<aegis_ingest::SampleBatch>,
        latest: Arc<Mutex<aegis_ingest::LatestSamples>>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(self.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        // A tick runs beside ingest, so a slow cluster call never stalls the queue; while
        // one is still running the next is skipped (and counted), never stacked.
        let mut inflight: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                () = &mut stop => break,
                batch = batches.recv() => {
                    let Some(batch) = batch else { break };
                    latest.lock().unwrap_or_else(|p| p.into_inner()).apply_batch(&batch);
                    self.apply(&batch, &ingest);
                }
                _ = housekeeping.tick() => {
                    self.forget_idle_series(&ingest, &latest);
                }
                _ = ticker.tick() => {
                    if inflight.as_ref().is_some_and(|h| !h.is_finished()) {
                        self.counters.skipped_ticks.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let this = Arc::clone(&self);
                    // One trace per tick: its phases and decisions are child spans, and
                    // every log line of the tick carries the trace id.
                    let span = tracing::info_span!(
                        "engine.tick",
                        otel.kind = "internal",
                        rows = tracing::field::Empty,
                        rows_urgent = tracing::field::Empty,
                        events = tracing::field::Empty,
                        trace_id = tracing::field::Empty,
                    );
                    crate::telemetry::record_trace_id(&span);
                    inflight = Some(tokio::spawn(
                        async move {
                            let now = Utc::now().timestamp_millis();
                            this.tick_at(now, None).await;
                        }
                        .instrument(span),
                    ));
                }
            }
        }
        if let Some(h) = inflight {
            // Let a decision in flight finish its audit rows.
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }
}

impl LoopModel {
    /// Per row, each metric's anomaly score.
    ///
    /// A forest cannot tell "just past the largest value it was trained on" from "far past
    /// it": both land in the same edge leaf. So beyond the training range the score rises
    /// with the distance, `s + (1 − s)(1 − e^−r)`, `r` the excess over the largest
    /// training magnitude in units of that magnitude (at least 1 for z-scores, 0.1 for
    /// relative deviations). Inside the range the forest's score stands.
    fn score(&self, view: &Matrix) -> Option<Vec<Vec<f64>>> {
        let mut out = vec![Vec::with_capacity(self.forests.len()); view.rows()];
        for (k, forest) in self.forests.iter().enumerate() {
            let cols = k * VIEW_PER_METRIC..(k + 1) * VIEW_PER_METRIC;
            let reach = self.reach.get(cols.clone())?;
            // Rows well inside what normal looked like (every value within half the
            // largest training magnitude) sit in the dense middle, where a forest needs
            // long paths: they are not scored (0). At ten thousand workloads a tick that is
            // nearly every row, and the forest is the tick's largest cost.
            let mut rows = Vec::new();
            let mut data = Vec::new();
            for r in 0..view.rows() {
                let x = &view.row(r)[cols.clone()];
                if x.iter().zip(reach).any(|(v, m)| v.abs() > 0.5 * m) {
                    rows.push(r);
                    data.extend_from_slice(x);
                }
            }
            for row in &mut out {
                row.push(0.0);
            }
            if rows.is_empty() {
                continue;
            }
            let sub = Matrix::new(data, VIEW_PER_METRIC).ok()?;
            let scores = forest.score(sub.view()).ok()?;
            for ((r, s), i) in rows.iter().zip(scores).zip(0..) {
                let x = sub.row(i);
                let excess = x
                    .iter()
                    .enumerate()
                    .map(|(c, v)| {
                        let m = reach.get(c).copied().unwrap_or(0.0);
                        let unit = m.max(if c == 0 { 1.0 } else { 0.1 });
                        f64::from(((v.abs() - m) / unit).max(0.0))
                    })
                    .fold(0.0, f64::max);
                if let Some(slot) = out[*r].last_mut() {
                    *slot = s + (1.0 - s) * (1.0 - (-excess).exp());
                }
            }
        }
        Some(out)
    }
}

/// Metric `k`'s columns of the view.
fn columns(view: &Matrix, k: usize) -> Matrix {
    let mut data = Vec::with_capacity(view.rows() * VIEW_PER_METRIC);
    for r in 0..view.rows() {
        let row = view.row(r);
        data.extend_from_slice(&row[k * VIEW_PER_METRIC..(k + 1) * VIEW_PER_METRIC]);
    }
    Matrix::new(data, VIEW_PER_METRIC).unwrap_or_else(|_| Matrix::empty(VIEW_PER_METRIC))
}

/// The rows of a log batch (`stream_id`, `timestamp_ns`, `line`, `level`).
fn for_each_line(b: &arrow_array::RecordBatch, mut f: impl FnMut(u32, i64, &str, Option<&str>)) {
    let (Some(ids), Some(ts), Some(lines)) = (
        b.column(0).as_any().downcast_ref::<UInt32Array>(),
        b.column(1).as_any().downcast_ref::<Int64Array>(),
        b.column(2).as_any().downcast_ref::<StringArray>(),
    ) else {
        return;
    };
    let levels = b.column(3).as_any().downcast_ref::<StringArray>();
    for i in 0..b.num_rows() {
        let level = levels.filter(|l| l.is_valid(i)).map(|l| l.value(i));
        f(ids.value(i), ts.value(i), lines.value(i), level);
    }
}

fn labels_of(
    registry: &Arc<Mutex<aegis_ingest::SeriesRegistry>>,
    id: u32,
) -> Option<Vec<(String, String)>> {
    let r = registry.lock().unwrap_or_else(|p| p.into_inner());
    r.labels(id).map(|l| {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
