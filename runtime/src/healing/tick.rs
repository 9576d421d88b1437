//! The loop's data path: samples and log lines into the engine's windows (series forgotten
//! when idle), and each tick — score the workloads with new data, open incidents, act on
//! them, persist the events.

use super::*;

/// The rows of a log batch (`stream_id`, `timestamp_ns`, `line`, `level`).
pub(super) fn for_each_line(
    b: &arrow_array::RecordBatch,
    mut f: impl FnMut(u32, i64, &str, Option<&str>),
) {
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

pub(super) fn labels_of(
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

impl HealingLoop {
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

    /// One phase of a tick on the calling (blocking) thread: the engine's rows scored and
    /// assessed; returns the detections and how many rows were scored.
    pub(super) fn score_phase(&self, now_ms: i64, phase: Phase) -> (Vec<Assessed>, usize) {
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
    pub(super) async fn act_on(
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
        for item in assessed {
            let (d, _, a) = &item;
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
                .decide_and_act(&item, policy_time, started)
                .instrument(span.clone())
                .await;
            span.record("decision", event.decision.as_str());
            span.record("status", event.action_status.as_str());
            let _ = self.events.send(event.clone());
            events.push(event);
        }
    }

    /// Severity, recommendation and per-metric contributions of a detection.
    pub(super) fn assessment(&self, d: &Detection, r: &RowResult) -> Assessment {
        // Each metric's share of the detection is its stream score among all of them; the
        // value shown is its z-score against the baseline, what an operator reads first.
        let total: f64 = r
            .metrics
            .iter()
            .flatten()
            .map(|m| m.score)
            .sum::<f64>()
            .max(1e-9);
        let contributions = if r.anomaly.is_some() {
            r.metrics
                .iter()
                .enumerate()
                .filter_map(|(k, m)| {
                    let s = m.as_ref()?.score;
                    let z = d.features.get(k * PER_METRIC + 7).copied().unwrap_or(0.0);
                    Some(Contribution {
                        feature: format!("{}_zscore", self.settings.engine.metrics.get(k)?),
                        contribution: s / total,
                        value: f64::from(z),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        assess(
            r.anomaly,
            self.settings.threshold,
            r.failure.as_ref(),
            contributions,
        )
    }

    /// Detections into prediction history, one batch per tick.
    pub(super) async fn persist(&self, events: &[LoopEvent]) {
        let version = self
            .model_version()
            .unwrap_or_else(|| "warming-up".to_owned());
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

    /// Scores one tick's rows — the stream detector's scores the engine computed, and the
    /// failure classifier for rows that look wrong; fills `results` (one per row).
    pub(super) fn score(&self, input: &TickInput<'_>, results: &mut Vec<RowResult>) -> Vec<f64> {
        let rows = input.matrix.rows();
        let threshold = self.settings.threshold;
        let classifier = self.detectors.classifier();
        results.clear();
        let mut scores = Vec::with_capacity(rows);
        let mut deviations = Vec::with_capacity(rows);
        for r in 0..rows {
            if !input.warm[r] {
                results.push(RowResult::default());
                scores.push(f64::NAN);
                deviations.push(f64::NAN);
                continue;
            }
            let metrics = input.streams.get(r).cloned().unwrap_or_default();
            let row = input.matrix.row(r);
            // The detector says whether; how far the alarming metrics are from their
            // baselines says how bad. At an alarm the score is the threshold plus the
            // distance (an alarm barely off the baseline is medium and asks for nothing;
            // four deviations off is high, fifteen critical); below it, the detector's.
            self.note_alarms(input, r, &metrics, threshold);
            let a = input.anomaly(r).map(|s| {
                if s >= threshold {
                    threshold + (1.0 - threshold) * farthest(&metrics, threshold)
                } else {
                    s
                }
            });
            let frow = self.failure_row(row, &input.logs[r]);
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
            deviations.push(farthest(&metrics, f64::NEG_INFINITY));
            results.push(RowResult {
                anomaly: a,
                metrics,
                failure,
                alert: None,
            });
        }
        {
            // Entities with an action to verify: keep their newest severity, or how far off
            // their baselines they still are when that is more. The detector flags a
            // change once and then calms; a workload still far from normal is not fixed.
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            if !watched.is_empty() {
                for (r, s) in scores.iter().enumerate() {
                    if let (Some(e), false) = (input.entities.get(r), s.is_nan())
                        && let Some(slot) = watched.get_mut(*e)
                    {
                        *slot = s.max(deviations.get(r).copied().unwrap_or(0.0));
                    }
                }
            }
        }
        self.counters
            .rows_scored
            .fetch_add(rows as u64, Ordering::Relaxed);
        scores
    }

    /// Counts the stream detector's alarms in row `r` (and keeps them when asked to).
    fn note_alarms(
        &self,
        input: &TickInput<'_>,
        r: usize,
        metrics: &aegis_engine::MetricScores,
        threshold: f64,
    ) {
        for (k, m) in metrics.iter().enumerate() {
            let Some(m) = m.filter(|m| m.score >= threshold) else {
                continue;
            };
            self.counters.alarms.fetch_add(1, Ordering::Relaxed);
            let mut kept = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(kept), Some(entity), Some(metric)) = (
                kept.as_mut(),
                input.entities.get(r),
                self.settings.engine.metrics.get(k),
            ) {
                kept.push(Alarm {
                    entity: entity.to_string(),
                    metric: metric.clone(),
                    at: DateTime::from_timestamp_millis(input.last_ms.get(r).copied().unwrap_or(0))
                        .unwrap_or_default(),
                    score: (m.score * 1e3).round() / 1e3,
                    level: (m.level * 1e3).round() / 1e3,
                });
            }
        }
    }
}

/// Baseline deviations at which a workload counts as fully off its normal (1.0).
const FULL_DEVIATION: f64 = 20.0;

/// How far off its baseline the farthest metric scoring at least `min` is, in [0, 1]: its
/// distance in baseline deviations over [`FULL_DEVIATION`], capped at 1.
fn farthest(metrics: &aegis_engine::MetricScores, min: f64) -> f64 {
    metrics
        .iter()
        .flatten()
        .filter(|m| m.score >= min)
        .map(|m| (m.level.abs() / FULL_DEVIATION).min(1.0))
        .fold(0.0, f64::max)
}
