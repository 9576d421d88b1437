//! [`ExecutorService`]: the guards in front of the executor and the audit around it.
//!
//! Order of checks for `POST /executor/execute` (each refusal is answered in the error
//! envelope and written to the action audit chain with status `denied`):
//! signature (401) → body (400) → timestamp within ±300 s (401) → idempotency key (the first
//! answer again) → nonce never seen (409) → namespace allowlist, exact (403) → policy
//! `self_healing` evaluation (403) → rate per action and namespace (429) → cooldown per target
//! (429) → blast radius per namespace (429). Then an `intent` row is committed, the action
//! runs (or is dry-run), and a `result` row is written.

mod approvals;
mod idempotency;

use idempotency::stored_answer;

use std::time::{Duration, Instant};

use aegis_core::metric_names;
use aegis_executor::{
    ActionRequest, Executor, Outcome, ScaleLimits, Status, namespace_allowed, signature,
};
use aegis_policy::{Context, Decision, PolicyType, Request as PolicyRequest};
use aegis_store::{AuditLog, ExecutorStore, NewActionAudit, Store};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Principal;
use crate::error::{Error, Refusal, RefusalKind};
use crate::policy_service::PolicyService;
use crate::ratelimit::{Class, Limiter};

/// How far a request's timestamp may be from the clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// How long nonces are remembered (beyond any timestamp that could still pass).
pub const NONCE_MEMORY: Duration = Duration::from_secs(900);

/// The executor's guard settings.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// HMAC key of `X-Aegis-Signature`.
    pub secret: Option<Vec<u8>>,
    /// Whether requests must be signed.
    pub require_signature: bool,
    /// Namespaces actions may touch (exact names).
    pub allowed_namespaces: Vec<String>,
    /// Scale bounds.
    pub scale: ScaleLimits,
    /// No second action on the same target within this window.
    pub cooldown: Duration,
    /// At most this many actions per namespace within `blast_window`.
    pub blast_radius: i64,
    /// The blast-radius window.
    pub blast_window: Duration,
    /// How long an action held for approval waits before it counts as rejected.
    pub approval_timeout: Duration,
    /// Four-eyes: whoever asked for a held action cannot approve it themselves.
    pub four_eyes: bool,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            secret: None,
            require_signature: true,
            allowed_namespaces: vec!["default".to_owned(), "production".to_owned()],
            scale: ScaleLimits::default(),
            cooldown: Duration::from_secs(300),
            blast_radius: 5,
            blast_window: Duration::from_secs(600),
            approval_timeout: Duration::from_secs(900),
            four_eyes: true,
        }
    }
}

/// The answer to an executed (or dry-run) action.
#[derive(Debug, Clone, Serialize)]
pub struct ExecuteResponse {
    /// The action's id.
    pub id: String,
    /// `succeeded`, `dry_run`, `failed` or `denied`.
    pub status: &'static str,
    /// The id of the `result` row in the action audit chain.
    pub audit_id: i64,
    /// In words.
    pub message: String,
    /// What the API answered, replicas before/after, revisions.
    pub details: Value,
    /// When the executor was called (after every guard and the intent row); absent for a
    /// stored idempotent answer. For latency figures, not part of the answer.
    #[serde(skip)]
    pub called_at: Option<Instant>,
}

/// The executor, its guards and its audit.
#[derive(Debug)]
pub struct ExecutorService {
    executor: Executor,
    settings: ExecutorSettings,
    limiter: Limiter,
}

fn audit_entry(
    action_id: &str,
    phase: &str,
    req: Option<&ActionRequest>,
    status: &str,
    actor: Option<&str>,
    reason: String,
    details: Value,
) -> NewActionAudit {
    NewActionAudit {
        created_at: None,
        action_id: action_id.to_owned(),
        phase: phase.to_owned(),
        action: req.map_or("unparseable", |r| r.action.as_str()).to_owned(),
        namespace: req.map_or_else(String::new, |r| r.namespace.clone()),
        target: req.map_or_else(String::new, |r| r.target.clone()),
        status: status.to_owned(),
        actor: actor.map(str::to_owned),
        reason: Some(reason),
        details,
    }
}

impl ExecutorService {
    /// A service over `executor` with `settings`; `limiter` budgets actions per namespace.
    pub fn new(executor: Executor, settings: ExecutorSettings, limiter: Limiter) -> Self {
        Self {
            executor,
            settings,
            limiter,
        }
    }

    /// `dry-run` or `kubernetes`.
    pub fn mode(&self) -> &'static str {
        match self.executor {
            Executor::DryRun => "dry-run",
            Executor::Kubernetes(_) => "kubernetes",
        }
    }

    /// Signs `body` for manual use; `None` without a secret.
    pub fn sign(&self, body: &[u8]) -> Option<String> {
        self.settings
            .secret
            .as_deref()
            .map(|s| signature::sign(s, body))
    }

    /// Writes a `denied` row for a refused request and returns the refusal.
    async fn refuse(
        &self,
        store: &Store,
        req: Option<&ActionRequest>,
        actor: Option<&str>,
        error: Refusal,
    ) -> Error {
        let action_id = uuid::Uuid::now_v7().to_string();
        let entry = audit_entry(
            &action_id,
            "result",
            req,
            "denied",
            actor,
            error.reason.clone(),
            json!({"http_status": error.kind.http_status(), "code": error.kind.code()}),
        );
        if let Err(e) = store.append_action_audit(&[entry]).await {
            tracing::error!(error = %e, "writing the audit row of a refused action failed");
        }
        metrics::counter!(metric_names::ACTIONS_TOTAL,
            "action" => req.map_or("unparseable", |r| r.action.as_str()).to_owned(),
            "namespace" => req.map_or_else(String::new, |r| self.namespace_label(&r.namespace)),
            "status" => "denied")
        .increment(1);
        Error::Refused(error)
    }

    /// The `namespace` label of a metric: an allowed namespace as it is, anything else
    /// `other`, so callers cannot mint a new series per request.
    fn namespace_label(&self, namespace: &str) -> String {
        if self
            .settings
            .allowed_namespaces
            .iter()
            .any(|n| n == namespace)
        {
            namespace.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// Checks the signature of the exact `body` bytes.
    pub fn check_signature(&self, body: &[u8], header: Option<&str>) -> Result<(), Refusal> {
        if !self.settings.require_signature {
            return Ok(());
        }
        let Some(secret) = self.settings.secret.as_deref() else {
            return Err(Refusal::new(
                RefusalKind::Unauthenticated,
                "signed requests are refused: AEGIS_ACTION_SECRET is not set",
            ));
        };
        match header {
            None => Err(Refusal::new(
                RefusalKind::Unauthenticated,
                "missing X-Aegis-Signature (hex HMAC-SHA256 of the body)",
            )),
            Some(sig) if signature::verify(secret, body, sig) => Ok(()),
            Some(_) => Err(Refusal::new(
                RefusalKind::Unauthenticated,
                "X-Aegis-Signature does not match the body",
            )),
        }
    }

    /// The whole guarded path; see the module documentation.
    pub async fn execute(
        &self,
        store: &Store,
        policies: &PolicyService,
        caller: Option<Principal<'_>>,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<ExecuteResponse, Error> {
        let actor = caller.map(|c| c.id);
        let parsed = ActionRequest::parse(body);
        if let Err(e) = self.check_signature(body, signature_header) {
            return Err(self.refuse(store, parsed.as_ref().ok(), actor, e).await);
        }
        let req = match parsed {
            Ok(r) => r,
            Err(e) => {
                return Err(self
                    .refuse(store, None, actor, Refusal::new(RefusalKind::Invalid, e.0))
                    .await);
            }
        };
        let skew = (Utc::now() - req.timestamp).abs();
        if skew > chrono::Duration::from_std(MAX_SKEW).unwrap_or_default() {
            let e = Refusal::new(
                RefusalKind::Unauthenticated,
                format!(
                    "`timestamp` is {}s away from the server's clock; at most {}s is accepted",
                    skew.num_seconds(),
                    MAX_SKEW.as_secs()
                ),
            );
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }
        if let Some(key) = &req.idempotency_key
            && let Some(answer) = store.idempotent_answer(key).await?
        {
            return stored_answer(key, answer);
        }
        let expires = Utc::now() + chrono::Duration::from_std(NONCE_MEMORY).unwrap_or_default();
        if !store.remember_nonce(&req.nonce, expires).await? {
            let e = Refusal::new(
                RefusalKind::Conflict,
                format!("nonce `{}` was already used: a replayed request", req.nonce),
            );
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }
        let policy = policy_request(&req, caller);
        self.guarded(store, policies, req, actor, policy, Standing::Asked)
            .await
    }

    /// The self-healing loop's entry: the same guards from the namespace allowlist on
    /// (the loop is in-process, so no signature, timestamp or nonce), with `policy` as the
    /// `self_healing` question (its metadata carries severity, score and failure type, its
    /// time the event time). `decided` is the loop's answer to its own question when it has
    /// one, so the policy is evaluated once per action; `policy` is still kept with a held
    /// approval, which is decided again when a person approves.
    pub async fn execute_internal(
        &self,
        store: &Store,
        policies: &PolicyService,
        req: ActionRequest,
        actor: &str,
        policy: PolicyRequest,
        decided: Option<Decision>,
    ) -> Result<ExecuteResponse, Error> {
        if let Err(e) = req.check() {
            let e = Refusal::new(RefusalKind::Invalid, e.0);
            return Err(self.refuse(store, Some(&req), Some(actor), e).await);
        }
        let standing = decided.map_or(Standing::Asked, Standing::Decided);
        self.guarded(store, policies, req, Some(actor), policy, standing)
            .await
    }

    /// The guards' state for `req` right now: the rate budget, the cooldown and the last
    /// action on the target, the blast-radius count in the namespace, the breaker.
    pub async fn guard_state(&self, store: &Store, req: &ActionRequest) -> Value {
        let now = Utc::now();
        let cooldown = chrono::Duration::from_std(self.settings.cooldown).unwrap_or_default();
        let window = chrono::Duration::from_std(self.settings.blast_window).unwrap_or_default();
        let last = store
            .last_action_on(&req.namespace, &req.target, now - cooldown)
            .await
            .ok()
            .flatten();
        let recent = store
            .intents_in_namespace_since(&req.namespace, now - window)
            .await
            .ok();
        let (_, name) = req.target_parts();
        let breaker = store
            .breaker(&format!("{}/{name}", req.namespace))
            .await
            .ok()
            .flatten();
        json!({
            "rate_limit_per_minute": self.limiter.action_budget(),
            "rate_limit_shared": self.limiter.is_shared(),
            "cooldown_secs": self.settings.cooldown.as_secs(),
            "last_action_on_target_within_cooldown": last,
            "blast_radius": {"limit": self.settings.blast_radius,
                             "window_secs": self.settings.blast_window.as_secs(),
                             "actions_in_window": recent},
            "breaker": breaker.map(|b| json!({"open": b.open, "ineffective": b.ineffective})),
        })
    }

    async fn guarded(
        &self,
        store: &Store,
        policies: &PolicyService,
        req: ActionRequest,
        actor: Option<&str>,
        policy: PolicyRequest,
        standing: Standing<'_>,
    ) -> Result<ExecuteResponse, Error> {
        if !namespace_allowed(&req.namespace, &self.settings.allowed_namespaces) {
            let e = Refusal::new(
                RefusalKind::Forbidden,
                format!(
                    "namespace `{}` is not in AEGIS_ALLOWED_NAMESPACES ({})",
                    req.namespace,
                    self.settings.allowed_namespaces.join(", ")
                ),
            );
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }
        let (decision, approved) = match standing {
            Standing::Decided(decision) => (decision, None),
            Standing::Asked => (evaluate(policies, &policy), None),
            Standing::Approved(id) => (evaluate(policies, &policy), Some(id)),
        };
        if !decision.allowed() {
            let e = Refusal::new(
                RefusalKind::Forbidden,
                format!("policy: {}", decision.reason()),
            );
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }
        // A target whose last actions did not help is left alone until an operator looks.
        let (_, name) = req.target_parts();
        let entity = format!("{}/{name}", req.namespace);
        if let Some(b) = store.breaker(&entity).await?
            && b.open
        {
            let e = Refusal::new(
                RefusalKind::Conflict,
                format!(
                    "circuit breaker open on {entity}: {} ineffective actions in a row{}; \
                 check the target, then POST /api/v1/breakers/{entity}/reset",
                    b.ineffective,
                    b.opened_at
                        .map(|t| format!(" (open since {})", t.to_rfc3339()))
                        .unwrap_or_default()
                ),
            );
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }
        if approved.is_none() && decision.needs_approval(&policy) {
            let name = decision.policy().map(|p| p.name.clone());
            return self
                .hold_for_approval(store, &req, actor, &policy, name.as_deref())
                .await;
        }
        let budget_key = format!("{} {}", req.action.as_str(), req.namespace);
        if let Err(retry) = self.limiter.check(Class::Action, &budget_key).await {
            let e = Refusal::new(RefusalKind::RateLimited, "too many requests").retry_after(retry);
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }
        let now = Utc::now();
        let cooldown = chrono::Duration::from_std(self.settings.cooldown).unwrap_or_default();
        if let Some(last) = store
            .last_action_on(&req.namespace, &req.target, now - cooldown)
            .await?
        {
            let wait = (last + cooldown - now).num_seconds().max(1) as u64;
            let e = Refusal::new(
                RefusalKind::RateLimited,
                format!(
                    "cooldown: {}/{} was acted on at {last}; next action in {wait}s",
                    req.namespace, req.target
                ),
            )
            .retry_after(wait);
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }
        let window = chrono::Duration::from_std(self.settings.blast_window).unwrap_or_default();
        let recent = store
            .intents_in_namespace_since(&req.namespace, now - window)
            .await?;
        if recent >= self.settings.blast_radius {
            let e = Refusal::new(
                RefusalKind::RateLimited,
                format!(
                    "blast radius: {recent} actions in `{}` within {}s (limit {})",
                    req.namespace,
                    self.settings.blast_window.as_secs(),
                    self.settings.blast_radius
                ),
            )
            .retry_after(60);
            return Err(self.refuse(store, Some(&req), actor, e).await);
        }

        // Intent first, committed, so a crash during the call is visible afterwards. The
        // idempotency key is claimed before it: a retry after a crash between intent and
        // result finds the claim and is refused instead of acting a second time.
        let action_id = uuid::Uuid::now_v7().to_string();
        if let Some(key) = &req.idempotency_key
            && !store.reserve_idempotency_key(key, &action_id).await?
        {
            let answer = store.idempotent_answer(key).await?.unwrap_or_default();
            return stored_answer(key, answer);
        }
        let intent = audit_entry(
            &action_id,
            "intent",
            Some(&req),
            "pending",
            actor,
            req.reason.clone().unwrap_or_default(),
            json!({"params": req.params, "decision": decision.reason(), "mode": self.mode(),
                   "policy": decision.policy().map(|p| &p.name),
                   "decision_record": policy.context.metadata.get("decision_record")}),
        );
        store.append_action_audit(&[intent]).await?;

        let started = Instant::now();
        let outcome: Outcome = self.executor.execute(&req, self.settings.scale).await;
        let elapsed = started.elapsed();
        metrics::histogram!(metric_names::ACTION_DURATION_SECONDS, "action" => req.action.as_str())
            .record(elapsed.as_secs_f64());
        metrics::counter!(metric_names::ACTIONS_TOTAL, "action" => req.action.as_str(),
            "namespace" => self.namespace_label(&req.namespace), "status" => outcome.status.as_str())
        .increment(1);

        let result = audit_entry(
            &action_id,
            "result",
            Some(&req),
            outcome.status.as_str(),
            actor,
            outcome.message.clone(),
            json!({"details": outcome.details, "duration_ms": elapsed.as_millis() as u64}),
        );
        let receipts = store.append_action_audit(&[result]).await?;
        let response = ExecuteResponse {
            id: action_id.clone(),
            status: outcome.status.as_str(),
            audit_id: receipts.first().map_or(0, |r| r.id),
            message: outcome.message,
            details: outcome.details,
            called_at: Some(started),
        };
        if let Some(key) = &req.idempotency_key {
            let stored = serde_json::to_value(&response).map_err(Error::internal)?;
            store
                .save_idempotent_answer(key, &action_id, response.status, &stored)
                .await?;
        }
        Ok(response)
    }

    /// Marks intents that never got a result (a crash between the two) as `unknown`; returns
    /// them. They are reported, never retried: the cluster may or may not have changed.
    pub async fn reconcile(
        &self,
        store: &Store,
    ) -> Result<Vec<aegis_store::PendingIntent>, aegis_store::Error> {
        let pending = store.pending_intents().await?;
        let entries: Vec<NewActionAudit> = pending
            .iter()
            .map(|p| NewActionAudit {
                created_at: None,
                action_id: p.action_id.clone(),
                phase: "result".to_owned(),
                action: p.action.clone(),
                namespace: p.namespace.clone(),
                target: p.target.clone(),
                status: "unknown".to_owned(),
                actor: Some("aegis".to_owned()),
                reason: Some("aegis stopped between intent and result; check the target by hand, the action is not retried".to_owned()),
                details: json!({"intent_at": p.created_at}),
            })
            .collect();
        store.append_action_audit(&entries).await?;
        for p in &pending {
            tracing::warn!(action_id = %p.action_id, action = %p.action, namespace = %p.namespace, target = %p.target,
                intent_at = %p.created_at, "an action was interrupted between intent and result; marked unknown");
        }
        Ok(pending)
    }
}

/// Where an action stands when it reaches the guards.
enum Standing<'a> {
    /// Nobody has asked the policy yet: the guards ask, and may hold it for approval.
    Asked,
    /// The caller (the loop) asked already; this is the answer, used as it is.
    Decided(Decision),
    /// A person approved the held action with this id: the policy is asked again as it is
    /// now, and it is not held a second time.
    Approved(&'a str),
}

/// The policy's answer to `question`: at its own time when it carries one (replays of
/// recorded telemetry), by the clock otherwise (HTTP requests always).
fn evaluate(policies: &PolicyService, question: &PolicyRequest) -> Decision {
    match question.context.time {
        Some(at) => policies.engine().evaluate_at(question, at),
        None => policies.engine().evaluate(question),
    }
}

/// The `self_healing` question for a request: action as named, resource
/// `cluster:NAMESPACE/KIND/NAME`, the caller's roles (a signed request without a token is the
/// `service` role, as the self-healing loop is).
pub fn policy_request(req: &ActionRequest, caller: Option<Principal<'_>>) -> PolicyRequest {
    let (kind, name) = req.target_parts();
    let kind = match kind {
        aegis_executor::TargetKind::Deployment => "deployment",
        aegis_executor::TargetKind::Pod => "pod",
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("namespace".into(), json!(req.namespace));
    metadata.insert("target".into(), json!(name));
    metadata.insert("kind".into(), json!(kind));
    if let Some(r) = req.params.replicas {
        metadata.insert("replicas".into(), json!(r));
    }
    if let Some(r) = req.params.revision {
        metadata.insert("revision".into(), json!(r));
    }
    PolicyRequest {
        action: req.action.as_str().to_owned(),
        resource: format!("cluster:{}/{kind}/{name}", req.namespace),
        policy_type: PolicyType::SelfHealing,
        context: Context {
            user_id: Some(caller.map_or_else(|| "ai-engine".to_owned(), |c| c.id.to_owned())),
            role: None,
            roles: caller.map_or_else(|| vec!["service".to_owned()], |c| c.roles.to_vec()),
            metadata,
            time: None,
        },
    }
}
