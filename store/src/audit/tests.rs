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
                spool_dir: None,
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

fn keys(ids: &[&str], keyed_only: bool) -> AuditKeys {
    let keys = ids
        .iter()
        .map(|id| {
            AuditKey::new(
                id,
                format!("{id}-secret-0123456789abcdef0123456789").as_bytes(),
            )
            .unwrap()
        })
        .collect();
    AuditKeys::new(keys, keyed_only).unwrap()
}

/// Plays the database superuser who knows the (public) algorithm but not the key: edits
/// row `from`'s reason, then recomputes plain SHA-256 links from there to the end, keeping
/// or clearing `key_id`.
async fn rewrite_from(db: &TestDb, from: i64, clear_key: bool) {
    let last = count(&db.store, "policy_audit_logs").await;
    let mut records = db
        .store
        .audit_records(AuditTable::Policy, 1, last)
        .await
        .unwrap();
    let mut prev = if from == 1 {
        aegis_core::GENESIS_HASH.to_owned()
    } else {
        records[(from - 2) as usize].hash.clone()
    };
    for r in records.iter_mut().skip((from - 1) as usize) {
        if r.id == from {
            r.values[10] = AuditValue::Text("nothing happened here".into());
        }
        let hash = record_link(AuditTable::Policy, r, &prev, None);
        let key = if clear_key { "NULL" } else { "key_id" };
        exec(
            db,
            &format!(
                "UPDATE policy_audit_logs SET reason = 'nothing happened here', prev_hash = '{prev}', hash = '{hash}', key_id = {key} WHERE id = {} {}",
                r.id,
                if r.id == from { "" } else { "AND 1 = 1" }
            ),
        )
        .await
        .unwrap();
        // Only row `from` had its reason changed; restore the others' reason.
        if r.id != from {
            let AuditValue::Text(reason) = &r.values[10] else {
                unreachable!()
            };
            let sql = format!(
                "UPDATE policy_audit_logs SET reason = '{}' WHERE id = {}",
                reason.replace('\'', "''"),
                r.id
            );
            exec(db, &sql).await.unwrap();
        }
        prev = hash;
    }
}

/// Issue 27: the keyed chain. Rows signed under `audit_key` verify with it and only with
/// it; a superuser who edits a row and recomputes plain SHA-256 links from there on is
/// caught at that row whether the key id is kept or cleared; a rewrite of the whole chain
/// is caught once `audit_keyed_only` is set.
#[tokio::test]
async fn the_keyed_chain_needs_the_key_to_rewrite() {
    for db in TestDb::both().await {
        let store = db.store.clone().with_audit_keys(keys(&["k1"], false));
        let decisions: Vec<_> = (0..5).map(decision).collect();
        store.append_policy_audit(&decisions).await.unwrap();
        let report = store.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(
            (report.rows_checked, report.unkeyed_rows, report.broken),
            (5, 0, None),
            "{}",
            db.name()
        );
        assert_eq!(
            store.audit_tail_key(AuditTable::Policy).await.unwrap(),
            Some(Some("k1".into()))
        );
        // Without the key, or with another one, a keyed chain does not verify.
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert!(report.broken.unwrap().reason.contains("needs audit_key"));
        let other = db.store.clone().with_audit_keys(keys(&["k2"], false));
        let report = other.verify_audit(AuditTable::Policy).await.unwrap();
        assert!(report.broken.unwrap().reason.contains("not configured"));
        // Rotation: k2 signs, k1 still verifies the rows it signed.
        let rotated = db.store.clone().with_audit_keys(keys(&["k2", "k1"], false));
        rotated.append_policy_audit(&[decision(5)]).await.unwrap();
        let report = rotated.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(
            (report.rows_checked, report.broken),
            (6, None),
            "{}",
            db.name()
        );

        disable_guard(&db, "policy_audit_logs").await;
        rewrite_from(&db, 3, false).await;
        let report = rotated.verify_audit(AuditTable::Policy).await.unwrap();
        let broken = report.broken.expect("a recomputed row must not verify");
        assert_eq!(broken.id, 3, "{}: {}", db.name(), broken.reason);
        assert!(
            broken.reason.contains("under audit key `k1`"),
            "{}",
            broken.reason
        );
        rewrite_from(&db, 3, true).await;
        let report = rotated.verify_audit(AuditTable::Policy).await.unwrap();
        let broken = report.broken.expect("a downgraded row must not verify");
        assert_eq!(broken.id, 3, "{}: {}", db.name(), broken.reason);
        assert!(
            broken.reason.contains("unkeyed rows after keyed ones"),
            "{}",
            broken.reason
        );
        // The whole chain rewritten unkeyed looks like a chain from before the keys...
        rewrite_from(&db, 1, true).await;
        let report = rotated.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(
            (report.broken, report.unkeyed_rows),
            (None, 6),
            "{}",
            db.name()
        );
        // ...unless every row must be keyed.
        let strict = db.store.clone().with_audit_keys(keys(&["k2", "k1"], true));
        let report = strict.verify_audit(AuditTable::Policy).await.unwrap();
        let broken = report.broken.expect("keyed_only refuses unkeyed rows");
        assert_eq!(broken.id, 1);
        assert!(
            broken.reason.contains("audit_keyed_only"),
            "{}",
            broken.reason
        );
        db.cleanup().await;
    }
}

/// An existing unkeyed chain keeps verifying once a key is set, and the first keyed row
/// guards it: rewriting an unkeyed row breaks the keyed row after it.
#[tokio::test]
async fn an_unkeyed_prefix_keeps_verifying_and_is_guarded_by_the_first_keyed_row() {
    for db in TestDb::both().await {
        let decisions: Vec<_> = (0..3).map(decision).collect();
        db.store.append_policy_audit(&decisions).await.unwrap();
        let keyed = db.store.clone().with_audit_keys(keys(&["k1"], false));
        keyed
            .append_policy_audit(&[decision(3), decision(4)])
            .await
            .unwrap();
        let report = keyed.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(
            (report.rows_checked, report.unkeyed_rows, report.broken),
            (5, 3, None),
            "{}",
            db.name()
        );
        disable_guard(&db, "policy_audit_logs").await;
        // Rewriting row 2 and relinking 2..3 by SHA-256: row 4's MAC covers row 3's old hash.
        let records = db
            .store
            .audit_records(AuditTable::Policy, 1, 3)
            .await
            .unwrap();
        let mut prev = records[0].hash.clone();
        for r in &records[1..] {
            let mut r = r.clone();
            r.values[10] = AuditValue::Text("rewritten".into());
            let hash = record_link(AuditTable::Policy, &r, &prev, None);
            exec(&db, &format!("UPDATE policy_audit_logs SET reason = 'rewritten', prev_hash = '{prev}', hash = '{hash}' WHERE id = {}", r.id)).await.unwrap();
            prev = hash;
        }
        let report = keyed.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(report.broken.map(|b| b.id), Some(4), "{}", db.name());
        db.cleanup().await;
    }
}

/// Archive records are signed: with keys, an unsigned record (anyone with database access
/// can insert one) neither lets retention delete rows nor anchors `audit verify`.
#[tokio::test]
async fn unsigned_archive_records_are_not_trusted_with_keys() {
    for db in TestDb::both().await {
        let keyed = db.store.clone().with_audit_keys(keys(&["k1"], false));
        let decisions: Vec<_> = (0..4).map(decision).collect();
        keyed.append_policy_audit(&decisions).await.unwrap();
        let records = keyed.audit_records(AuditTable::Policy, 1, 2).await.unwrap();
        let forged = AuditArchive {
            audit_table: "policy_audit_logs".into(),
            first_id: 1,
            last_id: 2,
            prev_hash: aegis_core::GENESIS_HASH.into(),
            last_hash: records[1].hash.clone(),
            location: "file:///nowhere".into(),
            sha256: "0".repeat(64),
            verified_at: chrono::Utc::now(),
            key_id: None,
            mac: None,
        };
        // Recorded through a store without keys: unsigned, as a forger would insert it.
        db.store.record_archive(&forged).await.unwrap();
        let future = chrono::Utc::now() + chrono::Duration::days(1);
        assert_eq!(
            keyed.prune_audit(AuditTable::Policy, future).await.unwrap(),
            0,
            "{}",
            db.name()
        );
        // Signed by the keyed store: trusted.
        keyed.record_archive(&forged).await.unwrap();
        let archives = keyed.audit_archives(AuditTable::Policy).await.unwrap();
        assert_eq!(
            archives
                .iter()
                .filter(|a| a.trusted(keyed.audit_keys(), false))
                .count(),
            1
        );
        let keyed_only = db.store.clone().with_audit_keys(keys(&["k1"], true));
        assert!(!archives[0].trusted(keyed_only.audit_keys(), true));
        assert!(
            archives[0].trusted(keyed.audit_keys(), true),
            "an unsigned record over unkeyed rows"
        );
        assert_eq!(
            keyed.prune_audit(AuditTable::Policy, future).await.unwrap(),
            2,
            "{}",
            db.name()
        );
        let report = keyed.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!(
            (report.rows_checked, report.broken),
            (2, None),
            "{}",
            db.name()
        );
        db.cleanup().await;
    }
}

use crate::PolicyStore as _;

/// Issue 27: a shutdown while the database cannot take writes drains or spools, never
/// drops. The decisions still queued past the deadline go to a spool file; the next
/// writer writes them first (with their own times) and removes the file.
#[tokio::test]
async fn a_shutdown_during_an_outage_spools_and_the_next_start_writes_the_spool() {
    for db in TestDb::both().await {
        let spool = tempfile::tempdir().unwrap();
        let options = AuditWriterOptions {
            spool_dir: Some(spool.path().to_path_buf()),
            ..AuditWriterOptions::default()
        };
        let writer = PolicyAuditWriter::spawn(db.store.clone(), options.clone());
        let sender = writer.sender();
        sender.record(decision(0)).await.unwrap();
        exec(
            &db,
            "ALTER TABLE policy_audit_logs RENAME TO policy_audit_logs_away",
        )
        .await
        .unwrap();
        for n in 1..=5 {
            sender.record_queued(decision(n)).await.unwrap();
        }
        drop(sender);
        let written = writer.shutdown(std::time::Duration::from_millis(500)).await;
        assert_eq!(written, 1, "{}", db.name());
        let files: Vec<_> = std::fs::read_dir(spool.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "{}: one spool file", db.name());
        exec(
            &db,
            "ALTER TABLE policy_audit_logs_away RENAME TO policy_audit_logs",
        )
        .await
        .unwrap();

        let writer = PolicyAuditWriter::spawn(db.store.clone(), options);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while writer
            .stats()
            .recovered
            .load(std::sync::atomic::Ordering::Relaxed)
            < 5
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: the spool was not written",
                db.name()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        writer.shutdown(std::time::Duration::from_secs(10)).await;
        assert_eq!(
            count(&db.store, "policy_audit_logs").await,
            6,
            "{}",
            db.name()
        );
        assert_eq!(
            std::fs::read_dir(spool.path()).unwrap().count(),
            0,
            "the file is gone"
        );
        let rows = db
            .store
            .list_policy_audit(&crate::PolicyAuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("decision 5")),
            "{reasons:?}"
        );
        let report = db.store.verify_audit(AuditTable::Policy).await.unwrap();
        assert_eq!((report.rows_checked, report.broken), (6, None));
        db.cleanup().await;
    }
}
