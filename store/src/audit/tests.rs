//! Audit chain tests, each on SQLite and PostgreSQL.

use serde_json::json;
use sqlx::Executor;

use super::*;
use crate::store::Pool;
use crate::testing::TestDb;

fn decision(n: usize) -> NewPolicyAudit {
    NewPolicyAudit {
        created_at: None,
        request_id: Some(format!("req-{n}")),
        policy_type: "self_healing".into(),
        action: "scale_up".into(),
        resource: "cluster:production".into(),
        user_id: Some("ai-engine".into()),
        role: Some("service".into()),
        decision: if n.is_multiple_of(2) { "ALLOW" } else { "DENY" }.into(),
        policy_id: None,
        policy_name: Some("Allow Auto-Scale".into()),
        reason: format!("decision {n} with \"quotes\" and ünïcode"),
        context: json!({"metadata": {"severity": "high", "replicas": n}}),
        evaluated_in_us: 3,
    }
}

fn action(n: usize, phase: &str) -> NewActionAudit {
    NewActionAudit {
        created_at: None,
        action_id: format!("act-{n}"),
        phase: phase.into(),
        action: "scale_deployment".into(),
        namespace: "production".into(),
        target: "api".into(),
        status: if phase == "intent" {
            "pending"
        } else {
            "dry_run"
        }
        .into(),
        actor: Some("ai-engine".into()),
        reason: None,
        details: json!({"params": {"replicas": 5}}),
    }
}

/// Runs a raw statement on the store's own pool.
async fn exec(db: &TestDb, sql: &str) -> Result<(), sqlx::Error> {
    match db.store.pool() {
        Pool::Sqlite(p) => p.execute(sql).await.map(|_| ()),
        Pool::Postgres(p) => p.execute(sql).await.map(|_| ()),
    }
}

async fn count(store: &crate::Store, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    match store.pool() {
        Pool::Sqlite(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
        Pool::Postgres(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
    }
}

#[tokio::test]
async fn appended_rows_chain_and_verify() {
    for db in TestDb::both().await {
        let decisions: Vec<_> = (0..5).map(decision).collect();
        let first = db.store.append_policy_audit(&decisions[..2]).await.unwrap();
        let rest = db.store.append_policy_audit(&decisions[2..]).await.unwrap();
        let ids: Vec<i64> = first.iter().chain(&rest).map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5], "{}", db.name());
        let actions = [action(1, "intent"), action(1, "result")];
        db.store.append_action_audit(&actions).await.unwrap();
        for table in AuditTable::ALL {
            let report = db.store.verify_audit(table).await.unwrap();
            assert_eq!(report.broken, None, "{} {table:?}", db.name());
        }
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(report.rows_checked, 5);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn update_and_delete_are_refused_on_every_audit_table() {
    for db in TestDb::both().await {
        db.store.append_policy_audit(&[decision(0)]).await.unwrap();
        db.store
            .append_action_audit(&[action(0, "intent")])
            .await
            .unwrap();
        for table in ["policy_audit_logs", "action_audit_logs"] {
            let update = exec(&db, &format!("UPDATE {table} SET hash = 'x' WHERE id = 1")).await;
            let err = update.expect_err("update must fail").to_string();
            assert!(err.contains("append-only"), "{} {table}: {err}", db.name());
            let delete = exec(&db, &format!("DELETE FROM {table}")).await;
            let err = delete.expect_err("delete must fail").to_string();
            assert!(err.contains("append-only"), "{} {table}: {err}", db.name());
            if db.store.backend() == crate::Backend::Postgres {
                let truncate = exec(&db, &format!("TRUNCATE {table}")).await;
                let err = truncate.expect_err("truncate must fail").to_string();
                assert!(err.contains("append-only"), "{table}: {err}");
            }
            assert_eq!(count(&db.store, table).await, 1, "{} {table}", db.name());
        }
        db.cleanup().await;
    }
}

/// Turns the append-only triggers off, as a superuser (or the SQLite file's owner) could.
async fn disable_guard(db: &TestDb, table: &str) {
    let sql = match db.store.backend() {
        crate::Backend::Postgres => format!("ALTER TABLE {table} DISABLE TRIGGER USER"),
        crate::Backend::Sqlite => {
            format!("DROP TRIGGER {table}_no_update; DROP TRIGGER {table}_no_delete")
        }
    };
    exec(db, &sql).await.unwrap();
}

#[tokio::test]
async fn verify_names_a_changed_row() {
    for db in TestDb::both().await {
        let decisions: Vec<_> = (0..4).map(decision).collect();
        db.store.append_policy_audit(&decisions).await.unwrap();
        disable_guard(&db, "policy_audit_logs").await;
        exec(
            &db,
            "UPDATE policy_audit_logs SET decision = 'ALLOW' WHERE id = 2",
        )
        .await
        .unwrap();
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        let broken = report.broken.expect("tampering must be found");
        assert_eq!(broken.id, 2, "{}", db.name());
        assert!(broken.reason.contains("changed"), "{}", broken.reason);
        assert_eq!(report.rows_checked, 1);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn verify_names_the_row_after_a_deleted_one() {
    for db in TestDb::both().await {
        let actions: Vec<_> = (0..4).map(|n| action(n, "intent")).collect();
        db.store.append_action_audit(&actions).await.unwrap();
        disable_guard(&db, "action_audit_logs").await;
        exec(&db, "DELETE FROM action_audit_logs WHERE id = 3")
            .await
            .unwrap();
        let report = db.store.verify_audit(AuditTable::Action).await.unwrap();
        let broken = report.broken.expect("a gap must be found");
        assert_eq!(broken.id, 4, "{}", db.name());
        assert!(
            broken.reason.contains("row 3 is missing"),
            "{}",
            broken.reason
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn verify_catches_a_recomputed_hash_that_breaks_the_link() {
    for db in TestDb::both().await {
        let decisions: Vec<_> = (0..3).map(decision).collect();
        db.store.append_policy_audit(&decisions).await.unwrap();
        disable_guard(&db, "policy_audit_logs").await;
        // A forger rewrites row 1's hash to hide an edit; row 2 still points at the old one.
        exec(
            &db,
            "UPDATE policy_audit_logs SET hash = prev_hash WHERE id = 1",
        )
        .await
        .unwrap();
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(report.broken.map(|b| b.id), Some(1), "{}", db.name());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_appenders_keep_one_unbroken_chain() {
    for db in TestDb::both().await {
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..25 {
                    store
                        .append_policy_audit(&[decision(worker * 100 + n)])
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // A second store on the same database: another process or replica.
        let other = crate::Store::connect(&db.url, &Default::default())
            .await
            .unwrap();
        let batch: Vec<_> = (0..2_500).map(decision).collect();
        other.append_policy_audit(&batch).await.unwrap();
        other.close().await;
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(report.broken, None, "{}", db.name());
        assert_eq!(report.rows_checked, 200 + 2_500, "{}", db.name());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn appenders_that_take_turns_never_fork_the_chain() {
    for db in TestDb::both().await {
        // Each store remembers the tail it wrote last and appends after it in one statement;
        // when the other has appended since, that insert must fail whole and the append go
        // through the locked path instead of forking the chain.
        let other = crate::Store::connect(&db.url, &Default::default())
            .await
            .unwrap();
        let mut n = 0;
        for round in 0..6 {
            let (store, rows) = if round % 2 == 0 {
                (&db.store, 3)
            } else {
                (&other, 2)
            };
            for _ in 0..2 {
                let batch: Vec<_> = (n..n + rows).map(decision).collect();
                let receipts = store.append_policy_audit(&batch).await.unwrap();
                n += rows;
                assert_eq!(
                    receipts.last().map(|r| r.id),
                    Some(n as i64),
                    "{}",
                    db.name()
                );
            }
        }
        other.close().await;
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(report.broken, None, "{}", db.name());
        assert_eq!(report.rows_checked, n as u64, "{}", db.name());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_recorded_decision_is_committed_when_record_returns() {
    for db in TestDb::both().await {
        let writer = PolicyAuditWriter::spawn(db.store.clone(), AuditWriterOptions::default());
        let sender = writer.sender();
        // Concurrent callers share transactions (group commit) and each is answered only
        // after its own row is in the table: nothing answered can be lost to a crash.
        let mut callers = Vec::new();
        for n in 0..64 {
            let sender = sender.clone();
            let store = db.store.clone();
            callers.push(tokio::spawn(async move {
                sender.record(decision(n)).await.unwrap();
                count(&store, "policy_audit_logs").await
            }));
        }
        for caller in callers {
            assert!(caller.await.unwrap() >= 1, "{}", db.name());
        }
        assert_eq!(
            count(&db.store, "policy_audit_logs").await,
            64,
            "{}",
            db.name()
        );
        sender.record(decision(64)).await.unwrap();
        assert_eq!(
            count(&db.store, "policy_audit_logs").await,
            65,
            "{}",
            db.name()
        );
        writer.shutdown(std::time::Duration::from_secs(10)).await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn writer_flushes_100k_decisions_without_losing_one() {
    for db in TestDb::both().await {
        // A small queue, so producers really wait for the writer (back-pressure, not drops).
        let writer = PolicyAuditWriter::spawn(
            db.store.clone(),
            AuditWriterOptions {
                capacity: 2_048,
                batch: 1_000,
            },
        );
        let mut producers = Vec::new();
        for p in 0..4 {
            let sender = writer.sender();
            producers.push(tokio::spawn(async move {
                for n in 0..25_000 {
                    sender
                        .record_queued(decision(p * 25_000 + n))
                        .await
                        .unwrap();
                }
            }));
        }
        for producer in producers {
            producer.await.unwrap();
        }
        let late = writer.sender();
        let written = writer.shutdown(std::time::Duration::from_secs(120)).await;
        assert_eq!(written, 100_000, "{}", db.name());
        assert_eq!(late.record(decision(0)).await, Err(WriterClosed));

        let count = count(&db.store, "policy_audit_logs").await;
        assert_eq!(count, 100_000, "{}", db.name());
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(
            (report.rows_checked, report.broken),
            (100_000, None),
            "{}",
            db.name()
        );
        db.cleanup().await;
    }
}

/// Attack 1 of the attack table, at the writer: a decision whose text the database cannot
/// store (PostgreSQL takes no NUL in text or jsonb) must not wedge the queue. The rows
/// around it are written, it is stored made storable with a note, every caller is answered
/// within a second, the writer stays healthy and the chain verifies.
#[tokio::test]
async fn a_row_the_database_refuses_never_wedges_the_writer() {
    for db in TestDb::both().await {
        let writer = PolicyAuditWriter::spawn(db.store.clone(), AuditWriterOptions::default());
        let sender = writer.sender();
        let mut callers = Vec::new();
        for n in 0..20 {
            let sender = sender.clone();
            let mut row = decision(n);
            if n == 7 {
                row.action = "a\0b".into();
                row.context = json!({"metadata": {"note": "x\u{0}y"}});
            }
            callers.push(tokio::spawn(async move { sender.record(row).await }));
        }
        let answered = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            for caller in callers {
                caller.await.unwrap().unwrap();
            }
        })
        .await;
        assert!(
            answered.is_ok(),
            "{}: callers wait for a wedged writer",
            db.name()
        );
        // Later decisions go through at once.
        let started = std::time::Instant::now();
        sender.record(decision(20)).await.unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{}",
            db.name()
        );
        assert_eq!(
            count(&db.store, "policy_audit_logs").await,
            21,
            "{}",
            db.name()
        );
        let health = sender.health(std::time::Duration::ZERO);
        assert_eq!(health.status, "ok", "{}", db.name());
        let refused = writer
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed);
        match db.store.pool() {
            Pool::Postgres(p) => {
                assert_eq!(refused, 1);
                let (action, reason): (String, String) = sqlx::query_as(
                    "SELECT action, reason FROM policy_audit_logs WHERE request_id = 'req-7'",
                )
                .fetch_one(p)
                .await
                .unwrap();
                assert_eq!(action, "a\u{FFFD}b");
                assert!(reason.contains("stored altered"), "{reason}");
            }
            // SQLite stores the NUL as given.
            Pool::Sqlite(_) => assert_eq!(refused, 0),
        }
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert!(report.broken.is_none(), "{}: {report:?}", db.name());
        writer.shutdown(std::time::Duration::from_secs(10)).await;
        db.cleanup().await;
    }
}

/// While the database cannot take writes, `health` says `stalled` (after the grace) and
/// names how long; once writes succeed again it is `ok` and nothing was lost.
#[tokio::test]
async fn the_writer_reports_stalled_while_writes_fail() {
    for db in TestDb::both().await {
        let writer = PolicyAuditWriter::spawn(db.store.clone(), AuditWriterOptions::default());
        let sender = writer.sender();
        // Writes fail for a reason that is not the row's: the table is gone for a while.
        exec(
            &db,
            "ALTER TABLE policy_audit_logs RENAME TO policy_audit_logs_away",
        )
        .await
        .unwrap();
        let pending = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.record(decision(1)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        let health = sender.health(std::time::Duration::from_secs(1));
        assert_eq!(health.status, "stalled", "{}: {health:?}", db.name());
        assert!(health.stalled_for_secs.is_some());
        exec(
            &db,
            "ALTER TABLE policy_audit_logs_away RENAME TO policy_audit_logs",
        )
        .await
        .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), pending)
            .await
            .expect("the queued decision is written once the table is back")
            .unwrap()
            .unwrap();
        assert_eq!(sender.health(std::time::Duration::ZERO).status, "ok");
        assert_eq!(
            count(&db.store, "policy_audit_logs").await,
            1,
            "{}",
            db.name()
        );
        writer.shutdown(std::time::Duration::from_secs(10)).await;
        db.cleanup().await;
    }
}
