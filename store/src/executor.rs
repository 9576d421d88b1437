//! What the executor's guards remember: nonces, idempotent answers, recent actions per target
//! and namespace (read from the action audit chain), and intents that never got a result.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::page::Page;
use crate::store::Store;
use crate::{Error, Result};

/// Filters for reading the action audit, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionAuditQuery {
    /// `pending`, `succeeded`, `failed`, `dry_run`, `denied`, `unknown`.
    pub status: Option<String>,
    /// `restart_pod`, `scale_deployment`, `rollback_deployment`.
    pub action: Option<String>,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// Cursor: rows with a smaller id.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// A row of the action audit.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ActionAuditRow {
    /// Position in the chain.
    pub id: i64,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Groups the rows of one action.
    pub action_id: String,
    /// `intent` or `result`.
    pub phase: String,
    /// The action.
    pub action: String,
    /// Namespace.
    pub namespace: String,
    /// Target.
    pub target: String,
    /// Status.
    pub status: String,
    /// Who asked.
    pub actor: Option<String>,
    /// Why (or why not).
    pub reason: Option<String>,
    /// Details as JSON text.
    #[serde(skip)]
    pub details: String,
    /// The row's chain hash.
    pub hash: String,
}

/// An intent whose result was never written.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PendingIntent {
    /// The action's id.
    pub action_id: String,
    /// The action.
    pub action: String,
    /// Namespace.
    pub namespace: String,
    /// Target.
    pub target: String,
    /// When the intent was written.
    pub created_at: DateTime<Utc>,
}

/// Storage for the executor's guards.
pub trait ExecutorStore {
    /// Remembers `nonce` until `expires_at`; false when it was already seen (a replay).
    fn remember_nonce(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The stored answer to an idempotency key.
    fn idempotent_answer(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<serde_json::Value>>> + Send;

    /// Claims an idempotency key for `action_id` before its intent is written (stored as
    /// `pending`); false when the key is already claimed, by a finished action or one that
    /// never finished (aegis stopped during it), which must not run again.
    fn reserve_idempotency_key(
        &self,
        key: &str,
        action_id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Stores the answer to an idempotency key: fills the key's `pending` claim by the same
    /// action, or inserts it (the first one wins).
    fn save_idempotent_answer(
        &self,
        key: &str,
        action_id: &str,
        status: &str,
        answer: &serde_json::Value,
    ) -> impl Future<Output = Result<()>> + Send;

    /// When the target was last acted on (a succeeded or dry-run result) since `since`.
    fn last_action_on(
        &self,
        namespace: &str,
        target: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;

    /// Intents written in `namespace` since `since` (the blast radius).
    fn intents_in_namespace_since(
        &self,
        namespace: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Intents without a result (a crash between the two).
    fn pending_intents(&self) -> impl Future<Output = Result<Vec<PendingIntent>>> + Send;

    /// Action audit rows matching `query`, newest first.
    fn list_action_audit(
        &self,
        query: &ActionAuditQuery,
    ) -> impl Future<Output = Result<Vec<ActionAuditRow>>> + Send;
}

impl ExecutorStore for Store {
    async fn remember_nonce(&self, nonce: &str, expires_at: DateTime<Utc>) -> Result<bool> {
        let now = Utc::now();
        let inserted = with_pool!(self, pool => {
            // Forget nonces whose window has passed, so the table stays small.
            sqlx::query("DELETE FROM executor_nonces WHERE expires_at < $1").bind(now).execute(pool).await?;
            sqlx::query("INSERT INTO executor_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING")
                .bind(nonce).bind(expires_at).execute(pool).await?.rows_affected()
        });
        Ok(inserted == 1)
    }

    async fn idempotent_answer(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT response FROM executor_idempotency WHERE idempotency_key = $1")
            .bind(key).fetch_optional(pool).await?);
        text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Corrupt(e.to_string())))
            .transpose()
    }

    async fn reserve_idempotency_key(&self, key: &str, action_id: &str) -> Result<bool> {
        let pending = serde_json::json!({"id": action_id, "status": "pending"}).to_string();
        let inserted = with_pool!(self, pool => sqlx::query(
            "INSERT INTO executor_idempotency (idempotency_key, action_id, status, response, created_at) \
             VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT (idempotency_key) DO NOTHING")
            .bind(key).bind(action_id).bind(pending).bind(Utc::now())
            .execute(pool).await?.rows_affected());
        Ok(inserted == 1)
    }

    async fn save_idempotent_answer(
        &self,
        key: &str,
        action_id: &str,
        status: &str,
        answer: &serde_json::Value,
    ) -> Result<()> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO executor_idempotency (idempotency_key, action_id, status, response, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO UPDATE \
             SET status = excluded.status, response = excluded.response \
             WHERE executor_idempotency.action_id = excluded.action_id \
             AND executor_idempotency.status = 'pending'")
            .bind(key).bind(action_id).bind(status).bind(answer.to_string()).bind(Utc::now())
            .execute(pool).await?.rows_affected());
        Ok(())
    }

    async fn last_action_on(
        &self,
        namespace: &str,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let at: Option<DateTime<Utc>> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT created_at FROM action_audit_logs WHERE namespace = $1 AND target = $2 AND phase = 'result' \
             AND status IN ('succeeded', 'dry_run') AND created_at >= $3 ORDER BY id DESC LIMIT 1")
            .bind(namespace).bind(target).bind(since).fetch_optional(pool).await?);
        Ok(at)
    }

    async fn intents_in_namespace_since(
        &self,
        namespace: &str,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        let n: i64 = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM action_audit_logs WHERE namespace = $1 AND phase = 'intent' AND created_at >= $2")
            .bind(namespace).bind(since).fetch_one(pool).await?);
        Ok(n)
    }

    async fn pending_intents(&self) -> Result<Vec<PendingIntent>> {
        let rows: Vec<PendingIntent> = with_pool!(self, pool => sqlx::query_as(
            "SELECT i.action_id, i.action, i.namespace, i.target, i.created_at FROM action_audit_logs i \
             WHERE i.phase = 'intent' AND NOT EXISTS (SELECT 1 FROM action_audit_logs r \
             WHERE r.action_id = i.action_id AND r.phase = 'result') ORDER BY i.id")
            .fetch_all(pool).await?);
        Ok(rows)
    }

    async fn list_action_audit(&self, q: &ActionAuditQuery) -> Result<Vec<ActionAuditRow>> {
        let page = Page::new(
            "SELECT id, created_at, action_id, phase, action, namespace, target, status, actor, \
             reason, details, hash FROM action_audit_logs",
        )
        .eq("status", q.status.as_ref())
        .eq("action", q.action.as_ref())
        .eq("namespace", q.namespace.as_ref())
        .window(q.from, q.to, q.before_id, q.limit);
        self.fetch_page(&page).await
    }
}
