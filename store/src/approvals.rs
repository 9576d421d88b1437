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
