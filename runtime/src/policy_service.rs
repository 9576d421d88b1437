//! [`PolicyService`]: the policy engine wired to its sources (database, policy folder) and to
//! the decision audit. Handlers and `aegis serve` share one.
//!
//! Long because the three sources (database, folder, shadow set) share one state and one
//! reload discipline, and the decision audit is written from the same place.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_policy::{Decision, Origin, Policy, PolicyEngine, PolicySpec, Request};
use aegis_store::{
    AuditLog, NewPolicyAudit, PolicyAuditQuery, PolicyAuditSender, PolicyStore, PolicyWrite, Store,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How often the policy folder and the database are checked for policy changes.
pub const POLICY_DIR_POLL: Duration = Duration::from_secs(2);

/// The audit actions that record the emergency stop being switched.
const STOP_ACTION: &str = "emergency_stop";
const RESUME_ACTION: &str = "emergency_resume";

/// What `/health` shows about policies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyHealth {
    /// `ok`, or `degraded` when a source failed to load (the previous snapshot stays).
    pub status: &'static str,
    /// Enabled policies in force.
    pub policies: usize,
    /// The snapshot's generation.
    pub generation: u64,
    /// Whether the emergency stop is on.
    pub emergency_stop: bool,
    /// The policy folder, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<String>,
    /// Why the last load of the folder failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_error: Option<String>,
    /// Why the last load from the database failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_error: Option<String>,
    /// The shadow policy folder and how many policies it holds, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowHealth>,
    /// The decision audit writer: `stalled` while decisions cannot be written (every
    /// evaluate then waits and answers 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_writer: Option<aegis_store::AuditWriterHealth>,
}

/// What `/health` shows about the shadow policy set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowHealth {
    /// The folder.
    pub dir: String,
    /// Policies loaded from it.
    pub policies: usize,
    /// Why its last load failed (the previous shadow set stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct SourceState {
    shadow_fingerprint: Option<u64>,
    shadow_error: Option<String>,
    file_fingerprint: Option<u64>,
    database_fingerprint: Option<(i64, i64)>,
    file_error: Option<String>,
    database_error: Option<String>,
    stopped_since: Option<DateTime<Utc>>,
}

/// Longest a caller waits for its decision's audit row to commit before a 503.
pub const DECISION_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The policy engine and what feeds it.
#[derive(Debug)]
pub struct PolicyService {
    engine: PolicyEngine,
    store: Store,
    audit: Option<PolicyAuditSender>,
    policy_dir: Option<PathBuf>,
    /// A candidate set evaluated beside the live one on every recorded decision; its
    /// answers are recorded, never acted on.
    shadow: Option<(PathBuf, PolicyEngine)>,
    state: Mutex<SourceState>,
}

/// Turns a stored policy into an engine policy.
pub fn to_policy(record: &aegis_store::PolicyRecord) -> Result<Policy, crate::Error> {
    let spec = PolicySpec::from_json(record.body.clone()).map_err(|e| {
        crate::Error::Policy(format!(
            "stored policy `{}` ({}) is invalid: {e}",
            record.name, record.id
        ))
    })?;
    Ok(Policy {
        id: record.id.clone(),
        spec,
        origin: Origin::Database {
            version: record.version,
        },
    })
}

/// The columns a policy write denormalises from the document.
pub fn to_write(spec: &PolicySpec) -> PolicyWrite {
    PolicyWrite {
        name: spec.name.clone(),
        policy_type: spec.policy_type.as_str().to_owned(),
        effect: spec.effect.as_str().to_owned(),
        priority: spec.priority,
        enabled: spec.enabled,
        body: serde_json::to_value(spec).unwrap_or(serde_json::Value::Null),
    }
}

impl PolicyService {
    /// A service over `store` with no policies loaded, no folder and no decision audit.
    pub fn new(store: Store) -> Self {
        Self {
            engine: PolicyEngine::new(),
            store,
            audit: None,
            policy_dir: None,
            shadow: None,
            state: Mutex::new(SourceState::default()),
        }
    }

    /// Records every decision through `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: PolicyAuditSender) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Loads policies from `dir` too (and reloads them when the files change).
    #[must_use]
    pub fn with_policy_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.policy_dir = dir;
        self
    }

    /// Evaluates the policies of `dir` in shadow beside the live set (see
    /// [`record`](Self::record)); call [`reload_shadow`](Self::reload_shadow) to load them.
    #[must_use]
    pub fn with_shadow_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.shadow = dir.map(|d| (d, PolicyEngine::new()));
        self
    }

    /// Reloads the shadow folder when it changed (or when `force`); a folder that fails to
    /// load leaves the previous shadow set. Returns whether it reloaded.
    pub fn reload_shadow(&self, force: bool) -> Result<bool, crate::Error> {
        let Some((dir, engine)) = &self.shadow else {
            return Ok(false);
        };
        let fingerprint = fingerprint(dir);
        if !force && self.state().shadow_fingerprint == Some(fingerprint) {
            return Ok(false);
        }
        let result = match aegis_policy::load_policies(dir) {
            Ok(set) => engine
                .set_file_policies(set.policies)
                .map(|_| ())
                .map_err(|e| crate::Error::Policy(format!("{}: {e}", dir.display()))),
            Err(errors) => Err(crate::Error::Policy(joined(&errors))),
        };
        let mut state = self.state();
        state.shadow_fingerprint = Some(fingerprint);
        state.shadow_error = result.as_ref().err().map(ToString::to_string);
        match result {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), policies = engine.snapshot().len(), "loaded the shadow policy set");
                Ok(true)
            }
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "the shadow policy folder does not load; the previous shadow set stays");
                Err(error)
            }
        }
    }

    /// The engine.
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On a database that never held a policy, installs the default policies.
    pub async fn install_defaults_if_new(&self) -> Result<usize, crate::Error> {
        let ever = self.store.policies_ever_created().await?;
        if ever > 0 {
            return Ok(0);
        }
        let specs =
            aegis_policy::default_policies().map_err(|d| crate::Error::Policy(d.to_string()))?;
        for spec in &specs {
            self.store
                .create_policy(&to_write(spec), "default", Some("aegis"))
                .await
                .map_err(|e| crate::Error::Policy(e.to_string()))?;
        }
        tracing::info!(policies = specs.len(), "installed the default policies");
        Ok(specs.len())
    }

    /// Reloads the database's policies into the engine. On error the snapshot in force stays.
    pub async fn reload_database(&self) -> Result<(), crate::Error> {
        let result = async {
            let fingerprint = self.store.policies_fingerprint().await?;
            let records = self.store.list_policies().await?;
            let policies = records
                .iter()
                .map(to_policy)
                .collect::<Result<Vec<_>, _>>()?;
            self.engine
                .set_database_policies(policies)
                .map_err(|e| crate::Error::Policy(e.to_string()))?;
            self.state().database_fingerprint = Some(fingerprint);
            Ok::<_, crate::Error>(())
        }
        .await;
        if let Err(error) = &result {
            tracing::error!(%error, "loading policies from the database failed; the previous policies stay in force");
        }
        self.state().database_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    /// Reloads the policy folder when its files changed (or when `force`). A folder that fails
    /// to load leaves the previous file policies in force. Returns whether it reloaded.
    pub fn reload_files(&self, force: bool) -> Result<bool, crate::Error> {
        let Some(dir) = &self.policy_dir else {
            return Ok(false);
        };
        let fingerprint = fingerprint(dir);
        if !force && self.state().file_fingerprint == Some(fingerprint) {
            return Ok(false);
        }
        let result = match aegis_policy::load_policies(dir) {
            Ok(set) => {
                for warning in &set.warnings {
                    tracing::warn!(%warning, "policy check");
                }
                let count = set.policies.len();
                let (mut all, _) = self.engine.sources();
                all.extend(set.policies.iter().cloned());
                match self.prove_invariants(&all) {
                    Ok(()) => self
                        .engine
                        .set_file_policies(set.policies)
                        .map(|_| count)
                        .map_err(|e| crate::Error::Policy(format!("{}: {e}", dir.display()))),
                    Err(e) => Err(crate::Error::Policy(format!("{}: {e}", dir.display()))),
                }
            }
            Err(errors) => Err(crate::Error::Policy(joined(&errors))),
        };
        let mut state = self.state();
        state.file_fingerprint = Some(fingerprint);
        match result {
            Ok(count) => {
                tracing::info!(dir = %dir.display(), policies = count, "loaded the policy folder");
                state.file_error = None;
                Ok(true)
            }
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "the policy folder does not load; the previous policies stay in force");
                state.file_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Proves the policy folder's guard-rail invariants (`*_invariants.yaml`) over the
    /// policies in force with `change` applied to the database's; the error names the
    /// invariant, the policy and a request that gets through. Without a policy folder
    /// there is nothing to prove.
    pub fn check_invariants(
        &self,
        change: impl FnOnce(&mut Vec<aegis_policy::Policy>),
    ) -> Result<(), crate::Error> {
        let (mut database, files) = self.engine.sources();
        change(&mut database);
        database.extend(files);
        self.prove_invariants(&database)
    }

    fn prove_invariants(&self, policies: &[aegis_policy::Policy]) -> Result<(), crate::Error> {
        use aegis_policy::invariants::{Verdict, prove};
        let Some(dir) = &self.policy_dir else {
            return Ok(());
        };
        // Invariants that do not read refuse every change: fail closed.
        let invariants = aegis_policy::files::load_invariants(dir)
            .map_err(|errors| crate::Error::Policy(joined(&errors)))?;
        for (_, inv) in &invariants {
            match prove(inv, policies) {
                Verdict::Holds => {}
                Verdict::Broken {
                    name, request, at, ..
                } => {
                    return Err(crate::Error::Policy(format!(
                        "invariant `{}` would be broken by policy `{name}`: it would allow {} at {}",
                        inv.name,
                        serde_json::to_string(&request).unwrap_or_default(),
                        at.to_rfc3339()
                    )));
                }
                Verdict::Undecided { policy, reason } => {
                    return Err(crate::Error::Policy(format!(
                        "invariant `{}` cannot be proved for policy {policy}: {reason}",
                        inv.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reloads the database's policies when another replica changed them.
    pub async fn reload_database_if_changed(&self) -> Result<bool, crate::Error> {
        let now = self.store.policies_fingerprint().await?;
        if self.state().database_fingerprint == Some(now) {
            return Ok(false);
        }
        self.reload_database().await.map(|()| true)
    }

    /// Until `stop` resolves, polls the policy folder and the database for changes made
    /// elsewhere (a `git pull`, another replica's API call).
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(POLICY_DIR_POLL) => {}
            }
            if self.policy_dir.is_some() {
                let service = Arc::clone(&self);
                // Reading files is blocking I/O: keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || service.reload_files(false)).await;
            }
            if self.shadow.is_some() {
                let service = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || service.reload_shadow(false)).await;
            }
            if let Err(error) = self.reload_database_if_changed().await {
                tracing::warn!(%error, "checking the database for policy changes failed");
            }
        }
    }

    /// Restores the emergency stop as the audit trail last recorded it (it survives restarts).
    pub async fn restore_emergency_stop(&self) -> Result<(), crate::Error> {
        let mut latest = None;
        for action in [STOP_ACTION, RESUME_ACTION] {
            let rows = self
                .store
                .list_policy_audit(&PolicyAuditQuery {
                    action: Some(action.to_owned()),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| crate::Error::Policy(e.to_string()))?;
            if let Some(row) = rows.into_iter().next()
                && latest.as_ref().is_none_or(|(id, _, _)| row.id > *id)
            {
                latest = Some((row.id, action, row.created_at));
            }
        }
        if let Some((_, STOP_ACTION, since)) = latest {
            self.engine.emergency_stop();
            self.state().stopped_since = Some(since);
            tracing::warn!(since = %since, "the emergency stop is on (restored from the audit trail)");
        }
        Ok(())
    }

    /// Switches the emergency stop and records who did it, and why, in the audit trail.
    pub async fn set_emergency_stop(
        &self,
        on: bool,
        user_id: Option<String>,
        reason: Option<String>,
        request_id: Option<String>,
    ) -> Result<Option<DateTime<Utc>>, aegis_store::Error> {
        let now = Utc::now();
        let entry = NewPolicyAudit {
            created_at: Some(now),
            request_id,
            policy_type: "self_healing".into(),
            action: if on { STOP_ACTION } else { RESUME_ACTION }.into(),
            resource: "*".into(),
            user_id: user_id.clone(),
            role: None,
            decision: if on { "DENY" } else { "ALLOW" }.into(),
            policy_id: None,
            policy_name: None,
            reason: format!(
                "emergency stop {} by {}{}",
                if on { "activated" } else { "released" },
                user_id.as_deref().unwrap_or("an operator"),
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            context: serde_json::json!({}),
            evaluated_in_us: 0,
        };
        // Written directly, not queued: the switch must be on record before it answers.
        self.store.append_policy_audit(&[entry]).await?;
        if on {
            self.engine.emergency_stop();
            self.state().stopped_since.get_or_insert(now);
        } else {
            self.engine.resume();
            self.state().stopped_since = None;
        }
        Ok(self.state().stopped_since)
    }

    /// Since when the emergency stop is on, if it is.
    pub fn stopped_since(&self) -> Option<DateTime<Utc>> {
        if self.engine.is_stopped() {
            self.state().stopped_since
        } else {
            None
        }
    }

    /// Evaluates `req` against the shadow set (at the request's time, or now) and records
    /// both answers — in the background: the shadow never delays or changes the live
    /// decision.
    fn record_shadow(&self, req: &Request, live: &Decision) {
        let Some((_, engine)) = &self.shadow else {
            return;
        };
        let at = req.context.time.unwrap_or_else(Utc::now);
        let shadow = engine.evaluate_at(req, at);
        let row = aegis_store::NewShadowDecision {
            id: 0,
            created_at: Utc::now(),
            policy_type: req.policy_type.as_str().to_owned(),
            action: req.action.clone(),
            resource: req.resource.clone(),
            user_id: req.context.user_id.clone(),
            live_decision: live.decision().to_owned(),
            live_policy: live.policy().map(|p| p.name.clone()),
            shadow_decision: shadow.decision().to_owned(),
            shadow_policy: shadow.policy().map(|p| p.name.clone()),
            differs: live.decision() != shadow.decision(),
            context: serde_json::json!({"metadata": req.context.metadata, "time": req.context.time,
                "roles": req.context.roles, "role": req.context.role})
            .to_string(),
        };
        if row.differs {
            tracing::info!(action = %row.action, resource = %row.resource, live = %row.live_decision,
                shadow = %row.shadow_decision, "the shadow policy set decides differently");
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_shadow(&row).await {
                tracing::warn!(%error, "recording a shadow decision failed");
            }
        });
    }

    /// Writes `decision` to the audit trail and returns once it is committed, so a decision
    /// answered to a caller (or that lets a change through) survives a crash. When the commit
    /// does not come within [`DECISION_COMMIT_WAIT`] (the database is down), a 503: the
    /// decision stays queued and lands when the database is back, but it is not
    /// acknowledged, and the caller retries.
    pub async fn record(
        &self,
        req: &Request,
        decision: &Decision,
        request_id: Option<String>,
        asked_by: Option<Asker<'_>>,
    ) -> Result<(), crate::Refusal> {
        self.write_record(req, decision, request_id, asked_by, true)
            .await
    }

    /// Queues `decision` for the audit trail without waiting for the commit (the engine's
    /// decisions: nobody waits on them, and the action each allows has its own committed
    /// intent row first).
    pub async fn record_queued(
        &self,
        req: &Request,
        decision: &Decision,
        request_id: Option<String>,
        asked_by: Option<Asker<'_>>,
    ) {
        // Not waiting, it cannot time out; a closed writer is logged inside.
        let _ = self
            .write_record(req, decision, request_id, asked_by, false)
            .await;
    }

    async fn write_record(
        &self,
        req: &Request,
        decision: &Decision,
        request_id: Option<String>,
        asked_by: Option<Asker<'_>>,
        durable: bool,
    ) -> Result<(), crate::Refusal> {
        self.record_shadow(req, decision);
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        // The request's context names whom the question is about (the subject); the actor
        // on record is whoever asked, as authenticated — a caller cannot put someone
        // else's name or role on the audit trail. Internal deciders without a caller (none
        // today) keep the subject.
        let subject_role = req
            .context
            .role
            .clone()
            .or_else(|| (!req.context.roles.is_empty()).then(|| req.context.roles.join(",")));
        let (user_id, role) = match &asked_by {
            Some(a) => (Some(a.id.to_owned()), a.role.clone()),
            None => (req.context.user_id.clone(), subject_role.clone()),
        };
        let matching: Vec<&str> = decision.matching().map(|p| p.id.as_str()).collect();
        let entry = NewPolicyAudit {
            created_at: None,
            request_id,
            policy_type: req.policy_type.as_str().to_owned(),
            action: req.action.clone(),
            resource: req.resource.clone(),
            user_id,
            role,
            decision: decision.decision().to_owned(),
            policy_id: decision.policy().map(|p| p.id.clone()),
            policy_name: decision.policy().map(|p| p.name.clone()),
            reason: decision.reason(),
            context: serde_json::json!({
                "metadata": req.context.metadata,
                "time": req.context.time,
                "matching": matching,
                "generation": decision.generation(),
                "asked_by": asked_by.as_ref().map(|a| a.id),
                "subject": {"user_id": req.context.user_id, "role": subject_role},
            }),
            evaluated_in_us: i64::try_from(decision.elapsed().as_micros()).unwrap_or(i64::MAX),
        };
        let written = if durable {
            match tokio::time::timeout(DECISION_COMMIT_WAIT, audit.record(entry)).await {
                Ok(written) => written,
                Err(_) => {
                    tracing::warn!(
                        wait_secs = DECISION_COMMIT_WAIT.as_secs(),
                        queued = audit.queued(),
                        "a decision was not committed in time (is the database down?); answered 503, it stays queued"
                    );
                    return Err(crate::Refusal::new(
                        crate::RefusalKind::Unavailable,
                        "the decision could not be recorded yet (the database is unavailable); retry shortly",
                    )
                    .retry_after(5));
                }
            }
        } else {
            audit.record_queued(entry).await
        };
        if written.is_err() {
            tracing::error!("the decision audit writer has shut down; a decision went unrecorded");
            return Err(crate::Refusal::new(
                crate::RefusalKind::Unavailable,
                "aegis is shutting down",
            )
            .retry_after(5));
        }
        Ok(())
    }

    /// What `/health` shows.
    pub fn health(&self) -> PolicyHealth {
        let snapshot = self.engine.snapshot();
        let state = self.state();
        let audit_writer = self.audit.as_ref().map(|a| a.health(AUDIT_STALL_GRACE));
        let stalled = audit_writer.as_ref().is_some_and(|a| a.status != "ok");
        let degraded = state.file_error.is_some() || state.database_error.is_some() || stalled;
        PolicyHealth {
            status: if degraded { "degraded" } else { "ok" },
            policies: snapshot.len(),
            generation: snapshot.generation(),
            emergency_stop: self.engine.is_stopped(),
            policy_dir: self.policy_dir.as_ref().map(|d| d.display().to_string()),
            file_error: state.file_error.clone(),
            database_error: state.database_error.clone(),
            shadow: self.shadow.as_ref().map(|(dir, engine)| ShadowHealth {
                dir: dir.display().to_string(),
                policies: engine.snapshot().len(),
                error: state.shadow_error.clone(),
            }),
            audit_writer,
        }
    }

    /// Whether decisions cannot be recorded (the audit writer has been failing for longer
    /// than a retry or two): the process cannot answer evaluations, so `/health` is 503.
    pub fn audit_stalled(&self) -> bool {
        self.audit
            .as_ref()
            .is_some_and(|a| a.health(AUDIT_STALL_GRACE).status != "ok")
    }
}

/// Who asked for a decision, as authenticated: the actor the audit trail records.
#[derive(Debug, Clone)]
pub struct Asker<'a> {
    /// The caller's id (a user, a service token, the engine).
    pub id: &'a str,
    /// The caller's roles, comma-separated.
    pub role: Option<String>,
}

impl<'a> Asker<'a> {
    /// From an authenticated caller.
    pub fn of(caller: crate::Principal<'a>) -> Self {
        Self {
            id: caller.id,
            role: (!caller.roles.is_empty()).then(|| caller.roles.join(",")),
        }
    }
}

/// How long decision writes may fail before `/health` says the audit writer is stalled.
const AUDIT_STALL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Every diagnostic of a failed load, on one line (for logs and `/health`).
fn joined(errors: &[aegis_policy::Diagnostic]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A summary of the folder: every policy file's path and contents. Hashing contents (not
/// modification times) catches ConfigMap swaps and `git checkout`s that keep times.
fn fingerprint(dir: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    match aegis_policy::files::discover(dir) {
        Ok(files) => {
            for (path, _) in files {
                path.hash(&mut hasher);
                if let Ok(bytes) = std::fs::read(&path) {
                    bytes.hash(&mut hasher);
                }
            }
        }
        Err(d) => d.to_string().hash(&mut hasher),
    }
    hasher.finish()
}
