//! Notifications out: what Aegis did, told to the team's Alertmanager (`POST
//! /api/v2/alerts`, so its routes to chat, mail and paging carry it) and to a generic
//! webhook (JSON, HMAC-SHA256-signed).
//!
//! The events are read from the audit trails, not from the code paths that write them, so
//! every source is covered the same way (the loop, `POST /executor/execute`, approvals,
//! breakers, the emergency stop) and nothing is announced that did not happen: action
//! audit rows give actions carried out, failed or refused by a guard, approvals requested,
//! decided and expired, breakers opened and reset; policy audit rows give the loop's
//! refusals (a self-healing DENY, with the policy and reason) and the emergency stop. A
//! cursor per trail moves in the transaction that queues the messages
//! (`aegis_store::NotificationStore`), so each event is queued once; delivery retries with
//! backoff from the outbox until the sink takes it. An approval still pending is announced
//! again every `notify_resend_secs` until someone decides it.
//!
//! Only the leader notifies (replicas share the trails and the outbox).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aegis_store::{
    ActionAuditRow, NewNotification, NotificationRow, NotificationStore, PolicyTailRow, Store,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use aegis_core::http_client::Https;

/// Every event the notifier announces (`notify_events` chooses among them).
pub const EVENTS: [&str; 10] = [
    "action_succeeded",
    "action_failed",
    "action_refused",
    "approval_requested",
    "approval_decided",
    "approval_expired",
    "breaker_opened",
    "breaker_reset",
    "emergency_stop_on",
    "emergency_stop_off",
];

/// The header with the webhook body's signature: `sha256=HEX` of HMAC-SHA256 over
/// `TIMESTAMP.BODY` with the shared secret.
pub const SIGNATURE_HEADER: &str = "x-aegis-signature";
/// The header with the Unix time the signature covers (receivers refuse old ones).
pub const TIMESTAMP_HEADER: &str = "x-aegis-timestamp";
/// The header with the delivery id (the same on every retry of one message).
pub const DELIVERY_HEADER: &str = "x-aegis-delivery";

/// Trail rows read per pass.
const BATCH: i64 = 500;
/// How often the trails and the outbox are looked at.
const POLL: Duration = Duration::from_secs(1);
/// How long Alertmanager shows an event that does not stay open (an action done): it
/// resolves by itself after this.
const EVENT_TTL: chrono::Duration = chrono::Duration::minutes(15);

/// Where notifications go and which.
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// Alertmanager's base URL (`http://alertmanager:9093`).
    pub alertmanager_url: Option<String>,
    /// The webhook's URL.
    pub webhook_url: Option<String>,
    /// The webhook's HMAC key.
    pub webhook_secret: Option<Vec<u8>>,
    /// Events to send; empty: all of [`EVENTS`].
    pub events: Vec<String>,
    /// How often a pending approval is announced again.
    pub resend: Duration,
}

/// One event, as the webhook receives it (and the Alertmanager alert is made from).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Stable id: the trail and row (`action_audit_logs:42`), or the approval and the
    /// time of a re-send.
    pub id: String,
    /// One of [`EVENTS`].
    pub event: &'static str,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Namespace (`-` for the emergency stop).
    pub namespace: String,
    /// Workload (`-` for the emergency stop).
    pub workload: String,
    /// The action (`scale_deployment`, …).
    pub action: String,
    /// `critical`, `warning` or `info`.
    pub severity: &'static str,
    /// One line for a person.
    pub summary: String,
    /// Who did it.
    pub actor: Option<String>,
    /// The action's id (the approval's for approvals).
    pub action_id: Option<String>,
    /// The deciding policy, when one did.
    pub policy: Option<String>,
    /// The rest: dry-run text, approval id and expiry, decision record, reason.
    pub details: Value,
}

/// `deployment/api` → `api`.
fn workload_of(target: &str) -> String {
    target
        .split_once('/')
        .map_or(target, |(_, name)| name)
        .to_owned()
}

/// The event of an action audit row, when it is one to announce.
pub fn action_event(r: &ActionAuditRow) -> Option<Event> {
    let details: Value = serde_json::from_str(&r.details).unwrap_or(Value::Null);
    let (event, severity) = match (r.phase.as_str(), r.status.as_str()) {
        ("result", "succeeded") => ("action_succeeded", "info"),
        ("result", "failed" | "unknown") => ("action_failed", "critical"),
        ("result", "denied") => ("action_refused", "warning"),
        ("approval", "pending") => ("approval_requested", "warning"),
        ("approval", "approved" | "rejected") => ("approval_decided", "info"),
        ("approval", "expired") => ("approval_expired", "warning"),
        ("breaker", "open") => ("breaker_opened", "critical"),
        ("breaker", "reset") => ("breaker_reset", "info"),
        // Intents, dry runs and verifications are in the audit; not worth a message.
        _ => return None,
    };
    let workload = workload_of(&r.target);
    let reason = r.reason.clone().unwrap_or_default();
    let summary = match event {
        "action_succeeded" => format!(
            "Aegis carried out {} on {}/{workload}",
            r.action, r.namespace
        ),
        "action_failed" => format!(
            "{} on {}/{workload} failed: {reason}",
            r.action, r.namespace
        ),
        "action_refused" => format!(
            "{} on {}/{workload} refused: {reason}",
            r.action, r.namespace
        ),
        "approval_requested" => format!(
            "{} on {}/{workload} waits for approval: `aegis approvals approve {}` (or reject)",
            r.action, r.namespace, r.action_id
        ),
        "approval_decided" => format!(
            "{} on {}/{workload} {} by {}",
            r.action,
            r.namespace,
            r.status,
            r.actor.as_deref().unwrap_or("-")
        ),
        "approval_expired" => format!(
            "the approval of {} on {}/{workload} expired undecided: nothing was done",
            r.action, r.namespace
        ),
        "breaker_opened" => format!(
            "circuit breaker open on {}/{workload}: {reason}",
            r.namespace
        ),
        _ => format!(
            "circuit breaker on {}/{workload} reset: {reason}",
            r.namespace
        ),
    };
    let policy = details["policy"].as_str().map(str::to_owned);
    let mut extra = json!({"phase": r.phase, "status": r.status, "reason": r.reason,
                           "audit_id": r.id, "audit": details});
    if event == "approval_requested" {
        extra["how_to_approve"] = json!(format!(
            "aegis approvals approve {id}  |  POST /api/v1/approvals/{id}/approve",
            id = r.action_id
        ));
    }
    Some(Event {
        id: format!("action_audit_logs:{}", r.id),
        event,
        at: r.created_at,
        namespace: r.namespace.clone(),
        workload,
        action: r.action.clone(),
        severity,
        summary,
        actor: r.actor.clone(),
        action_id: Some(r.action_id.clone()),
        policy,
        details: extra,
    })
}

/// The event of a policy audit row: the emergency stop, or a self-healing DENY the loop
/// was given (`aegis-engine`; the executor's own refusals are action audit rows).
pub fn policy_event(r: &PolicyTailRow) -> Option<Event> {
    let context: Value = serde_json::from_str(&r.context).unwrap_or(Value::Null);
    let (event, severity, summary, namespace, workload) = match r.action.as_str() {
        "emergency_stop" => (
            "emergency_stop_on",
            "critical",
            format!(
                "emergency stop ON by {}: every self-healing action is refused ({})",
                r.user_id.as_deref().unwrap_or("-"),
                r.reason
            ),
            "-".to_owned(),
            "-".to_owned(),
        ),
        "emergency_resume" => (
            "emergency_stop_off",
            "info",
            format!(
                "emergency stop OFF by {}: self-healing resumes",
                r.user_id.as_deref().unwrap_or("-")
            ),
            "-".to_owned(),
            "-".to_owned(),
        ),
        _ if r.policy_type == "self_healing"
            && r.decision == "DENY"
            && r.user_id.as_deref() == Some("aegis-engine") =>
        {
            // `cluster:NAMESPACE/deployment/NAME`
            let path = r.resource.strip_prefix("cluster:").unwrap_or(&r.resource);
            let mut parts = path.splitn(3, '/');
            let namespace = parts.next().unwrap_or("-").to_owned();
            let _kind = parts.next();
            let workload = parts.next().unwrap_or("-").to_owned();
            (
                "action_refused",
                "warning",
                format!(
                    "{} on {namespace}/{workload} refused by policy {}: {}",
                    r.action,
                    r.policy_name.as_deref().unwrap_or("(none matched)"),
                    r.reason
                ),
                namespace,
                workload,
            )
        }
        _ => return None,
    };
    Some(Event {
        id: format!("policy_audit_logs:{}", r.id),
        event,
        at: r.created_at,
        namespace,
        workload,
        action: r.action.clone(),
        severity,
        summary,
        actor: r.user_id.clone(),
        action_id: None,
        policy: r.policy_name.clone(),
        details: json!({"decision": r.decision, "reason": r.reason,
                        "metadata": context["metadata"], "audit_id": r.id}),
    })
}

/// `action_succeeded` → `AegisActionSucceeded`.
fn alertname(event: &str) -> String {
    let mut out = String::from("Aegis");
    for part in event.split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The Alertmanager alert of an event (`POST /api/v2/alerts` takes a list of them).
/// `until`: when it ends (`None`: after [`EVENT_TTL`]).
pub fn alertmanager_alert(e: &Event, until: Option<DateTime<Utc>>) -> Value {
    // An approval request keeps one identity (the approval) across re-sends, so its
    // decision can end it; other events are one alert each.
    let key = match e.event {
        "approval_requested" => e.action_id.clone().unwrap_or_else(|| e.id.clone()),
        _ => e.id.clone(),
    };
    let mut annotations = json!({"summary": e.summary, "aegis_id": e.id});
    for (name, value) in [
        ("policy", e.policy.clone()),
        ("actor", e.actor.clone()),
        ("action_id", e.action_id.clone()),
        (
            "how_to_approve",
            e.details["how_to_approve"].as_str().map(str::to_owned),
        ),
        (
            "dry_run",
            e.details["audit"]["dry_run"]["message"]
                .as_str()
                .map(str::to_owned),
        ),
        (
            "decision_record",
            e.details["audit"]["decision_record"]
                .as_str()
                .map(str::to_owned),
        ),
    ] {
        if let Some(v) = value {
            annotations[name] = json!(v);
        }
    }
    let ends = until.unwrap_or(e.at + EVENT_TTL);
    json!({
        "labels": {
            "alertname": alertname(e.event),
            "aegis_event": e.event,
            "namespace": e.namespace,
            "workload": e.workload,
            "severity": e.severity,
            "action": e.action,
            "aegis_key": key,
        },
        "annotations": annotations,
        "startsAt": e.at,
        "endsAt": ends,
    })
}

/// `sha256=HEX` of HMAC-SHA256(`secret`, `TIMESTAMP.BODY`).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// When a message that failed `attempts` times is tried next: 1 s, 2 s, 4 s, … at most
/// 30 s (a page about an action should not wait minutes behind an outage).
fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 5)).min(Duration::from_secs(30))
}

/// The notifier: reads the trails, queues, delivers.
pub struct Notifier {
    store: Store,
    settings: NotifySettings,
    client: Client<Https, Full<Bytes>>,
    leader: Arc<AtomicBool>,
    /// Pending approvals and when each was last announced.
    announced: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("alertmanager_url", &self.settings.alertmanager_url)
            .field("webhook_url", &self.settings.webhook_url)
            .finish()
    }
}

impl Notifier {
    /// A notifier over `store`, active while `leader` is set.
    pub fn new(
        store: Store,
        settings: NotifySettings,
        leader: Arc<AtomicBool>,
    ) -> Result<Self, crate::Error> {
        Ok(Self {
            store,
            settings,
            client: aegis_core::http_client::client().map_err(crate::Error::internal)?,
            leader,
            announced: Mutex::default(),
        })
    }

    fn wanted(&self, event: &str) -> bool {
        self.settings.events.is_empty() || self.settings.events.iter().any(|e| e == event)
    }

    /// The messages of `e`, one per sink that wants it.
    fn messages(&self, e: &Event) -> Vec<NewNotification> {
        let mut out = Vec::new();
        if !self.wanted(e.event) {
            return out;
        }
        if self.settings.alertmanager_url.is_some() {
            let until = match e.event {
                "approval_requested" => e.details["audit"]["expires_at"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc)),
                _ => None,
            };
            let mut alerts = vec![alertmanager_alert(e, until)];
            if matches!(e.event, "approval_decided" | "approval_expired") {
                // End the request's alert: same identity, ending now.
                let mut request = e.clone();
                request.event = "approval_requested";
                request.severity = "warning";
                alerts.push(alertmanager_alert(&request, Some(e.at)));
            }
            out.push(NewNotification {
                event: e.event.to_owned(),
                sink: "alertmanager".to_owned(),
                body: Value::Array(alerts).to_string(),
            });
        }
        if self.settings.webhook_url.is_some() {
            out.push(NewNotification {
                event: e.event.to_owned(),
                sink: "webhook".to_owned(),
                body: json!(e).to_string(),
            });
        }
        out
    }

    /// Reads both trails from their cursors and queues their events; returns how many
    /// messages were queued.
    pub async fn tail_once(&self) -> Result<usize, aegis_store::Error> {
        let mut queued = 0;
        // Action audit. A first start begins at the newest row: history is not announced.
        let source = "action_audit_logs";
        let stored = self.store.notify_cursor(source).await?;
        let cursor = match stored {
            Some(c) => c,
            None => self.store.notify_newest(source).await?,
        };
        let rows = self.store.action_audit_after(cursor, BATCH).await?;
        let to = rows.last().map_or(cursor, |r| r.id);
        let mut messages = Vec::new();
        for event in rows.iter().filter_map(action_event) {
            if event.event == "approval_requested"
                && let Some(id) = &event.action_id
            {
                self.announced
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), Instant::now());
            }
            messages.extend(self.messages(&event));
        }
        if to != cursor || stored.is_none() {
            queued += messages.len();
            self.store.notify_enqueue(source, to, &messages).await?;
        }
        // Policy audit: every API call leaves a row there, so the database filters, up to
        // the newest id read first (rows are written in id order by one writer).
        let source = "policy_audit_logs";
        let newest = self.store.notify_newest(source).await?;
        let stored = self.store.notify_cursor(source).await?;
        let cursor = stored.unwrap_or(newest);
        if newest > cursor || stored.is_none() {
            let rows = self.store.policy_audit_after(cursor, newest, BATCH).await?;
            let to = if rows.len() as i64 == BATCH {
                rows.last().map_or(newest, |r| r.id)
            } else {
                newest
            };
            let messages: Vec<NewNotification> = rows
                .iter()
                .filter_map(policy_event)
                .flat_map(|e| self.messages(&e))
                .collect();
            queued += messages.len();
            self.store.notify_enqueue(source, to, &messages).await?;
        }
        Ok(queued)
    }

    /// Announces again every pending approval last announced `resend` ago or more.
    pub async fn resend_pending(&self) -> Result<usize, aegis_store::Error> {
        if self.settings.resend.is_zero() || !self.wanted("approval_requested") {
            return Ok(0);
        }
        let pending = self.store.list_approvals(Some("pending"), 500).await?;
        let now = Instant::now();
        let mut messages = Vec::new();
        {
            let mut announced = self.announced.lock().unwrap_or_else(|p| p.into_inner());
            announced.retain(|id, _| pending.iter().any(|a| &a.id == id));
            for a in &pending {
                // Not seen since this process started: its first message went out before.
                let last = announced.entry(a.id.clone()).or_insert(now);
                if now.duration_since(*last) < self.settings.resend {
                    continue;
                }
                *last = now;
                let (namespace, target) = a.entity.split_once('/').unwrap_or(("-", &a.entity));
                let dry_run: Value = serde_json::from_str(&a.dry_run).unwrap_or(Value::Null);
                let at = Utc::now();
                let event = Event {
                    id: format!("approval:{}:{}", a.id, at.timestamp()),
                    event: "approval_requested",
                    at: a.created_at,
                    namespace: namespace.to_owned(),
                    workload: workload_of(target),
                    action: a.action.clone(),
                    severity: "warning",
                    summary: format!(
                        "still waiting: {} on {} needs approval until {}: `aegis approvals approve {}` (or reject)",
                        a.action,
                        a.entity,
                        a.expires_at.to_rfc3339(),
                        a.id
                    ),
                    actor: a.requested_by.clone(),
                    action_id: Some(a.id.clone()),
                    policy: a.policy.clone(),
                    details: json!({"reminder": true, "how_to_approve": format!(
                        "aegis approvals approve {id}  |  POST /api/v1/approvals/{id}/approve", id = a.id),
                        "audit": {"approval_id": a.id, "expires_at": a.expires_at, "dry_run": dry_run,
                                  "policy": a.policy}}),
                };
                messages.extend(self.messages(&event));
            }
        }
        if !messages.is_empty() {
            self.store.notify_push(&messages).await?;
        }
        Ok(messages.len())
    }

    /// Sends one message; the error says why it was not taken.
    async fn send(&self, row: &NotificationRow) -> Result<(), String> {
        let (url, mut request) = match row.sink.as_str() {
            "alertmanager" => {
                let base = self
                    .settings
                    .alertmanager_url
                    .as_deref()
                    .unwrap_or_default();
                let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
                (url.clone(), http::Request::post(url))
            }
            _ => {
                let url = self.settings.webhook_url.clone().unwrap_or_default();
                let now = Utc::now().timestamp();
                let signed = signature(
                    self.settings.webhook_secret.as_deref().unwrap_or_default(),
                    now,
                    row.body.as_bytes(),
                );
                let r = http::Request::post(url.clone())
                    .header(SIGNATURE_HEADER, signed)
                    .header(TIMESTAMP_HEADER, now.to_string())
                    .header(DELIVERY_HEADER, row.id.to_string())
                    .header("x-aegis-event", row.event.as_str());
                (url, r)
            }
        };
        request = request
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "aegis-notifier");
        let request = request
            .body(Full::new(Bytes::from(row.body.clone())))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("{url} answered {}", response.status())),
            Ok(Err(e)) => Err(format!("cannot reach {url}: {e}")),
            Err(_) => Err(format!("{url} did not answer within 10 s")),
        }
    }

    /// Delivers the due messages, oldest first; a sink that fails keeps its remaining
    /// messages for the next attempt, in order. Returns how many were delivered.
    pub async fn deliver_once(&self) -> Result<usize, aegis_store::Error> {
        let rows = self.store.notify_due(100).await?;
        let mut delivered = 0;
        let mut failed: HashMap<String, DateTime<Utc>> = HashMap::new();
        for row in rows {
            if let Some(next) = failed.get(&row.sink) {
                self.store
                    .notify_retry(row.id, *next, "waiting behind an earlier message")
                    .await?;
                continue;
            }
            match self.send(&row).await {
                Ok(()) => {
                    self.store.notify_sent(row.id).await?;
                    metrics::counter!(aegis_core::metric_names::NOTIFICATIONS_TOTAL,
                        "sink" => row.sink.clone(), "result" => "delivered")
                    .increment(1);
                    delivered += 1;
                }
                Err(error) => {
                    let next = Utc::now()
                        + chrono::Duration::from_std(backoff(row.attempts)).unwrap_or_default();
                    tracing::warn!(sink = %row.sink, event = %row.event, attempts = row.attempts + 1,
                        %error, "a notification was not delivered; it stays queued");
                    metrics::counter!(aegis_core::metric_names::NOTIFICATIONS_TOTAL,
                        "sink" => row.sink.clone(), "result" => "retried")
                    .increment(1);
                    self.store.notify_retry(row.id, next, &error).await?;
                    failed.insert(row.sink.clone(), next);
                }
            }
        }
        Ok(delivered)
    }

    /// Reads, queues and delivers until `stop` resolves (while this replica leads).
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        // Pending approvals are read ten times per re-send interval (and at least once a
        // minute), not at every poll: the list carries each request's JSON.
        let every = (self.settings.resend / 10).clamp(POLL, Duration::from_secs(60));
        let mut next_resend_check = Instant::now();
        loop {
            if self.leader.load(Ordering::Relaxed) {
                let tail = self.tail_once().await;
                let resend = if Instant::now() >= next_resend_check {
                    next_resend_check = Instant::now() + every;
                    self.resend_pending().await
                } else {
                    Ok(0)
                };
                for (what, result) in [
                    ("reading the audit trails", tail),
                    ("re-sending pending approvals", resend),
                    ("delivering", self.deliver_once().await),
                ] {
                    if let Err(error) = result {
                        tracing::warn!(%error, "notifications: {what} failed");
                    }
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_signatures() {
        assert_eq!(alertname("action_succeeded"), "AegisActionSucceeded");
        assert_eq!(alertname("emergency_stop_on"), "AegisEmergencyStopOn");
        // RFC 4231 test case 2 shape: a known key and message.
        let s = signature(b"key", 1, b"body");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_ne!(s, signature(b"key", 2, b"body"), "the timestamp is covered");
        assert_ne!(s, signature(b"other", 1, b"body"));
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(10), Duration::from_secs(30));
    }

    #[test]
    fn audit_rows_become_events() {
        let row = |phase: &str, status: &str| ActionAuditRow {
            id: 7,
            created_at: Utc::now(),
            action_id: "a-1".into(),
            phase: phase.into(),
            action: "scale_deployment".into(),
            namespace: "production".into(),
            target: "deployment/api".into(),
            status: status.into(),
            actor: Some("aegis-engine".into()),
            reason: Some("why".into()),
            details:
                r#"{"policy": "Needs Approval", "dry_run": {"message": "would kubectl scale"}}"#
                    .into(),
            hash: String::new(),
        };
        let e = action_event(&row("result", "succeeded")).unwrap();
        assert_eq!((e.event, e.workload.as_str()), ("action_succeeded", "api"));
        assert_eq!(
            action_event(&row("result", "denied")).unwrap().event,
            "action_refused"
        );
        assert!(action_event(&row("intent", "pending")).is_none());
        assert!(action_event(&row("result", "dry_run")).is_none());
        let e = action_event(&row("approval", "pending")).unwrap();
        assert_eq!(e.event, "approval_requested");
        assert!(
            e.summary.contains("aegis approvals approve a-1"),
            "{}",
            e.summary
        );
        let alert = alertmanager_alert(&e, None);
        assert_eq!(alert["labels"]["alertname"], "AegisApprovalRequested");
        assert_eq!(alert["labels"]["aegis_key"], "a-1");
        assert_eq!(alert["annotations"]["dry_run"], "would kubectl scale");
        assert_eq!(alert["annotations"]["policy"], "Needs Approval");

        let p = PolicyTailRow {
            id: 3,
            created_at: Utc::now(),
            policy_type: "self_healing".into(),
            action: "scale_up".into(),
            resource: "cluster:kube-system/deployment/coredns".into(),
            user_id: Some("aegis-engine".into()),
            decision: "DENY".into(),
            policy_name: None,
            reason: "no policy allows it".into(),
            context: "{}".into(),
        };
        let e = policy_event(&p).unwrap();
        assert_eq!(
            (e.event, e.namespace.as_str(), e.workload.as_str()),
            ("action_refused", "kube-system", "coredns")
        );
        let by_user = PolicyTailRow {
            user_id: Some("alice".into()),
            ..p.clone()
        };
        assert!(
            policy_event(&by_user).is_none(),
            "the executor's refusal is announced from the action audit"
        );
        let stop = PolicyTailRow {
            action: "emergency_stop".into(),
            policy_type: "api_access".into(),
            ..p
        };
        assert_eq!(policy_event(&stop).unwrap().event, "emergency_stop_on");
    }
}
