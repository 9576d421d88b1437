//! What the loop reads off the engine's features besides the stream detector's scores:
//! the failure classifier's row and whether a row is worth the classifier's time.

use super::*;

/// How far off its baseline (as a share of fully off, 20 deviations) an alarm must be
/// for the failure classifier to look at it: two deviations.
const CLASSIFY_FROM: f64 = 0.1;

impl HealingLoop {
    /// The failure classifier's row from the engine's features and the log window.
    pub(super) fn failure_row(&self, row: &[f32], logs: &LogFeatures) -> [f32; 16] {
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

    /// Whether a row shows a sign of failure worth the classifier's time: an alarm at
    /// least [`CLASSIFY_FROM`] of the way to fully off its baseline (two deviations), or
    /// restarting, crashing, logging or answering errors. Everything else is healthy enough
    /// that the forest of a hundred deep trees would only confirm it — or, asked about an
    /// alarm that is a wiggle within the series' noise, name a failure that is not there
    /// (and at ten thousand rows a tick it would be most of the tick).
    pub(super) fn suspicious(
        failure_row: &[f32; 16],
        anomaly: Option<f64>,
        threshold: f64,
    ) -> bool {
        let from = threshold + (1.0 - threshold) * CLASSIFY_FROM;
        anomaly.is_some_and(|s| s >= from)
            || failure_row[8] > 0.0
            || failure_row[13] + failure_row[14] + failure_row[15] > 0.0
            || failure_row[10] > 0.1
            || failure_row[6] > 0.05
    }
}
