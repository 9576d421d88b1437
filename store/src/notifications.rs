//! The notification outbox: what the notifier read from the audit trails (by a cursor per
//! trail) and queued for each sink, delivered with retries until a sink takes it.
//!
//! Reading a trail and queuing its events happen in one transaction with the cursor's move,
//! so an event is queued exactly once, whatever crashes; delivery is at least once (a sink
//! that took a message whose success was not recorded sees it again, with the same
//! delivery id).

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;
use crate::executor::ActionAuditRow;
use crate::store::Store;

/// A self-healing decision, an emergency-stop switch or another policy audit row the
/// notifier reads.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PolicyTailRow {
    /// Position in the chain.
    pub id: i64,
    /// When.
    pub created_at: DateTime<Utc>,
    /// `self_healing` or `api_access`.
    pub policy_type: String,
    /// The action asked about.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// Who asked.
    pub user_id: Option<String>,
    /// `ALLOW` or `DENY`.
    pub decision: String,
    /// The deciding policy's name.
    pub policy_name: Option<String>,
    /// Why.
    pub reason: String,
    /// The evaluation context, JSON text.
    pub context: String,
}

/// A message waiting for (or past) delivery to one sink.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NotificationRow {
    /// Outbox id (also the delivery id a receiver may deduplicate on).
    pub id: i64,
    /// The event (`action_succeeded`, `approval_requested`, …).
    pub event: String,
    /// `alertmanager` or `webhook`.
    pub sink: String,
    /// The message, ready to send.
    pub body: String,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Failed deliveries so far.
    pub attempts: i32,
}

/// A message to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The event.
    pub event: String,
    /// The sink.
    pub sink: String,
    /// The message.
    pub body: String,
}

/// Reading the trails and the outbox.
pub trait NotificationStore {
    /// The cursor of `source` (`action_audit_logs`, `policy_audit_logs`); `None` before the
    /// first read.
    fn notify_cursor(&self, source: &str) -> impl Future<Output = Result<Option<i64>>> + Send;
    /// The newest id of `source` (0 when empty): where a first start begins, so history is
    /// not announced.
    fn notify_newest(&self, source: &str) -> impl Future<Output = Result<i64>> + Send;
    /// Action audit rows after `after`, oldest first.
    fn action_audit_after(
        &self,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ActionAuditRow>>> + Send;
    /// Policy audit rows after `after` and at most `upto` that a notifier may announce
    /// (self-healing denials, emergency-stop switches), oldest first.
    fn policy_audit_after(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<PolicyTailRow>>> + Send;
    /// Queues `messages` and moves `source`'s cursor to `to`, in one transaction.
    fn notify_enqueue(
        &self,
        source: &str,
        to: i64,
        messages: &[NewNotification],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Queues `messages` (no trail behind them: re-sent approval requests).
    fn notify_push(&self, messages: &[NewNotification]) -> impl Future<Output = Result<()>> + Send;
    /// Undelivered messages whose next attempt is due, oldest first.
    fn notify_due(&self, limit: i64) -> impl Future<Output = Result<Vec<NotificationRow>>> + Send;
    /// Marks a message delivered.
    fn notify_sent(&self, id: i64) -> impl Future<Output = Result<()>> + Send;
    /// Counts a failed delivery and schedules the next.
    fn notify_retry(
        &self,
        id: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Messages not yet delivered.
    fn notify_pending(&self) -> impl Future<Output = Result<i64>> + Send;
}

impl Store {
    /// Queues `messages` and, when given, moves a trail's cursor, in one transaction.
    async fn queue(&self, cursor: Option<(&str, i64)>, messages: &[NewNotification]) -> Result<()> {
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for m in messages {
                sqlx::query(
                    "INSERT INTO notification_outbox (event, sink, body, created_at, next_attempt_at) \
                     VALUES ($1, $2, $3, $4, $4)")
                    .bind(&m.event).bind(&m.sink).bind(&m.body).bind(now)
                    .execute(&mut *tx).await?;
            }
            if let Some((source, to)) = cursor {
                sqlx::query(
                    "INSERT INTO notification_cursors (source, last_id) VALUES ($1, $2) \
                     ON CONFLICT (source) DO UPDATE SET last_id = excluded.last_id")
                    .bind(source).bind(to).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// The trails a cursor may name.
fn table(source: &str) -> &'static str {
    if source == "policy_audit_logs" {
        "policy_audit_logs"
    } else {
        "action_audit_logs"
    }
}

impl NotificationStore for Store {
    async fn notify_cursor(&self, source: &str) -> Result<Option<i64>> {
        let id: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT last_id FROM notification_cursors WHERE source = $1")
            .bind(source).fetch_optional(pool).await?);
        Ok(id)
    }

    async fn notify_newest(&self, source: &str) -> Result<i64> {
        let sql = format!("SELECT COALESCE(MAX(id), 0) FROM {}", table(source));
        let id: i64 = with_pool!(self, pool => sqlx::query_scalar(&sql).fetch_one(pool).await?);
        Ok(id)
    }

    async fn action_audit_after(&self, after: i64, limit: i64) -> Result<Vec<ActionAuditRow>> {
        let rows: Vec<ActionAuditRow> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, created_at, action_id, phase, action, namespace, target, status, actor, \
             reason, details, hash FROM action_audit_logs WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after).bind(limit).fetch_all(pool).await?);
        Ok(rows)
    }

    async fn policy_audit_after(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<PolicyTailRow>> {
        // Every API call leaves a row here: the filter runs in the database.
        let rows: Vec<PolicyTailRow> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, created_at, policy_type, action, resource, user_id, decision, policy_name, \
             reason, context FROM policy_audit_logs WHERE id > $1 AND id <= $2 AND \
             ((policy_type = 'self_healing' AND decision = 'DENY') \
              OR action IN ('emergency_stop', 'emergency_resume')) ORDER BY id LIMIT $3")
            .bind(after).bind(upto).bind(limit).fetch_all(pool).await?);
        Ok(rows)
    }

    async fn notify_enqueue(
        &self,
        source: &str,
        to: i64,
        messages: &[NewNotification],
    ) -> Result<()> {
        self.queue(Some((source, to)), messages).await
    }

    async fn notify_push(&self, messages: &[NewNotification]) -> Result<()> {
        self.queue(None, messages).await
    }

    async fn notify_due(&self, limit: i64) -> Result<Vec<NotificationRow>> {
        let rows: Vec<NotificationRow> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, event, sink, body, created_at, attempts FROM notification_outbox \
             WHERE sent_at IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT $2")
            .bind(Utc::now()).bind(limit).fetch_all(pool).await?);
        Ok(rows)
    }

    async fn notify_sent(&self, id: i64) -> Result<()> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE notification_outbox SET sent_at = $1, last_error = NULL WHERE id = $2")
            .bind(Utc::now()).bind(id).execute(pool).await?.rows_affected());
        Ok(())
    }

    async fn notify_retry(
        &self,
        id: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        let error: String = error.chars().take(1_000).collect();
        with_pool!(self, pool => sqlx::query(
            "UPDATE notification_outbox SET attempts = attempts + 1, next_attempt_at = $1, \
             last_error = $2 WHERE id = $3")
            .bind(next_attempt_at).bind(error).bind(id).execute(pool).await?.rows_affected());
        Ok(())
    }

    async fn notify_pending(&self) -> Result<i64> {
        let n: i64 = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM notification_outbox WHERE sent_at IS NULL").fetch_one(pool).await?);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;
    use crate::{AuditLog, NewActionAudit};

    fn message(n: usize) -> NewNotification {
        NewNotification {
            event: "action_succeeded".into(),
            sink: "webhook".into(),
            body: format!("{{\"n\":{n}}}"),
        }
    }

    #[tokio::test]
    async fn the_cursor_moves_with_the_messages_and_retries_wait() {
        for db in TestDb::both().await {
            let s = &db.store;
            let name = db.name();
            assert_eq!(s.notify_cursor("action_audit_logs").await.unwrap(), None);
            s.append_action_audit(&[NewActionAudit {
                created_at: None,
                action_id: "a1".into(),
                phase: "result".into(),
                action: "scale_deployment".into(),
                namespace: "production".into(),
                target: "deployment/api".into(),
                status: "succeeded".into(),
                actor: Some("aegis-engine".into()),
                reason: None,
                details: serde_json::json!({}),
            }])
            .await
            .unwrap();
            let newest = s.notify_newest("action_audit_logs").await.unwrap();
            assert!(newest >= 1, "{name}");
            let rows = s.action_audit_after(0, 10).await.unwrap();
            assert_eq!(rows.last().unwrap().status, "succeeded", "{name}");
            s.notify_enqueue("action_audit_logs", newest, &[message(1), message(2)])
                .await
                .unwrap();
            assert_eq!(
                s.notify_cursor("action_audit_logs").await.unwrap(),
                Some(newest)
            );
            assert!(s.action_audit_after(newest, 10).await.unwrap().is_empty());
            let due = s.notify_due(10).await.unwrap();
            assert_eq!(due.len(), 2, "{name}");
            s.notify_sent(due[0].id).await.unwrap();
            s.notify_retry(due[1].id, Utc::now() + chrono::Duration::hours(1), "down")
                .await
                .unwrap();
            assert!(s.notify_due(10).await.unwrap().is_empty(), "{name}: waits");
            assert_eq!(s.notify_pending().await.unwrap(), 1);
            s.notify_retry(due[1].id, Utc::now(), "down").await.unwrap();
            let again = s.notify_due(10).await.unwrap();
            assert_eq!((again.len(), again[0].attempts), (1, 2), "{name}");
            // The cursor moves again (upsert).
            s.notify_enqueue("action_audit_logs", newest + 5, &[])
                .await
                .unwrap();
            assert_eq!(
                s.notify_cursor("action_audit_logs").await.unwrap(),
                Some(newest + 5)
            );
        }
    }
}
