//! The loop's counters and the figures `/api/v1/metrics/stats` shows.

use super::*;

/// Counters of the loop, for `/api/v1/metrics/stats`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) ticks: AtomicU64,
    pub(super) last_tick_us: AtomicU64,
    pub(super) rows_scored: AtomicU64,
    pub(super) rows_urgent: AtomicU64,
    pub(super) detections: AtomicU64,
    pub(super) alarms: AtomicU64,
    pub(super) allowed: AtomicU64,
    pub(super) denied: AtomicU64,
    pub(super) actions: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) predictions_dropped: AtomicU64,
    pub(super) skipped_ticks: AtomicU64,
    pub(super) alert_incidents_closed: AtomicU64,
}

/// The warm-up and activity figures of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct LoopStats {
    /// `warming_up` until the first pool's forest is fitted, then `ready`.
    pub state: &'static str,
    /// Rows the pools hold for their fits (at most the rows needed for the first).
    pub warmup_rows: usize,
    /// Rows needed.
    pub warmup_rows_needed: usize,
    /// Entities held / past their warm-up.
    pub entities: usize,
    /// Entities past their own warm-up.
    pub warm_entities: usize,
    /// The stream detector's models: `stream-<fits>`, the forests fitted so far.
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
    /// Points the stream detector flagged (each workload metric's own judgement; an
    /// incident opens on those far enough off their baselines).
    pub stream_alarms: u64,
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
    /// Open incidents from Alertmanager alerts (one per workload; the last of its alerts
    /// resolving closes it).
    pub alert_incidents_open: usize,
    /// Alert incidents closed by their alerts resolving.
    pub alert_incidents_closed: u64,
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
    /// `stream-<fits>` once a pool has a model: the version detections are recorded with.
    pub fn model_version(&self) -> Option<String> {
        let (ready, _, fits) = self.engine().stream_status();
        ready.then(|| format!("stream-{fits}"))
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
        let (entities, warm, c, open, bytes, (ready, rows, _)) = {
            let e = self.engine();
            (
                e.entities(),
                e.warm_entities(now_ms),
                e.counters(),
                e.open_incidents(),
                e.memory_bytes(),
                e.stream_status(),
            )
        };
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoopStats {
            state: if ready { "ready" } else { "warming_up" },
            warmup_rows: rows.min(self.settings.warmup_rows),
            warmup_rows_needed: self.settings.warmup_rows,
            entities,
            warm_entities: warm,
            model_version: self.model_version(),
            ticks: n(&self.counters.ticks),
            last_tick_us: n(&self.counters.last_tick_us),
            rows_scored: n(&self.counters.rows_scored),
            rows_urgent: n(&self.counters.rows_urgent),
            detections: n(&self.counters.detections),
            stream_alarms: n(&self.counters.alarms),
            decisions_allowed: n(&self.counters.allowed),
            decisions_denied: n(&self.counters.denied),
            actions: n(&self.counters.actions),
            actions_refused: n(&self.counters.refused),
            leader: self.leader.load(Ordering::Relaxed),
            open_incidents: open,
            alert_incidents_open: self.open_alert_incidents(),
            alert_incidents_closed: n(&self.counters.alert_incidents_closed),
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
}
