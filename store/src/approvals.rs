//! The approval queue: actions held back by an ALLOW policy with `require_approval`, until
//! a person approves or rejects them or they expire. Transitions are single conditional
//! updates, so an approval is decided exactly once even with several replicas.

use chrono::{DateTime, Utc};

use crate::Store;

/// One held-back action.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct Approval {
    /// Id (UUIDv7).
    pub id: String,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When a pending approval turns into a rejection.
    pub expires_at: DateTime<Utc>,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    /// `namespace/target`.
    pub entity: String,
    /// The action (`scale_deployment`, ...).
    pub action: String,
    /// The ALLOW policy that asked for approval.
    pub policy: Option<String>,
    /// Who asked (the engine, a service token, a user).
    pub requested_by: Option<String>,
    /// The action request (JSON).
    pub request: String,
    /// The `self_healing` question it was allowed under (JSON).
    pub question: String,
    /// What the action would do: the dry-run executor's description (JSON).
    pub dry_run: String,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// Why (the approver's words, or "timed out").
    pub reason: Option<String>,
    /// The action's id once it was carried out.
    pub action_id: Option<String>,
}

/// What is needed to queue an approval.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    /// `namespace/target`.
    pub entity: String,
    /// The action.
    pub action: String,
    /// The ALLOW policy that asked for approval.
    pub policy: Option<String>,
    /// Who asked.
    pub requested_by: Option<String>,
    /// The action request (JSON).
    pub request: String,
    /// The question it was allowed under (JSON).
    pub question: String,
    /// The dry-run description (JSON).
    pub dry_run: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, created_at, expires_at, status, entity, action, policy, requested_by, \
     request, question, dry_run, decided_by, decided_at, reason, action_id";

impl Store {
    /// Queues an approval; returns it.
    pub async fn create_approval(&self, new: &NewApproval) -> crate::Result<Approval> {
        let id = uuid::Uuid::now_v7().to_string();
        let sql = format!(
            "INSERT INTO approvals (id, created_at, expires_at, status, entity, action, policy, \
             requested_by, request, question, dry_run) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
        );
        let row: Approval = with_pool!(self, pool => sqlx::query_as(&sql)
            .bind(&id).bind(Utc::now()).bind(new.expires_at).bind(&new.entity)
            .bind(&new.action).bind(&new.policy).bind(&new.requested_by).bind(&new.request)
            .bind(&new.question).bind(&new.dry_run)
            .fetch_one(pool).await?);
        Ok(row)
    }

    /// One approval.
    pub async fn get_approval(&self, id: &str) -> crate::Result<Option<Approval>> {
        let sql = format!("SELECT {COLUMNS} FROM approvals WHERE id = $1");
        let row =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        Ok(row)
    }

    /// Approvals, newest first, optionally of one status.
    pub async fn list_approvals(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> crate::Result<Vec<Approval>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM approvals WHERE ($1 IS NULL OR status = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = with_pool!(self, pool => sqlx::query_as(&sql).bind(status).bind(limit)
            .fetch_all(pool).await?);
        Ok(rows)
    }

    /// Turns every pending approval past its expiry into `expired`; returns them.
    pub async fn expire_approvals(&self, now: DateTime<Utc>) -> crate::Result<Vec<Approval>> {
        let sql = format!(
            "UPDATE approvals SET status = 'expired', decided_at = $1, reason = 'timed out' \
             WHERE status = 'pending' AND expires_at < $1 RETURNING {COLUMNS}"
        );
        let rows = with_pool!(self, pool => sqlx::query_as(&sql).bind(now).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Moves a pending, unexpired approval to `status` (`approved` or `rejected`); `None`
    /// when it is not pending any more or has expired (someone else decided, or too late).
    pub async fn decide_approval(
        &self,
        id: &str,
        status: &str,
        by: Option<&str>,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> crate::Result<Option<Approval>> {
        let sql = format!(
            "UPDATE approvals SET status = $2, decided_by = $3, decided_at = $4, reason = $5 \
             WHERE id = $1 AND status = 'pending' AND expires_at >= $4 RETURNING {COLUMNS}"
        );
        let row = with_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(status).bind(by)
            .bind(now).bind(reason).fetch_optional(pool).await?);
        Ok(row)
    }

    /// Records the action carried out for an approved approval.
    pub async fn set_approval_action(&self, id: &str, action_id: &str) -> crate::Result<()> {
        with_pool!(self, pool => sqlx::query("UPDATE approvals SET action_id = $2 WHERE id = $1")
            .bind(id).bind(action_id).execute(pool).await?.rows_affected());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn new(expires_in: Duration) -> NewApproval {
        NewApproval {
            entity: "production/api".into(),
            action: "scale_deployment".into(),
            policy: Some("Scale With Approval".into()),
            requested_by: Some("aegis-engine".into()),
            request: "{}".into(),
            question: "{}".into(),
            dry_run: "{\"would\":\"scale\"}".into(),
            expires_at: Utc::now() + expires_in,
        }
    }

    #[tokio::test]
    async fn approvals_are_decided_once_and_expire() {
        for db in crate::testing::TestDb::both().await {
            let s = &db.store;
            let a = s.create_approval(&new(Duration::minutes(5))).await.unwrap();
            assert_eq!(a.status, "pending", "{}", db.name());
            let b = s.create_approval(&new(Duration::minutes(5))).await.unwrap();
            let late = s
                .create_approval(&new(Duration::seconds(-1)))
                .await
                .unwrap();
            let now = Utc::now();
            let approved = s
                .decide_approval(&a.id, "approved", Some("admin-1"), None, now)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(approved.decided_by.as_deref(), Some("admin-1"));
            // Once only.
            assert!(
                s.decide_approval(&a.id, "rejected", Some("admin-2"), None, now)
                    .await
                    .unwrap()
                    .is_none()
            );
            // Too late is too late, even before the sweep.
            assert!(
                s.decide_approval(&late.id, "approved", Some("admin-1"), None, now)
                    .await
                    .unwrap()
                    .is_none()
            );
            let expired = s.expire_approvals(now).await.unwrap();
            assert_eq!(
                expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
                [late.id.as_str()]
            );
            assert_eq!(expired[0].reason.as_deref(), Some("timed out"));
            let pending = s.list_approvals(Some("pending"), 10).await.unwrap();
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].id, b.id);
            assert_eq!(s.list_approvals(None, 10).await.unwrap().len(), 3);
            s.set_approval_action(&a.id, "act-1").await.unwrap();
            assert_eq!(
                s.get_approval(&a.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .action_id
                    .as_deref(),
                Some("act-1")
            );
            db.cleanup().await;
        }
    }
}

/// A remediation target's circuit breaker.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct Breaker {
    /// `namespace/workload`.
    pub entity: String,
    /// Ineffective actions in a row.
    pub ineffective: i64,
    /// Open: no more actions on the target until reset.
    pub open: bool,
    /// When it opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who reset it last.
    pub reset_by: Option<String>,
    /// When.
    pub reset_at: Option<DateTime<Utc>>,
}

const BREAKER_COLUMNS: &str =
    "entity, ineffective, open, opened_at, updated_at, reset_by, reset_at";

impl Store {
    /// Records one verified action on `entity`: an effective one resets the count, an
    /// ineffective one adds to it and opens the breaker at `threshold`. Returns the breaker
    /// and whether this call opened it.
    pub async fn record_verification(
        &self,
        entity: &str,
        effective: bool,
        threshold: i64,
    ) -> crate::Result<(Breaker, bool)> {
        let now = Utc::now();
        let before = self.breaker(entity).await?;
        let was_open = before.as_ref().is_some_and(|b| b.open);
        let count = if effective {
            0
        } else {
            before.as_ref().map_or(0, |b| b.ineffective) + 1
        };
        let open = was_open || count >= threshold.max(1);
        let opened_at = match (&before, open, was_open) {
            (Some(b), true, true) => b.opened_at,
            (_, true, false) => Some(now),
            _ => None,
        };
        let sql = format!(
            "INSERT INTO breakers (entity, ineffective, open, opened_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (entity) DO UPDATE SET \
             ineffective = $2, open = $3, opened_at = $4, updated_at = $5 \
             RETURNING {BREAKER_COLUMNS}"
        );
        let row: Breaker = with_pool!(self, pool => sqlx::query_as(&sql).bind(entity)
            .bind(count).bind(open).bind(opened_at).bind(now).fetch_one(pool).await?);
        Ok((row, open && !was_open))
    }

    /// The breaker of `entity`, if it ever had a verified action.
    pub async fn breaker(&self, entity: &str) -> crate::Result<Option<Breaker>> {
        let sql = format!("SELECT {BREAKER_COLUMNS} FROM breakers WHERE entity = $1");
        let row =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(entity).fetch_optional(pool).await?);
        Ok(row)
    }

    /// Every breaker, open ones first.
    pub async fn list_breakers(&self) -> crate::Result<Vec<Breaker>> {
        let sql = format!(
            "SELECT {BREAKER_COLUMNS} FROM breakers ORDER BY open DESC, updated_at DESC LIMIT 1000"
        );
        let rows = with_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Closes the breaker of `entity` and clears its count; `None` when there is none.
    pub async fn reset_breaker(&self, entity: &str, by: &str) -> crate::Result<Option<Breaker>> {
        let sql = format!(
            "UPDATE breakers SET open = FALSE, ineffective = 0, opened_at = NULL, \
             reset_by = $2, reset_at = $3, updated_at = $3 WHERE entity = $1 \
             RETURNING {BREAKER_COLUMNS}"
        );
        let row = with_pool!(self, pool => sqlx::query_as(&sql).bind(entity).bind(by)
            .bind(Utc::now()).fetch_optional(pool).await?);
        Ok(row)
    }
}

#[cfg(test)]
mod breaker_tests {
    #[tokio::test]
    async fn three_ineffective_actions_in_a_row_open_the_breaker_until_reset() {
        for db in crate::testing::TestDb::both().await {
            let s = &db.store;
            let e = "production/api";
            assert!(s.breaker(e).await.unwrap().is_none());
            assert!(!s.record_verification(e, false, 3).await.unwrap().1);
            // An effective action starts the count again.
            let (b, _) = s.record_verification(e, true, 3).await.unwrap();
            assert_eq!((b.ineffective, b.open), (0, false), "{}", db.name());
            assert!(!s.record_verification(e, false, 3).await.unwrap().1);
            assert!(!s.record_verification(e, false, 3).await.unwrap().1);
            let (b, opened) = s.record_verification(e, false, 3).await.unwrap();
            assert!(opened && b.open && b.opened_at.is_some(), "{b:?}");
            // Stays open, opened once.
            let (b, opened) = s.record_verification(e, true, 3).await.unwrap();
            assert!(!opened && b.open);
            assert_eq!(s.list_breakers().await.unwrap().len(), 1);
            let b = s.reset_breaker(e, "admin-1").await.unwrap().unwrap();
            assert!(!b.open && b.ineffective == 0);
            assert_eq!(b.reset_by.as_deref(), Some("admin-1"));
            assert!(s.reset_breaker("nope/x", "a").await.unwrap().is_none());
            db.cleanup().await;
        }
    }
}

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
