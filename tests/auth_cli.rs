//! Accounts and shared rate limits as operators meet them: `aegis user create`, the
//! bootstrap admin, and two `aegis serve` processes sharing one Redis rate-limit budget.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::process::{Child, Stdio};

use common::{aegis, create_admin, free_port, http, terminate, wait_healthy};

const SECRET: &str = "test-secret-test-secret-test-secret-42";
const PASSWORD: &str = "correct horse battery staple";

fn serve(dir: &std::path::Path, db: &str, extra: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let mut cmd = aegis(dir);
    cmd.arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", db)
        .env("AEGIS_JWT_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");
    (child, port)
}

fn user_create(
    dir: &std::path::Path,
    db: &str,
    email: &str,
    password: &str,
) -> std::process::Output {
    create_admin(dir, db, email, password)
}

fn login(port: u16, email: &str) -> String {
    common::login(port, email, PASSWORD)
}

#[test]
fn user_create_makes_an_admin_who_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let out = user_create(dir.path(), &db, "Root@Example.com", PASSWORD);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created root@example.com"));
    let again = user_create(dir.path(), &db, "root@example.com", PASSWORD);
    assert_eq!(again.status.code(), Some(1));
    let weak = user_create(dir.path(), &db, "other@example.com", "short");
    assert_eq!(weak.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 12 characters"));

    let (child, port) = serve(dir.path(), &db, &[]);
    let token = login(port, "root@example.com");
    let (status, _, body) = http(port, "GET", "/api/v1/users", Some(&token), None).unwrap();
    assert_eq!(status, 200, "{body}");
    terminate(child);
}

#[test]
fn bootstrap_admin_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let (child, port) = serve(
        dir.path(),
        &db,
        &[
            ("AEGIS_ADMIN_EMAIL", "ops@example.com"),
            ("AEGIS_ADMIN_PASSWORD", PASSWORD),
        ],
    );
    let token = login(port, "ops@example.com");
    let (status, _, me) = http(port, "GET", "/api/v1/users/me", Some(&token), None).unwrap();
    assert_eq!(status, 200);
    assert!(me.contains("\"admin\""), "{me}");
    terminate(child);
}

#[test]
fn two_processes_share_one_redis_rate_limit_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let out = user_create(dir.path(), &db, "root@example.com", PASSWORD);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let redis = std::env::var("AEGIS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let settings = [
        ("AEGIS_REDIS_URL", redis.as_str()),
        ("AEGIS_RATE_LIMIT_PER_MINUTE", "6"),
    ];
    let (a, port_a) = serve(dir.path(), &db, &settings);
    let (b, port_b) = serve(dir.path(), &db, &settings);
    // A fresh user id makes the budget key unique to this run.
    let token = login(port_a, "root@example.com");
    // Stay inside one one-minute window.
    while chrono::Utc::now().timestamp() % 60 >= 50 {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let mut statuses = Vec::new();
    for i in 0..10 {
        let port = if i % 2 == 0 { port_a } else { port_b };
        let (status, head, _) = http(port, "GET", "/api/v1/users/me", Some(&token), None).unwrap();
        if status == 429 {
            assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
        }
        statuses.push(status);
    }
    // Six in total pass, whichever process served them; in-memory limits would pass all ten.
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 429, 429, 429, 429],
        "{statuses:?}"
    );
    terminate(a);
    terminate(b);
}
