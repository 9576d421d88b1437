//! `aegis backup` while `serve` takes writes, `aegis restore` into a fresh database, and
//! `aegis audit verify` on the result — SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{FreshDb, aegis, create_admin, free_port, http, run, terminate, wait_healthy};

const SECRET: &str = "test-secret-test-secret-test-secret-42";
const PASSWORD: &str = "correct horse battery staple";

fn serve(dir: &Path, db: &str) -> (Child, u16) {
    let port = free_port();
    let mut child = aegis(dir)
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", db)
        .env("AEGIS_JWT_SECRET", SECRET)
        .env("AEGIS_RATE_LIMIT_PER_MINUTE", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");
    (child, port)
}

/// Runs `serve` on `source` with evaluate requests (each one a decision audit row) in
/// flight, backs up to `backup` mid-load, and returns the manifest's counts.
fn backup_under_load(dir: &Path, source: &str, backup: &Path) -> serde_json::Value {
    let out = create_admin(dir, source, "ops@example.com", PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (child, port) = serve(dir, source);
    let token = common::login(port, "ops@example.com", PASSWORD);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, done, token) = (stop.clone(), done.clone(), token.clone());
            std::thread::spawn(move || {
                let body = r#"{"action":"scale_up","resource":"cluster:production","type":"self_healing","context":{"role":"service","metadata":{"severity":"high"}}}"#;
                while !stop.load(Ordering::Relaxed) {
                    let (status, _, answer) = http(port, "POST", "/api/v1/policy/evaluate", Some(&token), Some(body)).unwrap();
                    assert_eq!(status, 200, "{answer}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < 50 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stdout, stderr) = run(dir, source, &["backup", "--to", backup.to_str().unwrap()]);
    let during = done.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let after = done.load(Ordering::Relaxed);
    let (_, out) = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("policy_audit_logs") && stdout.contains("intact")
            || stdout.contains("pg_restore --list ok"),
        "{stdout}"
    );
    assert!(
        after > during,
        "writes went on after the backup ({during} → {after})"
    );
    let manifest_path = format!("{}.manifest.json", backup.display());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    let decisions = manifest["counts"]["policy_audit_logs"].as_i64().unwrap();
    assert!(decisions >= 50, "{manifest}");
    assert!(
        decisions < after as i64 + 10,
        "the backup holds only what was there when it ran"
    );
    // A second backup to the same place needs --force.
    let (code, _, stderr) = run(dir, source, &["backup", "--to", backup.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--force"), "{stderr}");
    manifest
}

fn restore_and_verify(dir: &Path, target: &str, backup: &Path, manifest: &serde_json::Value) {
    let (code, stdout, stderr) = run(
        dir,
        target,
        &["restore", "--from", backup.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("row counts match the backup manifest"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(dir, target, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("chain intact"), "{stdout}");
    let rows = manifest["counts"]["policy_audit_logs"].as_i64().unwrap();
    assert!(
        stdout.contains(&format!("policy_audit_logs: {rows} rows, chain intact")),
        "{stdout}"
    );
    // Restoring over live data is refused.
    let (code, _, stderr) = run(
        dir,
        target,
        &["restore", "--from", backup.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn sqlite_backup_under_load_restores_into_a_fresh_directory() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("sqlite://{}", dir.path().join("live/aegis.db").display());
    let backup = dir.path().join("backups/aegis-backup.db");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let manifest = backup_under_load(dir.path(), &source, &backup);
    assert_eq!(manifest["backend"], "sqlite");
    let target = format!("sqlite://{}", dir.path().join("fresh/aegis.db").display());
    restore_and_verify(dir.path(), &target, &backup, &manifest);
    // A damaged backup is refused by its checksum.
    let mut bytes = std::fs::read(&backup).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&backup, bytes).unwrap();
    let other = format!("sqlite://{}", dir.path().join("other/aegis.db").display());
    let (code, _, stderr) = run(
        dir.path(),
        &other,
        &["restore", "--from", backup.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("checksum"), "{stderr}");
}

#[test]
fn postgres_backup_under_load_restores_into_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let source = FreshDb::new("src");
    let target = FreshDb::new("dst");
    let backup = dir.path().join("aegis.pgdump");
    let manifest = backup_under_load(dir.path(), &source.url, &backup);
    assert_eq!(manifest["backend"], "postgres");
    restore_and_verify(dir.path(), &target.url, &backup, &manifest);
}

/// Kills the server when the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `PUT /bucket` on moto until it answers 2xx (it accepts unsigned requests).
fn create_bucket(port: u16, bucket: &str) {
    use std::io::{Read, Write};
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let req = format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).is_ok() {
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 2") {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto did not come up on port {port}");
}

#[test]
fn backup_to_and_restore_from_s3_and_file_urls() {
    let python = std::env::var("AEGIS_TEST_PYTHON")
        .unwrap_or_else(|_| "/var/tmp/aegis-venv/bin/python".into());
    let moto = Path::new(&python).with_file_name("moto_server");
    assert!(
        moto.exists(),
        "{} is missing (pip install 'moto[server]'; scripts/test installs it)",
        moto.display()
    );
    let port = free_port();
    let _server = Server(
        std::process::Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    create_bucket(port, "aegis-backups");
    let dir = tempfile::tempdir().unwrap();
    let source = format!("sqlite://{}", dir.path().join("live/aegis.db").display());
    let out = create_admin(dir.path(), &source, "ops@example.com", PASSWORD);
    assert!(out.status.success());
    let endpoint = format!("http://127.0.0.1:{port}");
    let s3 = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let folder = format!("file://{}/remote/aegis.db", dir.path().display());
    for (url, target) in [
        ("s3://aegis-backups/nightly/aegis.db", "from-s3"),
        (folder.as_str(), "from-file"),
    ] {
        let mut cmd = aegis(dir.path());
        cmd.args(["backup", "--to", url])
            .env("AEGIS_DATABASE_URL", &source)
            .envs(s3);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("uploaded to {url}")));
        let fresh = format!(
            "sqlite://{}",
            dir.path().join(format!("{target}/aegis.db")).display()
        );
        let mut cmd = aegis(dir.path());
        cmd.args(["restore", "--from", url])
            .env("AEGIS_DATABASE_URL", &fresh)
            .envs(s3);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{url}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("row counts match the backup manifest"),
            "{stdout}"
        );
        assert!(stdout.contains("users 1"), "{stdout}");
    }
    assert!(dir.path().join("remote/aegis.db.manifest.json").is_file());
}

/// Issue 27, attack 10: a password in the database URL (`?password=`, or in the user part)
/// is redacted by `aegis config print` and reaches `pg_dump` through `PGPASSWORD`, never
/// its command line, which every user of the machine can read in `ps`. A `pg_dump` in
/// front of the real one records what it was given.
#[test]
fn a_database_password_never_reaches_a_command_line_or_the_printed_config() {
    const PG_SECRET: &str = "attack-table-pg-secret-4711";
    let dir = tempfile::tempdir().unwrap();
    let source = FreshDb::new("pw");
    let url = format!("{}?password={PG_SECRET}", source.url);
    let printed = aegis(dir.path())
        .args(["config", "print"])
        .env("AEGIS_DATABASE_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.status.success(), "{stdout}");
    assert!(!stdout.contains(PG_SECRET), "{stdout}");
    assert!(stdout.contains("password=***"), "{stdout}");

    // The schema, then a backup through the recording pg_dump.
    let (code, _, err) = run(dir.path(), &url, &["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v pg_dump"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("pg_dump.log");
    let wrapper = bin.join("pg_dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"argv: $*\" >> '{log}'\necho \"PGPASSWORD: $PGPASSWORD\" >> '{log}'\nexec {real} \"$@\"\n",
            log = log.display(),
            real = real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let backup = dir.path().join("aegis.pgdump");
    let out = aegis(dir.path())
        .args(["backup", "--to"])
        .arg(&backup)
        .env("AEGIS_DATABASE_URL", &url)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = std::fs::read_to_string(&log).unwrap();
    let argv = recorded.lines().find(|l| l.starts_with("argv:")).unwrap();
    assert!(!argv.contains(PG_SECRET), "{recorded}");
    assert!(
        recorded.contains(&format!("PGPASSWORD: {PG_SECRET}")),
        "{recorded}"
    );
}
