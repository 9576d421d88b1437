//! Decision records: one per remediation the engine decided, named by its audit rows.

use chrono::{DateTime, Utc};

use crate::Store;

/// A remediation's decision record.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct DecisionRecord {
    /// Id (UUIDv7), named by the action's audit rows.
    pub id: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// `namespace/workload`.
    pub entity: String,
    /// The engine's incident.
    pub incident: Option<i64>,
    /// The action's id, when one was carried out or attempted.
    pub action_id: Option<String>,
    /// The approval, when the action was held for one.
    pub approval_id: Option<String>,
    /// The action status (`dry_run`, `succeeded`, `denied`, `skipped`, ...).
    pub outcome: String,
    /// The record (JSON): evidence, decision, why not, guards, request, outcome.
    pub record: String,
}

const RECORD_COLUMNS: &str =
    "id, created_at, entity, incident, action_id, approval_id, outcome, record";

impl Store {
    /// Writes a decision record (`created_at` is set here).
    pub async fn insert_decision_record(&self, r: &DecisionRecord) -> crate::Result<()> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO decision_records (id, created_at, entity, incident, action_id, approval_id, outcome, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&r.id).bind(Utc::now()).bind(&r.entity).bind(r.incident).bind(&r.action_id)
            .bind(&r.approval_id).bind(&r.outcome).bind(&r.record)
            .execute(pool).await?.rows_affected());
        Ok(())
    }

    /// One decision record.
    pub async fn decision_record(&self, id: &str) -> crate::Result<Option<DecisionRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM decision_records WHERE id = $1");
        let row =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        Ok(row)
    }

    /// Decision records, newest first, optionally of one entity.
    pub async fn list_decision_records(
        &self,
        entity: Option<&str>,
        limit: i64,
    ) -> crate::Result<Vec<DecisionRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM decision_records WHERE ($1 IS NULL OR entity = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = with_pool!(self, pool => sqlx::query_as(&sql).bind(entity).bind(limit)
            .fetch_all(pool).await?);
        Ok(rows)
    }
}
