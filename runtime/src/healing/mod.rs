//! The self-healing loop: telemetry in, decisions and actions out.
//!
//! Ingest batches land in the [`Engine`]'s per-entity windows ([`HealingLoop::apply`]).
//! Every tick ([`HealingLoop::tick_at`]) the engine runs the streaming detector — the one
//! `aegis backtest` runs — over the new points of every workload metric (per-series shape,
//! likelihood and range; forests pooled per metric) and builds the feature matrix of the
//! workloads with new data; a row's anomaly score is its most anomalous metric's, and rows
//! that look wrong also go to the failure classifier; per-workload incidents with
//! hysteresis turn scores into detections; each detection is assessed (severity, recommended action,
//! explanation), put to the policy engine as a `self_healing` question from role
//! `service`, and — when allowed, on the leader only — handed to the executor through its
//! guards. Every step lands in the audit trails; detections in prediction history.
//!
//! Models: each series is watched for `warmup_rows` points before it is scored; its
//! metric's pool fits its forest once that many rows are held and refits on the stream
//! detector's schedule (`engine/src/stream/pool.rs`).
//!
//! Modules: `tick` (samples in, each tick's scoring and actions), `model` (the failure
//! classifier's row, explanations), `decide` (the policy question, the guards, decision records),
//! `verify` (post-action verification, breakers, hand-overs), `stats` (counters and
//! `/api/v1/metrics/stats`).

mod alerts;
mod decide;
mod model;
mod stats;
mod tick;
mod verify;

pub use alerts::{
    ALERT_RESULTS, AlertOutcome, AlertRule, AlertmanagerPayload, AmAlert, action_for_alert,
    alert_severity,
};
pub use stats::LoopStats;
pub use verify::HANDOFF_MAX_AGE;

use decide::*;
use stats::*;
use verify::*;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_detectors::{
    Assessment, Contribution, FailurePrediction, FailureType, LogFeatures, RecommendedAction,
    assess,
};
use aegis_engine::matrix::PER_METRIC;
use aegis_engine::{Detection, Engine, EngineConfig, Phase, TickInput};
use aegis_executor::{Action, ActionRequest, Params};
use aegis_policy::{Context, PolicyType, Request as PolicyRequest};
use aegis_store::{AuditLog, NewPrediction, Store};
use arrow_array::{Array, Float64Array, Int64Array, StringArray, UInt32Array};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use crate::PolicyService;
use crate::detector_service::DetectorService;
use crate::guards::{ExecutorService, policy_request};

/// The actor the loop's decisions and actions are recorded under.
pub const ENGINE_ACTOR: &str = "aegis-engine";

/// A detection with its scores and assessment.
type Assessed = (Detection, RowResult, Assessment);

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct HealingSettings {
    /// Windows, metrics, warm-up per entity, limits, hysteresis (over the severity score).
    pub engine: EngineConfig,
    /// Tick interval.
    pub tick: Duration,
    /// Points each series is watched before it is scored, and rows its metric's pool
    /// holds before the first forest is fitted (the stream detector's warm-up).
    pub warmup_rows: usize,
    /// Anomaly score at which a point is anomalous (the stream detector's threshold).
    pub threshold: f64,
    /// Replicas a scale-up adds.
    pub scale_step: i32,
    /// How long after an action its target's signal is read again to judge it effective
    /// (severity below the calm threshold) or ineffective.
    pub verify_after: Duration,
    /// Ineffective actions in a row on one target that open its circuit breaker.
    pub breaker_threshold: u32,
    /// Series and log streams nothing arrived for in this long are forgotten by ingest's
    /// registries and the engine's routes (a cardinality burst is not kept for ever).
    pub series_idle: Duration,
    /// Which Alertmanager alerts ask for which action (`alert_actions`), first match wins.
    pub alert_rules: Vec<AlertRule>,
}

impl Default for HealingSettings {
    fn default() -> Self {
        Self {
            engine: EngineConfig {
                // Over the severity score: 0.5 is an alarm of the stream detector barely
                // off its baseline, 0.6 one four deviations off (or a probable failure);
                // an incident — a question to the policy engine — opens at 0.6, so an
                // unusual wiggle is a recorded alarm, not a page. Calm below 0.4. One tick
                // opens: the detector's likelihood already asks that a change stand out
                // against the series' own history, and it alarms once per incident.
                hysteresis: aegis_engine::Hysteresis {
                    open_at: 0.6,
                    calm_below: 0.4,
                    calm_ticks: 30,
                    open_ticks: 1,
                },
                ..EngineConfig::default()
            },
            tick: Duration::from_secs(1),
            warmup_rows: aegis_engine::StreamConfig::default().warmup_points,
            threshold: aegis_engine::StreamConfig::default().threshold,
            scale_step: 1,
            verify_after: Duration::from_secs(300),
            breaker_threshold: 3,
            series_idle: Duration::from_secs(3_600),
            alert_rules: Vec::new(),
        }
    }
}

/// What the policy engine said about a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Allowed (as `ALLOW` in the policy audit).
    #[serde(rename = "ALLOW")]
    Allow,
    /// Denied.
    #[serde(rename = "DENY")]
    Deny,
    /// Not asked: nothing to do for this detection.
    #[serde(rename = "NOT_ASKED")]
    NotAsked,
}

impl Verdict {
    /// As written in events and the policy audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::NotAsked => "NOT_ASKED",
        }
    }
}

/// What became of the action a detection called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// The executor carried it out.
    Succeeded,
    /// Dry-run mode: what it would have done.
    DryRun,
    /// The executor tried and the cluster refused or failed.
    Failed,
    /// A guard refused it.
    Denied,
    /// Not allowed, or nothing to do.
    Skipped,
    /// Allowed on a replica that is not the leader: queued for the leader.
    HandedOff,
    /// The deciding policy asks for a person's approval first.
    AwaitingApproval,
}

impl ActionStatus {
    /// As written in events, decision records and the action audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::DryRun => "dry_run",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Skipped => "skipped",
            Self::HandedOff => "handed_off",
            Self::AwaitingApproval => "awaiting_approval",
        }
    }

    /// The status of an executor answer (`ExecuteResponse::status`).
    pub fn of_answer(status: &str) -> Self {
        match status {
            "succeeded" => Self::Succeeded,
            "dry_run" => Self::DryRun,
            "denied" => Self::Denied,
            "awaiting_approval" => Self::AwaitingApproval,
            _ => Self::Failed,
        }
    }
}

macro_rules! compares_as_str {
    ($t:ty) => {
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
compares_as_str!(Verdict);
compares_as_str!(ActionStatus);

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
    pub decision: Verdict,
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
    pub action_status: ActionStatus,
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

/// A point the stream detector flagged (at or above the threshold): a detection, whether
/// or not it was far enough off its baseline to open an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    /// `namespace/workload`.
    pub entity: String,
    /// The metric (`__name__`).
    pub metric: String,
    /// The workload's newest sample when it was scored (the point's time, one point a
    /// tick).
    pub at: DateTime<Utc>,
    /// The stream detector's score.
    pub score: f64,
    /// How far the point is from its lagged baseline, in baseline deviations.
    pub level: f64,
}

/// Per-row results of one tick's scoring.
#[derive(Debug, Clone, Default)]
struct RowResult {
    anomaly: Option<f64>,
    /// Per metric, the stream detector's finding this tick (`None`: not scored).
    metrics: aegis_engine::MetricScores,
    failure: Option<FailurePrediction>,
    /// The Alertmanager alert this detection came from (its decision record names it).
    alert: Option<serde_json::Value>,
}

/// The loop's state; shared by the ingest consumer, the ticker and the API.
#[derive(Debug)]
pub struct HealingLoop {
    settings: HealingSettings,
    engine: Mutex<Engine>,
    detectors: Arc<DetectorService>,
    policies: Arc<PolicyService>,
    executor: Arc<ExecutorService>,
    store: Store,
    leader: Arc<AtomicBool>,
    counters: Counters,
    /// Per workload: its newest incident and the actions already put to the policy engine
    /// for it, so an incident whose diagnosis sharpens (an anomaly that turns out to be a
    /// memory leak) is decided again once per new action, never twice for the same one.
    asked: Mutex<std::collections::HashMap<aegis_engine::Entity, (u64, Vec<RecommendedAction>)>>,
    /// Every alarm of the stream detector, when kept ([`HealingLoop::keep_alarms`]:
    /// replays, which compare them with a backtest); `None` in `serve`.
    alarms: Mutex<Option<Vec<Alarm>>>,
    /// Per workload, its open alert incident (alerts from Alertmanager).
    alert_incidents: Mutex<alerts::AlertIncidents>,
    /// Alerts that act on nothing, by fingerprint, and when they were last recorded.
    alerts_seen: Mutex<std::collections::HashMap<String, Instant>>,
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

/// Baseline deviations off that make a sample's workload urgent in its tick (see
/// [`Phase`]): the order of scoring, never its outcome.
const SCREEN_BOUND: f64 = 4.0;

/// Log lines kept for SQL over recent logs.
pub const RECENT_LOG_LINES: usize = 100_000;
/// Bytes of log batches kept for SQL over recent logs (the newest batch is always kept;
/// ingest caps a line at `max_log_line_bytes`, so one batch is bounded too).
pub const RECENT_LOG_BYTES: usize = 64 << 20;

impl HealingLoop {
    /// A loop over `settings`, deciding with `policies`, acting with `executor`.
    pub fn new(
        settings: HealingSettings,
        detectors: Arc<DetectorService>,
        policies: Arc<PolicyService>,
        executor: Arc<ExecutorService>,
        store: Store,
    ) -> Arc<Self> {
        let (events, _) = tokio::sync::broadcast::channel(1_024);
        let mut config = settings.engine.clone();
        // The loop's warm-up and threshold are the stream detector's.
        config.stream.warmup_points = settings.warmup_rows;
        config.stream.threshold = settings.threshold;
        let mut engine = Engine::new(config);
        // Samples this many baseline deviations off go ahead of the rest of their tick.
        engine.set_screen_bounds(vec![SCREEN_BOUND; settings.engine.metrics.len()]);
        Arc::new(Self {
            engine: Mutex::new(engine),
            settings,
            detectors,
            policies,
            executor,
            store,
            leader: Arc::new(AtomicBool::new(true)),
            counters: Counters::default(),
            asked: Mutex::default(),
            alert_incidents: Mutex::default(),
            alerts_seen: Mutex::default(),
            alarms: Mutex::default(),
            verifications: Mutex::default(),
            watched: Mutex::default(),
            events,
            recent_logs: Mutex::default(),
        })
    }

    /// Keeps every alarm of the stream detector from now on (see [`Self::take_alarms`]).
    pub fn keep_alarms(&self) {
        let mut alarms = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
        alarms.get_or_insert_with(Vec::new);
    }

    /// The alarms kept so far, oldest first (empty unless [`Self::keep_alarms`]).
    pub fn take_alarms(&self) -> Vec<Alarm> {
        let mut alarms = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
        alarms.as_mut().map(std::mem::take).unwrap_or_default()
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
