//! After an action: did it help (verification and breakers); actions handed over by other replicas.

use super::*;

/// An action whose effect is to be judged at `due_ms`.
#[derive(Debug, Clone)]
pub(super) struct PendingVerification {
    pub(super) entity: aegis_engine::Entity,
    pub(super) action_id: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) due_ms: i64,
    pub(super) score_at_action: f64,
}

/// How old a handed-over action may be when the leader reads it.
pub const HANDOFF_MAX_AGE: Duration = Duration::from_secs(120);

impl HealingLoop {
    pub(super) fn watch(&self, v: PendingVerification) {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(v.entity.clone(), f64::NAN);
        self.verifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(v);
    }

    /// What a pending verification of `entity`'s action will read as its severity now
    /// (an alert still firing, or resolved); nothing when no action of it is pending.
    pub(super) fn note_verification_score(&self, entity: &aegis_engine::Entity, score: f64) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = watched.get_mut(entity) {
            *s = score;
        }
    }

    /// Post-action verification: for each action whose delay has passed, the target's
    /// newest severity score says whether it helped (below the calm threshold: effective).
    /// Each verdict goes to the action audit chain and the target's breaker; the breaker
    /// opens after `breaker_threshold` ineffective actions in a row.
    pub(super) async fn verify_due(&self, now_ms: i64) {
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

    /// The leader executes what other replicas decided and allowed, through its guards
    /// (cooldown and blast radius see every replica's actions in the shared database).
    /// Handoffs older than [`HANDOFF_MAX_AGE`] are dropped: the situation has moved on.
    pub(super) async fn run_handoffs(&self) {
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
                .execute_internal(
                    &self.store,
                    &self.policies,
                    req,
                    ENGINE_ACTOR,
                    question,
                    None,
                )
                .await
            {
                Ok(r) => {
                    self.counters.actions.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(entity = %h.entity, status = r.status, "executed an action handed over by a replica");
                }
                Err(e) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(entity = %h.entity, reason = %e, "a handed-over action was refused by a guard");
                }
            }
        }
    }
}
