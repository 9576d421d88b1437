//! Circuit breakers per remediation target: ineffective actions in a row, and whether the
//! engine may still act on it.

use chrono::{DateTime, Utc};

use crate::Store;

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
mod tests {
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
