//! `aegis replay`: recorded telemetry through the real pipeline — windows, detectors,
//! incidents, policy engine, executor guards (dry-run) and both audit trails — in event
//! time, so a recorded incident can be judged (and the golden scenarios checked) before
//! anything acts on a cluster. `aegis demo` replays generated telemetry through it.
//!
//! Input: JSON Lines (optionally gzip-compressed, `.gz`), one sample (`{"at", "labels", "value"}`) or log line
//! (`{"at", "labels", "line", "level"?}`) per line, `at` in RFC 3339 or epoch
//! milliseconds; an optional first line `{"settings": {...}}` sets the engine (the
//! `engine_*` configuration keys and `anomaly_threshold`).
//!
//! Long because a replay drives the whole real pipeline in event time and reports it; the
//! reading, the clock and the report belong together.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use aegis_runtime::PolicyService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings};
use aegis_runtime::healing::{HealingLoop, HealingSettings, LoopEvent, LoopStats};
use aegis_runtime::ratelimit::{Limiter, Limits};
use aegis_store::{
    ActionAuditQuery, AuditWriterOptions, ExecutorStore, PolicyAuditQuery, PolicyAuditWriter,
    PolicyStore, Store, StoreOptions,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One recorded sample or log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Event time, epoch milliseconds.
    #[serde(with = "time_ms")]
    pub at: i64,
    /// The series' or stream's labels.
    pub labels: BTreeMap<String, String>,
    /// A sample's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// A log line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// The line's level, when the source had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// RFC 3339 on the way out; RFC 3339 or epoch milliseconds on the way in.
mod time_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        match chrono::DateTime::from_timestamp_millis(*ms) {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            None => s.serialize_i64(*ms),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Ms(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Ms(ms) => Ok(ms),
            Either::Text(t) => chrono::DateTime::parse_from_rfc3339(&t)
                .map(|t| t.timestamp_millis())
                .map_err(|e| serde::de::Error::custom(format!("`{t}`: {e}"))),
        }
    }
}

/// Engine settings of a replay (a subset of the configuration keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySettings {
    /// Event-time milliseconds between ticks.
    pub engine_tick_ms: i64,
    /// Slot width of the short windows.
    pub engine_resolution_secs: i64,
    /// Span of the short windows.
    pub engine_window_secs: i64,
    /// Span of the baselines.
    pub engine_baseline_secs: i64,
    /// Data a workload needs before it is scored.
    pub engine_warmup_secs: i64,
    /// Rows before the first anomaly model.
    pub engine_warmup_rows: usize,
    /// Calm ticks that close an incident.
    pub engine_calm_ticks: u32,
    /// Anomaly threshold.
    pub anomaly_threshold: f64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            engine_tick_ms: 15_000,
            engine_resolution_secs: 15,
            engine_window_secs: 300,
            engine_baseline_secs: 3_600,
            engine_warmup_secs: 1_800,
            engine_warmup_rows: aegis_engine::StreamConfig::default().warmup_points,
            engine_calm_ticks: 20,
            anomaly_threshold: aegis_engine::StreamConfig::default().threshold,
        }
    }
}

impl ReplaySettings {
    fn healing(&self) -> HealingSettings {
        let defaults = HealingSettings::default();
        let res = self.engine_resolution_secs.max(1) * 1_000;
        let baseline = self.engine_baseline_secs.max(1) * 1_000;
        HealingSettings {
            engine: aegis_engine::EngineConfig {
                window_ms: self.engine_window_secs.max(1) * 1_000,
                resolution_ms: res,
                baseline_ms: baseline,
                baseline_resolution_ms: res.max(baseline / 60),
                warmup_ms: self.engine_warmup_secs * 1_000,
                idle_ms: baseline,
                hysteresis: aegis_engine::Hysteresis {
                    calm_ticks: self.engine_calm_ticks,
                    ..defaults.engine.hysteresis
                },
                ..defaults.engine.clone()
            },
            warmup_rows: self.engine_warmup_rows,
            threshold: self.anomaly_threshold,
            ..defaults
        }
    }
}

/// Recorded telemetry with its settings.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// Engine settings.
    pub settings: ReplaySettings,
    /// Samples and lines, in any order (replayed in time order).
    pub items: Vec<Item>,
}

#[derive(Deserialize)]
struct Header {
    settings: ReplaySettings,
}

impl Telemetry {
    /// Reads the JSON Lines format of the module documentation.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut t = Telemetry::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if t.items.is_empty()
                && line.starts_with("{\"settings\"")
                && let Ok(h) = serde_json::from_str::<Header>(line)
            {
                t.settings = h.settings;
                continue;
            }
            let item: Item =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            if item.value.is_some() == item.line.is_some() {
                return Err(format!(
                    "line {}: give exactly one of `value` and `line`",
                    n + 1
                ));
            }
            t.items.push(item);
        }
        Ok(t)
    }

    /// The JSON Lines text (settings first).
    pub fn to_jsonl(&self) -> String {
        let mut out = serde_json::json!({"settings": self.settings}).to_string();
        out.push('\n');
        for item in &self.items {
            out.push_str(&serde_json::to_string(item).unwrap_or_default());
            out.push('\n');
        }
        out
    }
}

/// A decision of the loop as the policy audit recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// The action asked about.
    pub action: String,
    /// `cluster:NAMESPACE/deployment/NAME`.
    pub resource: String,
    /// `ALLOW` or `DENY` (as stored).
    pub decision: String,
    /// The deciding policy.
    pub policy: Option<String>,
}

/// An action audit row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRow {
    /// `intent` or `result`.
    pub phase: String,
    /// The action.
    pub action: String,
    /// Namespace.
    pub namespace: String,
    /// Target.
    pub target: String,
    /// Status.
    pub status: String,
    /// What happened or why not.
    pub reason: String,
}

/// What a replay produced.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// One per incident.
    pub events: Vec<LoopEvent>,
    /// Every point the stream detector flagged, incident or not.
    pub alarms: Vec<aegis_runtime::healing::Alarm>,
    /// The loop's decisions in the policy audit, oldest first.
    pub decisions: Vec<DecisionRow>,
    /// The action audit, oldest first.
    pub actions: Vec<ActionRow>,
    /// The loop's figures at the end.
    pub stats: LoopStats,
    /// Both audit chains verified intact.
    pub audit_intact: bool,
    /// Actions held for approval, as they ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRow>,
    /// Gaps in event time longer than the baseline, each with the series on either side.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An action held for approval, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRow {
    /// `namespace/kind/name`.
    pub entity: String,
    /// The action.
    pub action: String,
    /// The policy that asked for approval.
    pub policy: Option<String>,
    /// What the dry-run said the action would do.
    pub dry_run: String,
    /// `approved`, `rejected`, `expired` or `pending`.
    pub status: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// The executor's status for the approved action.
    pub action_status: Option<String>,
}

/// What a replay adds to the default policies and does after the telemetry.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Policies loaded beside the defaults (as if from the policy folder).
    pub extra_policies: Vec<aegis_policy::Policy>,
    /// Approve every action held for approval at the end, as this operator.
    pub approve_as: Option<String>,
}

/// Replays `telemetry`; the database lives in a temporary folder and is gone afterwards.
pub async fn replay(telemetry: &Telemetry) -> anyhow::Result<ReplayReport> {
    replay_with(telemetry, &ReplayOptions::default()).await
}

/// Like [`replay`] with `options`.
pub async fn replay_with(
    telemetry: &Telemetry,
    options: &ReplayOptions,
) -> anyhow::Result<ReplayReport> {
    let dir = tempfile::tempdir().context("a temporary folder for the replay's database")?;
    let url = format!("sqlite://{}", dir.path().join("replay.db").display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .context("the replay's database")?;
    let writer = PolicyAuditWriter::spawn(store.clone(), AuditWriterOptions::default());
    let policies = Arc::new(PolicyService::new(store.clone()).with_audit(writer.sender()));
    policies
        .install_defaults_if_new()
        .await
        .map_err(|e| anyhow::anyhow!("default policies: {e}"))?;
    policies
        .reload_database()
        .await
        .map_err(|e| anyhow::anyhow!("loading policies: {e}"))?;
    if !options.extra_policies.is_empty() {
        policies
            .engine()
            .set_file_policies(options.extra_policies.clone())
            .map_err(|e| anyhow::anyhow!("extra policies: {e}"))?;
    }
    let settings = &telemetry.settings;
    let detectors = aegis_runtime::detector_service::DetectorService::start(
        store.clone(),
        aegis_runtime::detector_service::BATCH_THRESHOLD,
    )
    .await
    .map_err(|e| anyhow::anyhow!("detectors: {e}"))?;
    let executor = Arc::new(ExecutorService::new(
        aegis_executor::Executor::DryRun,
        ExecutorSettings {
            require_signature: false,
            ..ExecutorSettings::default()
        },
        Limiter::in_memory(Limits::default()),
    ));
    let healing = HealingLoop::new(
        settings.healing(),
        detectors,
        Arc::clone(&policies),
        Arc::clone(&executor),
        store.clone(),
    );
    healing.keep_alarms();

    let mut items: Vec<&Item> = telemetry.items.iter().collect();
    items.sort_by_key(|i| i.at);
    let mut streams: BTreeMap<&BTreeMap<String, String>, u32> = BTreeMap::new();
    let tick = settings.engine_tick_ms.max(1);
    // Past this much event time without data, a tick changes nothing (every entity is
    // evicted, every incident calm, every verification due): the replay jumps to the tick
    // of the next sample, so its run time follows the samples, not the span.
    let healing_settings = settings.healing();
    let settle_ms = healing_settings
        .engine
        .idle_ms
        .max(healing_settings.engine.baseline_ms)
        .max(i64::try_from(healing_settings.verify_after.as_millis()).unwrap_or(i64::MAX))
        .saturating_add(tick.saturating_mul(i64::from(settings.engine_calm_ticks) + 2));
    let gap_warn_ms = settings.engine_baseline_secs.max(1) * 1_000;
    let mut warnings = Vec::new();
    let mut progress = Progress::new(items.len());
    let mut events = Vec::new();
    let mut next_tick = items
        .first()
        .map_or(0, |i| i.at - i.at.rem_euclid(tick) + tick);
    let mut last_at: Option<&Item> = None;
    for (n, item) in items.iter().enumerate() {
        if let Some(prev) = last_at
            && item.at - prev.at > gap_warn_ms
        {
            warnings.push(format!(
                "no telemetry for {} of event time, more than engine_baseline_secs ({} s): {} {} is the last before the gap, {} {} the first after it",
                human_span(item.at - prev.at),
                settings.engine_baseline_secs,
                rfc3339(prev.at),
                series_name(&prev.labels),
                rfc3339(item.at),
                series_name(&item.labels),
            ));
        }
        let data_until = last_at.map_or(item.at, |p| p.at);
        last_at = Some(item);
        progress.update(n, item.at);
        while item.at >= next_tick {
            events.extend(
                healing
                    .tick_at(next_tick, DateTime::from_timestamp_millis(next_tick))
                    .await,
            );
            next_tick += tick;
            if next_tick.saturating_sub(data_until) > settle_ms {
                // Aligned at or before the sample, as the tick it falls in.
                next_tick = next_tick.max(item.at - item.at.rem_euclid(tick));
            }
        }
        let labels: Vec<(String, String)> = item
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match (&item.value, &item.line) {
            (Some(v), _) => {
                healing.ingest_sample(&labels, item.at, *v);
            }
            (None, Some(line)) => {
                let n = streams.len() as u32;
                let id = *streams.entry(&item.labels).or_insert(n);
                healing.ingest_log(id, &labels, item.at, line, item.level.as_deref());
            }
            (None, None) => {}
        }
    }
    events.extend(
        healing
            .tick_at(next_tick, DateTime::from_timestamp_millis(next_tick))
            .await,
    );
    progress.finish();
    let stats = healing.stats(next_tick);
    let alarms = healing.take_alarms();
    drop(healing);
    let mut approvals = Vec::new();
    for a in store.list_approvals(None, 1_000).await? {
        let mut action_status = None;
        let mut a = a;
        if let (Some(by), "pending") = (&options.approve_as, a.status.as_str()) {
            let (decided, response) = executor
                .decide_approval(
                    &store,
                    &policies,
                    &a.id,
                    true,
                    by,
                    Some("approved in the demo"),
                )
                .await
                .map_err(|e| anyhow::anyhow!("approving {}: {e}", a.id))?;
            action_status = response.map(|r| r.status.to_owned());
            a = decided;
        }
        let dry_run = serde_json::from_str::<serde_json::Value>(&a.dry_run)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        approvals.push(ApprovalRow {
            entity: a.entity,
            action: a.action,
            policy: a.policy,
            dry_run,
            status: a.status,
            decided_by: a.decided_by,
            action_status,
        });
    }
    approvals.reverse();
    drop(policies);
    writer.shutdown(std::time::Duration::from_secs(10)).await;

    let mut decisions: Vec<DecisionRow> = store
        .list_policy_audit(&PolicyAuditQuery {
            limit: 10_000,
            ..PolicyAuditQuery::default()
        })
        .await?
        .into_iter()
        .filter(|r| r.user_id.as_deref() == Some(aegis_runtime::healing::ENGINE_ACTOR))
        .map(|r| DecisionRow {
            action: r.action,
            resource: r.resource,
            decision: r.decision,
            policy: r.policy_name,
        })
        .collect();
    decisions.reverse();
    let mut actions: Vec<ActionRow> = store
        .list_action_audit(&ActionAuditQuery {
            limit: 10_000,
            ..ActionAuditQuery::default()
        })
        .await?
        .into_iter()
        .map(|r| ActionRow {
            phase: r.phase,
            action: r.action,
            namespace: r.namespace,
            target: r.target,
            status: r.status,
            reason: r.reason.unwrap_or_default(),
        })
        .collect();
    actions.reverse();
    let audit_intact = {
        use aegis_store::{AuditLog, AuditTable};
        let p = store.verify_audit(AuditTable::Policy).await?;
        let a = store.verify_audit(AuditTable::Action).await?;
        p.broken.is_none() && a.broken.is_none()
    };
    store.close().await;
    Ok(ReplayReport {
        events,
        alarms,
        decisions,
        actions,
        stats,
        audit_intact,
        approvals,
        warnings,
    })
}

/// A series or stream as `{name="value", ...}` (for warnings).
pub fn series_name(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// A span of milliseconds for people: `3.2 years`, `5.0 days`, `2.5 h`, `90 s`.
fn human_span(ms: i64) -> String {
    let secs = ms as f64 / 1_000.0;
    if secs >= 365.0 * 86_400.0 {
        format!("{:.1} years", secs / (365.25 * 86_400.0))
    } else if secs >= 2.0 * 86_400.0 {
        format!("{:.1} days", secs / 86_400.0)
    } else if secs >= 3_600.0 {
        format!("{:.1} h", secs / 3_600.0)
    } else {
        format!("{secs:.0} s")
    }
}

/// Progress on a terminal (standard error) for runs longer than a few seconds: how many
/// samples are done and the event time reached, once a second; nothing when piped.
pub struct Progress {
    total: usize,
    started: std::time::Instant,
    last: std::time::Instant,
    shown: bool,
    on: bool,
}

impl Progress {
    /// Progress over `total` items.
    pub fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        let now = std::time::Instant::now();
        Self {
            total,
            started: now,
            last: now,
            shown: false,
            on: std::io::stderr().is_terminal(),
        }
    }

    /// `done` items processed, up to event time `at_ms`.
    pub fn update(&mut self, done: usize, at_ms: i64) {
        if !self.on
            || self.started.elapsed() < std::time::Duration::from_secs(3)
            || self.last.elapsed() < std::time::Duration::from_secs(1)
        {
            return;
        }
        self.last = std::time::Instant::now();
        self.shown = true;
        let pct = done as f64 * 100.0 / self.total.max(1) as f64;
        eprint!(
            "\rreplay: {done}/{} ({pct:.0} %), event time {}   ",
            self.total,
            rfc3339(at_ms)
        );
    }

    /// Ends the progress line.
    pub fn finish(&self) {
        if self.shown {
            eprintln!(
                "\rreplay: {} items in {:.1} s{}",
                self.total,
                self.started.elapsed().as_secs_f64(),
                " ".repeat(30)
            );
        }
    }
}

/// The first item more than `max_span_ms` after the earliest one, if the input spans more.
pub fn beyond_span(items: &[Item], max_span_ms: i64) -> Option<(&Item, i64)> {
    let first = items.iter().map(|i| i.at).min()?;
    let limit = first.saturating_add(max_span_ms);
    items
        .iter()
        .filter(|i| i.at > limit)
        .min_by_key(|i| i.at)
        .map(|i| (i, first))
}

/// Longest event-time span `aegis replay` takes by default (a year).
pub const DEFAULT_MAX_SPAN_DAYS: u32 = 365;

/// `aegis replay --input FILE --output FILE [--max-span-days N]`.
pub async fn run(
    input: &Path,
    output: &Path,
    max_span_days: u32,
) -> anyhow::Result<std::process::ExitCode> {
    let text = read_text(input)?;
    let telemetry =
        Telemetry::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    let max_span_ms = i64::from(max_span_days) * 86_400_000;
    if let Some((item, first)) = beyond_span(&telemetry.items, max_span_ms) {
        eprintln!(
            "error: {} spans more than --max-span-days {max_span_days}: the first sample beyond it is {} at {} ({} after the earliest, {}); a clock or an export is likely off (raise --max-span-days if the span is real)",
            input.display(),
            series_name(&item.labels),
            rfc3339(item.at),
            human_span(item.at - first),
            rfc3339(first),
        );
        return Ok(std::process::ExitCode::from(2));
    }
    let report = replay(&telemetry).await?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let mut value = serde_json::json!({
        "events": report.events,
        "alarms": report.alarms,
        "decisions": report.decisions,
        "actions": report.actions,
        "audit_intact": report.audit_intact,
    });
    if !report.warnings.is_empty() {
        value["warnings"] = serde_json::json!(report.warnings);
    }
    let json = serde_json::to_string_pretty(&value)?;
    if output == Path::new("-") {
        println!("{json}");
    } else {
        std::fs::write(output, json + "\n").with_context(|| output.display().to_string())?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A file's text; `.gz` files are inflated.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .with_context(|| format!("{}: not gzip-compressed UTF-8", path.display()))?;
        Ok(text)
    } else {
        String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8", path.display()))
    }
}

/// The time of `ms` as RFC 3339 (for reports).
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}
