//! The `aegis` binary end to end: start-up on both databases, configuration errors,
//! graceful shutdown, `config print` and `audit verify`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use aegis_store::testing::TestDb;
use aegis_store::{AuditLog, NewActionAudit};

mod common;

use common::{aegis, free_port, terminate, wait_healthy};

fn serve_and_stop(dir: &Path, database_url: Option<&str>) -> (serde_json::Value, Output, Duration) {
    let port = free_port();
    let mut cmd = aegis(dir);
    cmd.arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"));
    if let Some(url) = database_url {
        cmd.env("AEGIS_DATABASE_URL", url);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (took, output) = terminate(child);
    (health, output, took)
}

#[test]
fn serve_with_no_configuration_uses_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (health, output, took) = serve_and_stop(dir.path(), None);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["components"]["database"]["backend"], "sqlite");
    assert_eq!(health["components"]["executor"]["mode"], "dry-run");
    assert!(dir.path().join("aegis-data/aegis.db").is_file());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_postgres_url_works_the_same() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, path) = (db.url.clone(), dir.path().to_owned());
    let (health, output, took) =
        tokio::task::spawn_blocking(move || serve_and_stop(&path, Some(&url)))
            .await
            .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["components"]["database"]["backend"], "postgres");
    assert!(
        health["components"]["database"]["schema_version"]
            .as_i64()
            .unwrap()
            >= 1
    );
    assert!(!dir.path().join("aegis-data").exists());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    db.cleanup().await;
}

#[test]
fn bad_listen_address_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = aegis(dir.path())
        .arg("serve")
        .env("AEGIS_LISTEN", "nonsense")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AEGIS_LISTEN"), "{stderr}");
    assert!(
        !dir.path().join("aegis-data").exists(),
        "nothing is created before validation"
    );
}

#[test]
fn unreachable_database_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = aegis(dir.path())
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "AEGIS_DATABASE_URL",
            "postgres://aegis:topsecret@127.0.0.1:1/aegis",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AEGIS_DATABASE_URL") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret"), "{stderr}");
}

#[test]
fn config_print_shows_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aegis.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:8080\"\nexecutor_mode = \"dry-run\"\n",
    )
    .unwrap();
    let output = aegis(dir.path())
        .args(["config", "print", "--config"])
        .arg(&file)
        .env(
            "AEGIS_JWT_SECRET",
            "a-very-long-jwt-signing-secret-of-40-bytes",
        )
        .env("AEGIS_ALLOWED_NAMESPACES", "production,staging")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("listen = \"0.0.0.0:8080\""), "{stdout}");
    assert!(
        stdout.contains("allowed_namespaces = [\"production\", \"staging\"]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("jwt_secret = \"***redacted***\""),
        "{stdout}"
    );
    assert!(!stdout.contains("a-very-long"), "{stdout}");
}

fn entry(n: usize) -> NewActionAudit {
    NewActionAudit {
        created_at: None,
        action_id: format!("a{n}"),
        phase: "intent".into(),
        action: "restart_pod".into(),
        namespace: "production".into(),
        target: "api".into(),
        status: "pending".into(),
        actor: Some("ai-engine".into()),
        reason: Some("crash loop".into()),
        details: serde_json::json!({}),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_passes_then_names_a_tampered_row() {
    for db in TestDb::both().await {
        let entries: Vec<_> = (0..5).map(entry).collect();
        db.store.append_action_audit(&entries).await.unwrap();
        let url = db.url.clone();
        let verify = move || {
            let dir = tempfile::tempdir().unwrap();
            aegis(dir.path())
                .args(["audit", "verify"])
                .env("AEGIS_DATABASE_URL", &url)
                .output()
                .unwrap()
        };
        let output = tokio::task::spawn_blocking(verify.clone()).await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(0), "{}: {stdout}", db.name());
        assert!(
            stdout.contains("action_audit_logs: 5 rows, chain intact"),
            "{stdout}"
        );

        // A superuser turns the guard off and edits row 4.
        let tamper = match db.store.backend() {
            aegis_store::Backend::Postgres => vec![
                "ALTER TABLE action_audit_logs DISABLE TRIGGER USER",
                "UPDATE action_audit_logs SET status = 'succeeded' WHERE id = 4",
            ],
            aegis_store::Backend::Sqlite => vec![
                "DROP TRIGGER action_audit_logs_no_update",
                "UPDATE action_audit_logs SET status = 'succeeded' WHERE id = 4",
            ],
        };
        raw_exec(&db, &tamper).await;
        let output = tokio::task::spawn_blocking(verify).await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(1), "{}: {stdout}", db.name());
        assert!(
            stdout.contains("action_audit_logs: BROKEN at row id 4"),
            "{stdout}"
        );
        db.cleanup().await;
    }
}

const AUDIT_KEY: &str = "k1:audit-key-audit-key-audit-key-0123456789";

/// Issue 27: with `audit_key`, a database superuser who edits a row and recomputes plain
/// SHA-256 links from there on (the algorithm is public, the key is not) is caught at that
/// row; `audit verify` needs the key.
#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_catches_a_rewrite_of_the_keyed_chain() {
    use aegis_store::{AuditKey, AuditKeys, AuditTable, AuditValue, record_link};
    for db in TestDb::both().await {
        let keys = AuditKeys::new(vec![AuditKey::parse(AUDIT_KEY).unwrap()], false).unwrap();
        let keyed = db.store.clone().with_audit_keys(keys);
        let entries: Vec<_> = (0..6).map(entry).collect();
        keyed.append_action_audit(&entries).await.unwrap();
        let url = db.url.clone();
        let verify = move |key: Option<&'static str>| {
            let url = url.clone();
            move || {
                let dir = tempfile::tempdir().unwrap();
                let mut cmd = aegis(dir.path());
                cmd.args(["audit", "verify"])
                    .env("AEGIS_DATABASE_URL", &url);
                if let Some(k) = key {
                    cmd.env("AEGIS_AUDIT_KEY", k);
                }
                cmd.output().unwrap()
            }
        };
        let output = tokio::task::spawn_blocking(verify(Some(AUDIT_KEY)))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(0), "{}: {stdout}", db.name());
        assert!(
            stdout.contains("action_audit_logs: 6 rows, chain intact"),
            "{stdout}"
        );
        let output = tokio::task::spawn_blocking(verify(None)).await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(1), "{}: {stdout}", db.name());
        assert!(stdout.contains("needs audit_key"), "{stdout}");

        // The superuser edits row 3 and relinks rows 3..6 by plain SHA-256.
        let guard_off = match db.store.backend() {
            aegis_store::Backend::Postgres => "ALTER TABLE action_audit_logs DISABLE TRIGGER USER",
            aegis_store::Backend::Sqlite => "DROP TRIGGER action_audit_logs_no_update",
        };
        raw_exec(&db, &[guard_off]).await;
        let records = db
            .store
            .audit_records(AuditTable::Action, 1, 6)
            .await
            .unwrap();
        let mut prev = records[1].hash.clone();
        let mut tamper = Vec::new();
        for r in &records[2..] {
            let mut r = r.clone();
            if r.id == 3 {
                r.values[6] = AuditValue::Text("succeeded".into());
            }
            let hash = record_link(AuditTable::Action, &r, &prev, None);
            let AuditValue::Text(status) = &r.values[6] else {
                unreachable!()
            };
            tamper.push(format!(
                "UPDATE action_audit_logs SET status = '{status}', prev_hash = '{prev}', hash = '{hash}' WHERE id = {}",
                r.id
            ));
            prev = hash;
        }
        let tamper: Vec<&str> = tamper.iter().map(String::as_str).collect();
        raw_exec(&db, &tamper).await;
        let output = tokio::task::spawn_blocking(verify(Some(AUDIT_KEY)))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(1), "{}: {stdout}", db.name());
        assert!(
            stdout.contains("action_audit_logs: BROKEN at row id 3"),
            "{}: {stdout}",
            db.name()
        );
        // Clearing the key ids as well changes nothing: unkeyed after keyed is a rewrite.
        raw_exec(
            &db,
            &["UPDATE action_audit_logs SET key_id = NULL WHERE id >= 3"],
        )
        .await;
        let output = tokio::task::spawn_blocking(verify(Some(AUDIT_KEY)))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(1), "{}: {stdout}", db.name());
        assert!(stdout.contains("BROKEN at row id 3"), "{stdout}");
        db.cleanup().await;
    }
}

/// Runs statements on a separate connection, as an operator with a SQL shell would.
async fn raw_exec(db: &TestDb, statements: &[&str]) {
    use sqlx::Connection;
    match db.store.backend() {
        aegis_store::Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            for sql in statements {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
        aegis_store::Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            for sql in statements {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }
}
