//! The audit outbox: action audit rows waiting to be pushed to Loki.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::Result;
use crate::store::Store;

/// A queued audit row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OutboxRow {
    /// The outbox id.
    pub id: i64,
    /// `action_audit_logs`.
    pub audit_table: String,
    /// The audit row's id.
    pub audit_id: i64,
    /// The row as one JSON line.
    pub line: String,
    /// When the audit row was written.
    pub created_at: DateTime<Utc>,
    /// Failed pushes so far.
    pub attempts: i32,
}

/// Reading and settling the outbox.
pub trait Outbox {
    /// Unsent rows whose next attempt is due, oldest first.
    fn outbox_due(&self, limit: i64) -> impl Future<Output = Result<Vec<OutboxRow>>> + Send;
    /// Marks rows as delivered.
    fn outbox_sent(&self, ids: &[i64]) -> impl Future<Output = Result<()>> + Send;
    /// Counts a failed attempt and schedules the next one.
    fn outbox_retry(
        &self,
        ids: &[i64],
        next_attempt_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Rows not yet delivered.
    fn outbox_pending(&self) -> impl Future<Output = Result<i64>> + Send;
}

impl Outbox for Store {
    async fn outbox_due(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows: Vec<OutboxRow> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, audit_table, audit_id, line, created_at, attempts FROM audit_outbox \
             WHERE sent_at IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT $2")
            .bind(Utc::now()).bind(limit).fetch_all(pool).await?);
        Ok(rows)
    }

    async fn outbox_sent(&self, ids: &[i64]) -> Result<()> {
        let now = Utc::now();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "UPDATE audit_outbox SET sent_at = $1 WHERE id IN ({})",
                placeholders.join(", ")
            );
            with_pool!(self, pool => {
                let mut q = sqlx::query(&sql).bind(now);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(pool).await?.rows_affected()
            });
        }
        Ok(())
    }

    async fn outbox_retry(&self, ids: &[i64], next_attempt_at: DateTime<Utc>) -> Result<()> {
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "UPDATE audit_outbox SET attempts = attempts + 1, next_attempt_at = $1 WHERE id IN ({})",
                placeholders.join(", ")
            );
            with_pool!(self, pool => {
                let mut q = sqlx::query(&sql).bind(next_attempt_at);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(pool).await?.rows_affected()
            });
        }
        Ok(())
    }

    async fn outbox_pending(&self) -> Result<i64> {
        let n: i64 = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_outbox WHERE sent_at IS NULL").fetch_one(pool).await?);
        Ok(n)
    }
}
