//! `aegis audit export` to Parquet by day and `aegis audit verify-archive`, on SQLite and
//! PostgreSQL: the files read back with the same rows, verify on their own, and tampering
//! is named.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::path::Path;
use std::sync::Arc;

use aegis_store::AuditTable;
use arrow_array::{Array, RecordBatch, StringArray};
use common::{FreshDb, run};

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn day_file(root: &Path, table: &str, day: &str) -> std::path::PathBuf {
    let dir = root.join(format!("audit/{table}/day={day}"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

async fn export_and_verify(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = common::populate_audit(url).await;
    let archive = dir.path().join("archive");
    let to = archive.display().to_string();
    let (code, stdout, stderr) = run(
        dir.path(),
        url,
        &[
            "audit",
            "export",
            "--since",
            "2026-11-01",
            "--until",
            "2026-12-01",
            "--to",
            &to,
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("exported 5 files"), "{stdout}");
    // Day 21 of the decisions: rows 3..=5, the same as in the database.
    let file = day_file(&archive, "policy_audit_logs", "2026-11-21");
    let batches = read_parquet(&file);
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 3);
    let db_rows = store.audit_records(AuditTable::Policy, 3, 5).await.unwrap();
    let hashes = batch
        .column_by_name("hash")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let reasons = batch
        .column_by_name("reason")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let request_ids = batch
        .column_by_name("request_id")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    for (i, r) in db_rows.iter().enumerate() {
        assert_eq!(hashes.value(i), r.hash);
        assert_eq!(reasons.value(i), format!("decision {}", i + 2));
        assert_eq!(request_ids.is_null(i), !(i + 2).is_multiple_of(2));
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{}.manifest.json", file.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["prev_hash"], db_rows[0].prev_hash);
    assert_eq!(manifest["last_hash"], db_rows[2].hash);
    let (code, stdout, _) = run(dir.path(), url, &["audit", "verify-archive", "--from", &to]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("5 files, 8 rows, every chain piece intact"),
        "{stdout}"
    );

    // A later range verifies on its own: its first file starts from the recorded head.
    let later = dir.path().join("later").display().to_string();
    let (code, stdout, stderr) = run(
        dir.path(),
        url,
        &[
            "audit",
            "export",
            "--since",
            "2026-11-21T00:00:00Z",
            "--to",
            &later,
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, _) = run(
        dir.path(),
        url,
        &["audit", "verify-archive", "--from", &later],
    );
    assert_eq!(code, 0, "{stdout}");

    // Changing a value and re-writing the file (and its checksum) breaks the chain.
    let mut columns: Vec<Arc<dyn Array>> = batch.columns().to_vec();
    let idx = batch.schema().index_of("reason").unwrap();
    columns[idx] = Arc::new(StringArray::from(vec![
        "decision 2",
        "nothing happened",
        "decision 4",
    ]));
    let forged = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, forged.schema(), None).unwrap();
    w.write(&forged).unwrap();
    w.close().unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let mut m = manifest.clone();
    m["sha256"] = serde_json::Value::from(sha_hex(&bytes));
    std::fs::write(
        format!("{}.manifest.json", file.display()),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    let (code, stdout, _) = run(dir.path(), url, &["audit", "verify-archive", "--from", &to]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("row 4: hash does not match"), "{stdout}");
    // A flipped byte is caught by the checksum.
    let mut damaged = bytes.clone();
    damaged[10] ^= 0xFF;
    std::fs::write(&file, &damaged).unwrap();
    let (code, stdout, _) = run(dir.path(), url, &["audit", "verify-archive", "--from", &to]);
    assert_eq!(code, 1);
    assert!(stdout.contains("checksum"), "{stdout}");
    store.close().await;
}

const AUDIT_KEY: &str = "k1:audit-key-audit-key-audit-key-0123456789";

/// Issue 27: with `audit_key`, archive manifests are signed and the rows in the files carry
/// their key id; `verify-archive` needs the key, and a manifest edited by hand (even with
/// its checksum recomputed) no longer verifies.
async fn keyed_export_and_verify(url: &str) {
    use aegis_store::{AuditKey, AuditKeys};
    let dir = tempfile::tempdir().unwrap();
    let keys = AuditKeys::new(vec![AuditKey::parse(AUDIT_KEY).unwrap()], false).unwrap();
    let store = common::populate_audit_with(url, Some(keys)).await;
    let to = dir.path().join("archive").display().to_string();
    let env = [("AEGIS_AUDIT_KEY", AUDIT_KEY)];
    let args = [
        "audit",
        "export",
        "--since",
        "2026-11-01",
        "--until",
        "2026-12-01",
        "--to",
        &to,
    ];
    let (code, stdout, stderr) = common::run_with(dir.path(), url, &env, &args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let file = day_file(
        &dir.path().join("archive"),
        "policy_audit_logs",
        "2026-11-21",
    );
    let key_ids = read_parquet(&file)[0]
        .column_by_name("key_id")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone();
    assert_eq!(key_ids.value(0), "k1");
    let manifest_path = format!("{}.manifest.json", file.display());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["key_id"], "k1");
    assert_eq!(manifest["mac"].as_str().map(str::len), Some(64));
    let verify = ["audit", "verify-archive", "--from", &to];
    let (code, stdout, _) = common::run_with(dir.path(), url, &env, &verify);
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = run(dir.path(), url, &verify);
    assert_eq!(code, 1, "keyed rows need the key: {stdout}");
    assert!(stdout.contains("needs audit_key"), "{stdout}");
    let mut edited = manifest.clone();
    edited["day"] = serde_json::Value::from("2026-11-22");
    std::fs::write(&manifest_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let (code, stdout, _) = common::run_with(dir.path(), url, &env, &verify);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("signature does not match"), "{stdout}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_archives_are_signed_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aegis.db").display());
    keyed_export_and_verify(&url).await;
    let db = FreshDb::new("keyed_export");
    keyed_export_and_verify(&db.url).await;
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_audit_exports_by_day_and_verifies_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aegis.db").display());
    export_and_verify(&url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_audit_exports_by_day_and_verifies_on_its_own() {
    let db = FreshDb::new("export");
    export_and_verify(&db.url).await;
}
