//! Shadow policy decisions: a candidate set's answer next to the live one, recorded only.

use chrono::{DateTime, Utc};

use crate::Store;

/// A shadow policy set's decision next to the live one.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct ShadowDecision {
    /// Row id.
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
    /// What the live set decided.
    pub live_decision: String,
    /// The live deciding policy.
    pub live_policy: Option<String>,
    /// What the shadow set would have decided.
    pub shadow_decision: String,
    /// The shadow deciding policy.
    pub shadow_policy: Option<String>,
    /// Whether the two differ.
    pub differs: bool,
    /// The request's context (JSON).
    pub context: String,
}

/// A shadow decision to record (`id` and `created_at` are set by the store).
pub type NewShadowDecision = ShadowDecision;

const SHADOW_COLUMNS: &str = "id, created_at, policy_type, action, resource, user_id, \
     live_decision, live_policy, shadow_decision, shadow_policy, differs, context";

impl Store {
    /// Records one shadow decision.
    pub async fn record_shadow(&self, d: &NewShadowDecision) -> crate::Result<()> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO shadow_decisions (created_at, policy_type, action, resource, user_id, \
             live_decision, live_policy, shadow_decision, shadow_policy, differs, context) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(Utc::now()).bind(&d.policy_type).bind(&d.action).bind(&d.resource)
            .bind(&d.user_id).bind(&d.live_decision).bind(&d.live_policy)
            .bind(&d.shadow_decision).bind(&d.shadow_policy).bind(d.differs).bind(&d.context)
            .execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Shadow decisions, newest first; only those that differ from the live ones when
    /// `differs_only`.
    pub async fn list_shadow_decisions(
        &self,
        differs_only: bool,
        limit: i64,
    ) -> crate::Result<Vec<ShadowDecision>> {
        let sql = format!(
            "SELECT {SHADOW_COLUMNS} FROM shadow_decisions WHERE ($1 = FALSE OR differs = TRUE) \
             ORDER BY id DESC LIMIT $2"
        );
        let rows = with_pool!(self, pool => sqlx::query_as(&sql).bind(differs_only).bind(limit)
            .fetch_all(pool).await?);
        Ok(rows)
    }
}
