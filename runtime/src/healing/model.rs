//! The loop's forests: the scale-free view, fitting and refitting, scoring a tick's rows.

use super::*;

/// Scale-free features per metric the forest sees: z-score against the baseline,
/// deviation of the last value from the EWMA, spread and trend relative to the mean.
pub(super) const VIEW_PER_METRIC: usize = 2;

/// The fitted forests of the loop, one per metric.
#[derive(Debug)]
pub struct LoopModel {
    pub(super) forests: Vec<IsolationForest>,
    /// Per view column, the largest magnitude in the training rows.
    pub(super) reach: Vec<f32>,
    /// The anomaly threshold in force: the configured one, or above it the highest training
    /// score plus a margin — a workload's normal tails must not page.
    pub threshold: f64,
    /// `engine-iforest-<unix>-<rows>`.
    pub version: String,
    /// Rows it was fitted on.
    pub rows: usize,
}

impl LoopModel {
    /// Per row, each metric's anomaly score.
    ///
    /// A forest cannot tell "just past the largest value it was trained on" from "far past
    /// it": both land in the same edge leaf. So beyond the training range the score rises
    /// with the distance, `s + (1 − s)(1 − e^−r)`, `r` the excess over the largest
    /// training magnitude in units of that magnitude (at least 1 for z-scores, 0.1 for
    /// relative deviations). Inside the range the forest's score stands.
    pub(super) fn score(&self, view: &Matrix) -> Option<Vec<Vec<f64>>> {
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
pub(super) fn columns(view: &Matrix, k: usize) -> Matrix {
    let mut data = Vec::with_capacity(view.rows() * VIEW_PER_METRIC);
    for r in 0..view.rows() {
        let row = view.row(r);
        data.extend_from_slice(&row[k * VIEW_PER_METRIC..(k + 1) * VIEW_PER_METRIC]);
    }
    Matrix::new(data, VIEW_PER_METRIC).unwrap_or_else(|_| Matrix::empty(VIEW_PER_METRIC))
}

impl HealingLoop {
    /// The scale-free view the forest scores: per metric, z-score, deviation of the last
    /// value from the EWMA, spread and trend relative to the mean, each clipped.
    pub(super) fn view(&self, m: &Matrix) -> Matrix {
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

    /// Whether a row shows a sign of failure worth the classifier's time: anomalous, or
    /// restarting, crashing, logging or answering errors. Everything else is healthy enough
    /// that the forest of a hundred deep trees would only confirm it (and at ten thousand
    /// rows a tick it would be most of the tick).
    pub(super) fn suspicious(
        failure_row: &[f32; 16],
        anomaly: Option<f64>,
        threshold: f64,
    ) -> bool {
        anomaly.is_some_and(|s| s >= threshold)
            || failure_row[8] > 0.0
            || failure_row[13] + failure_row[14] + failure_row[15] > 0.0
            || failure_row[10] > 0.1
            || failure_row[6] > 0.05
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
}
