//! Leader election between replicas through a PostgreSQL session advisory lock.
//!
//! One replica holds `pg_advisory_lock(key)` on a connection of its own (detached from the
//! pool, so the pool can never recycle it and drop the lock by accident); it is the leader
//! for as long as that connection lives. The others try again every interval. A crashed or
//! partitioned leader's session ends, PostgreSQL releases the lock, and the next try of
//! another replica wins. SQLite serves one process, which always leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::Store;
use crate::store::Pool;

/// The lock of the self-healing loop's executor ("aegis.engine" as a number).
pub const ENGINE_LOCK: i64 = 0x6165_6769_735f_656e;

/// A held (or not) leadership.
#[derive(Debug)]
pub struct Leadership {
    conn: Option<PgConnection>,
    key: i64,
}

impl Leadership {
    /// Tries once to take the lock `key`; SQLite always succeeds.
    pub async fn try_acquire(store: &Store, key: i64) -> crate::Result<Option<Self>> {
        let pool = match store.pool() {
            Pool::Sqlite(_) => return Ok(Some(Self { conn: None, key })),
            Pool::Postgres(pool) => pool,
        };
        let mut conn = pool.acquire().await?.detach();
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Self {
                conn: Some(conn),
                key,
            }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Whether the session holding the lock is still alive.
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
        }
    }

    /// Gives the lock up.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

/// Campaigns for `key` until `stop`: sets `leader` while this process holds the lock,
/// checks the session every `interval`, and releases the lock on the way out.
pub async fn campaign(
    store: Store,
    key: i64,
    leader: Arc<AtomicBool>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut held: Option<Leadership> = None;
    loop {
        match &mut held {
            Some(l) => {
                if !l.alive().await {
                    leader.store(false, Ordering::SeqCst);
                    held = None;
                    tracing::warn!(
                        "lost the leader lock (database session ended); campaigning again"
                    );
                }
            }
            None => match Leadership::try_acquire(&store, key).await {
                Ok(Some(l)) => {
                    held = Some(l);
                    leader.store(true, Ordering::SeqCst);
                    tracing::info!("this replica is the leader: it executes actions");
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot campaign for the leader lock"),
            },
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    leader.store(false, Ordering::SeqCst);
    if let Some(l) = held {
        l.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_at_a_time_and_the_next_takes_over() {
        for db in crate::testing::TestDb::both().await {
            let store = db.store.clone();
            let key = ENGINE_LOCK ^ i64::from(std::process::id());
            let first = Leadership::try_acquire(&store, key).await.unwrap();
            assert!(first.is_some());
            let second = Leadership::try_acquire(&store, key).await.unwrap();
            if store.backend() == crate::Backend::Sqlite {
                // One process per SQLite file: it always leads.
                assert!(second.is_some());
                db.cleanup().await;
                continue;
            }
            assert!(second.is_none(), "a second replica must not lead");
            let mut first = first.unwrap();
            assert!(first.alive().await);
            first.release().await;
            let third = Leadership::try_acquire(&store, key).await.unwrap();
            assert!(third.is_some(), "the lock is free once the leader lets go");
            third.unwrap().release().await;
            db.cleanup().await;
        }
    }
}

/// An action handed from a replica to the leader.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Handoff {
    /// Row id.
    pub id: i64,
    /// When the replica decided it.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// `namespace/workload`.
    pub entity: String,
    /// The action request (JSON).
    pub request: String,
    /// The `self_healing` question it was allowed under (JSON).
    pub question: String,
}

impl Store {
    /// Queues an allowed action for the leader.
    pub async fn push_handoff(
        &self,
        entity: &str,
        request: &str,
        question: &str,
    ) -> crate::Result<i64> {
        let id: i64 = with_pool!(self, pool => sqlx::query_scalar(
            "INSERT INTO engine_handoffs (created_at, entity, request, question) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(chrono::Utc::now()).bind(entity).bind(request).bind(question)
            .fetch_one(pool).await?);
        Ok(id)
    }

    /// Claims up to `limit` unclaimed handoffs, oldest first; each is claimed by exactly
    /// one caller (PostgreSQL skips rows another leader is claiming; SQLite has one writer).
    pub async fn claim_handoffs(&self, limit: i64) -> crate::Result<Vec<Handoff>> {
        let now = chrono::Utc::now();
        let rows: Vec<Handoff> = match self.pool() {
            Pool::Sqlite(pool) => {
                sqlx::query_as(
                    "UPDATE engine_handoffs SET claimed_at = $1 WHERE id IN \
                 (SELECT id FROM engine_handoffs WHERE claimed_at IS NULL ORDER BY id LIMIT $2) \
                 RETURNING id, created_at, entity, request, question",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(
                    "UPDATE engine_handoffs SET claimed_at = $1 WHERE id IN \
                 (SELECT id FROM engine_handoffs WHERE claimed_at IS NULL ORDER BY id LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) RETURNING id, created_at, entity, request, question",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        };
        let mut rows = rows;
        rows.sort_by_key(|r| r.id);
        // Claimed rows older than a day are history nobody reads: keep the table small.
        with_pool!(self, pool => sqlx::query(
            "DELETE FROM engine_handoffs WHERE claimed_at IS NOT NULL AND claimed_at < $1")
            .bind(now - chrono::Duration::days(1)).execute(pool).await?.rows_affected());
        Ok(rows)
    }
}

#[cfg(test)]
mod handoff_tests {
    #[tokio::test]
    async fn handoffs_are_claimed_once_in_order() {
        for db in crate::testing::TestDb::both().await {
            let s = &db.store;
            let a = s
                .push_handoff("production/api", "{\"a\":1}", "{}")
                .await
                .unwrap();
            let b = s
                .push_handoff("production/web", "{\"b\":2}", "{}")
                .await
                .unwrap();
            let first = s.claim_handoffs(10).await.unwrap();
            assert_eq!(
                first.iter().map(|h| h.id).collect::<Vec<_>>(),
                vec![a, b],
                "{}",
                db.name()
            );
            assert_eq!(first[0].entity, "production/api");
            assert!(
                s.claim_handoffs(10).await.unwrap().is_empty(),
                "claimed once: {}",
                db.name()
            );
            db.cleanup().await;
        }
    }
}
