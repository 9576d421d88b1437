//! Retention: audit rows leave the database only once a verified archive holds them, the
//! chain still verifies afterwards, and old prediction history goes — SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use aegis_store::{AuditLog, NewPolicyAudit};
use common::{FreshDb, run_with as run};

async fn raw(url: &str, sql: &str) -> Result<u64, String> {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut c)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut c)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }
}

async fn retention(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = common::populate_audit(url).await;
    // Nothing is archived yet: the database refuses to delete an audit row.
    let refused = raw(url, "DELETE FROM policy_audit_logs WHERE id = 1")
        .await
        .unwrap_err();
    assert!(
        refused.contains("only rows in a verified archive may be deleted"),
        "{refused}"
    );
    // Two old predictions and a fresh one.
    for (days, n) in [(40, 1), (35, 2), (0, 3)] {
        let at = (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339();
        let sql = format!(
            "INSERT INTO prediction_history (created_at, detector, model_version, entity, score, is_anomaly, features) \
             VALUES ('{at}', 'isolation_forest', 'v', 'e{n}', 0.5, false, '{{}}')"
        );
        raw(url, &sql).await.unwrap();
    }
    store.close().await;

    let archive = dir.path().join("archive").display().to_string();
    let env = [
        ("AEGIS_AUDIT_EXPORT_URL", archive.as_str()),
        ("AEGIS_RETENTION_AUDIT_DAYS", "1"),
    ];
    let (code, stdout, stderr) = run(dir.path(), url, &env, &["retention", "run"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.matches("exported ").count(), 5, "{stdout}");
    assert!(stdout.contains("prediction rows deleted: 2"), "{stdout}");
    // Every row is archived and old, but the newest of each chain stays for the next append.
    assert!(
        stdout.contains("policy_audit_logs rows deleted: 5"),
        "{stdout}"
    );
    assert!(
        stdout.contains("action_audit_logs rows deleted: 1"),
        "{stdout}"
    );

    // The chain resumes after the archive: verify passes, and so do new rows.
    let store = aegis_store::Store::connect(url, &aegis_store::StoreOptions::default())
        .await
        .unwrap();
    store
        .append_policy_audit(&[NewPolicyAudit {
            created_at: None,
            request_id: None,
            policy_type: "self_healing".into(),
            action: "restart_pod".into(),
            resource: "cluster:production".into(),
            user_id: None,
            role: Some("service".into()),
            decision: "DENY".into(),
            policy_id: None,
            policy_name: None,
            reason: "after retention".into(),
            context: serde_json::json!({}),
            evaluated_in_us: 1,
        }])
        .await
        .unwrap();
    store.close().await;
    let (code, stdout, stderr) = run(dir.path(), url, &[], &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("policy_audit_logs: 2 rows, chain intact"),
        "{stdout}"
    );
    let (code, stdout, _) = run(
        dir.path(),
        url,
        &[],
        &["audit", "verify-archive", "--from", &archive],
    );
    assert_eq!(code, 0, "{stdout}");
    // A second pass has nothing new to export (today's row waits for tomorrow).
    let (code, stdout, _) = run(dir.path(), url, &env, &["retention", "run"]);
    assert_eq!(code, 0);
    assert!(!stdout.contains("exported "), "{stdout}");
    // Rows not in an archive still cannot be deleted, nor can archives be changed.
    assert!(raw(url, "DELETE FROM policy_audit_logs").await.is_err());
    assert!(raw(url, "DELETE FROM audit_archives").await.is_err());
    assert!(
        raw(url, "UPDATE policy_audit_logs SET reason = 'x'")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_retention_deletes_only_archived_rows_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    retention(&format!(
        "sqlite://{}",
        dir.path().join("aegis.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_retention_deletes_only_archived_rows_and_the_chain_still_verifies() {
    let db = FreshDb::new("retention");
    retention(&db.url).await;
}
