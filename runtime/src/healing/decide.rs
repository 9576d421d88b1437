//! A detection put to the policy engine, and when allowed, handed to the executor's guards; its decision record.

use super::*;

/// What a decision record needs from the decision path.
#[derive(Debug)]
pub(super) struct RecordDraft {
    pub(super) id: String,
    pub(super) question: PolicyRequest,
    pub(super) request: Option<ActionRequest>,
    pub(super) guards: Option<serde_json::Value>,
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl HealingLoop {
    /// Decides on one assessed detection and acts when allowed; then writes its decision
    /// record.
    pub(super) async fn decide_and_act(
        &self,
        assessed: &Assessed,
        policy_time: Option<DateTime<Utc>>,
        tick_started: Instant,
    ) -> LoopEvent {
        let (d, r, a) = assessed;
        let mut draft = None;
        let mut event = self
            .decide_and_act_inner(assessed, (policy_time, tick_started), &mut draft)
            .await;
        if let Some(draft) = draft {
            event.decision_record = Some(draft.id.clone());
            self.save_record(d, r, a, &event, draft).await;
        }
        event
    }

    /// The decision record of a remediation: evidence, decision and why not, guards,
    /// approval, request, outcome. Written after the outcome, off the path to the executor.
    pub(super) async fn save_record(
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
        let approval = (event.action_status == ActionStatus::AwaitingApproval)
            .then(|| event.action_id.clone())
            .flatten();
        let record = json!({
            "entity": event.entity,
            "incident": event.incident,
            "at": event.at,
            "evidence": {
                "alert": r.alert,
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
            outcome: event.action_status.as_str().to_owned(),
            record: record.to_string(),
        };
        if let Err(error) = self.store.insert_decision_record(&row).await {
            tracing::warn!(%error, entity = %event.entity, "writing a decision record failed");
        }
    }

    /// The decision and the action; `draft` collects what the decision record will say.
    /// `clock`: the policy's time (event time in replays) and when the tick started.
    pub(super) async fn decide_and_act_inner(
        &self,
        (d, r, a): &Assessed,
        (policy_time, tick_started): (Option<DateTime<Utc>>, Instant),
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
            decision: Verdict::NotAsked,
            policy: None,
            decision_reason: "no action recommended".to_owned(),
            why_not: Vec::new(),
            decision_record: None,
            action_status: ActionStatus::Skipped,
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
        if let Some(alert) = &r.alert {
            // Policies may match on where a detection came from and on the alert's name.
            metadata.insert("source".into(), json!("alertmanager"));
            metadata.insert("alertname".into(), alert["alertname"].clone());
        }
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

        event.decision = if decision.allowed() {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
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
            event.action_status = ActionStatus::HandedOff;
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
                Some(decision.clone()),
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
                event.action_status = ActionStatus::of_answer(r.status);
                event.action_message = r.message;
                event.action_id = Some(r.id);
            }
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                event.action_status = ActionStatus::Denied;
                event.action_message = e.to_string();
            }
        }
        event
    }

    /// The other candidate policies of a decision and why they did not decide.
    pub(super) fn why_not(
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
}
