//! One tick: score the workloads with new data, open incidents, act on them, persist the events.

use super::*;

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

    /// Severity, recommendation and per-feature contributions of a detection.
    pub(super) fn assessment(&self, d: &Detection, r: &RowResult) -> Assessment {
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

    /// Detections into prediction history, one batch per tick.
    pub(super) async fn persist(&self, events: &[LoopEvent]) {
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
}
