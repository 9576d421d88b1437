//! Dependency faults against a running `aegis serve`:
//! - PostgreSQL gone for 30 s under load (a proxy in front of it is cut): ingest and scoring
//!   go on, decisions are answered or refused with 503 (never a 500), and every answered
//!   decision is in the audit trail afterwards, whose chain verifies;
//! - Redis gone: rate limits fall back to memory, which still enforces them, and the
//!   fallback is logged once, not per request.
//!
//! The Kubernetes API answering 500 or hanging is in `executor/tests/actions.rs` and
//! `api/src/executor_tests.rs`; Loki down in `api/src/loki_outbox.rs`.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_ingest::remote_write::{SeriesData, encode_v1};
use common::{FreshDb, Proxy, aegis, free_port, http_get, http_raw, terminate, wait_healthy};
use serde_json::json;

const JWT_SECRET: &str = "dependency-faults-jwt-secret-0123456789abcdef";
const INGEST_TOKEN: &str = "dependency-faults-ingest-token-0123456789";
const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple 44";
const OUTAGE: Duration = Duration::from_secs(30);

fn serve(dir: &Path, db: &str, extra: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let (out, err) = common::server_log(dir);
    let mut child = aegis(dir)
        .arg("serve")
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AEGIS_DATABASE_URL", db)
        .env("AEGIS_JWT_SECRET", JWT_SECRET)
        .env("AEGIS_INGEST_TOKEN", INGEST_TOKEN)
        .env("AEGIS_ADMIN_EMAIL", ADMIN)
        .env("AEGIS_ADMIN_PASSWORD", PASSWORD)
        .envs(extra.iter().copied())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let (status, body) = wait_healthy(&mut child, port);
    assert_eq!(status, 200, "{body}");
    (child, port)
}

/// The sum of every series of `name` on `/metrics`.
fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = http_get(port, "/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Default)]
struct Seen {
    /// Statuses of decisions asked while the database was away, and while it was there.
    during: BTreeMap<u16, u64>,
    outside: BTreeMap<u16, u64>,
    answered: BTreeSet<String>,
    /// Statuses of Loki pushes while the database was away.
    pushes_during: BTreeMap<u16, u64>,
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_gone_for_30_seconds_under_load() {
    let fresh = FreshDb::new("outage");
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap());
    let proxied = fresh
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(proxied, fresh.url, "the test database is on 127.0.0.1:5432");
    let dir = tempfile::tempdir().unwrap();
    let (child, port) = serve(
        dir.path(),
        &proxied,
        &[
            ("AEGIS_RATE_LIMIT_PER_MINUTE", "1000000"),
            // A short warm-up, so the engine scores within seconds (as in engine_e2e).
            ("AEGIS_ENGINE_TICK_MS", "250"),
            ("AEGIS_ENGINE_RESOLUTION_SECS", "1"),
            ("AEGIS_ENGINE_WINDOW_SECS", "10"),
            ("AEGIS_ENGINE_BASELINE_SECS", "60"),
            ("AEGIS_ENGINE_WARMUP_SECS", "8"),
            ("AEGIS_ENGINE_WARMUP_ROWS", "16"),
        ],
    );
    let token = common::login(port, ADMIN, PASSWORD);

    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let decisions = {
        let (outage, stop, seen) = (outage.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let auth = format!("Bearer {token}");
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let id = format!("outage-{n}");
                let body = json!({"action": "scale_up", "resource": "cluster:production",
                    "type": "self_healing", "context": {"role": "service", "metadata": {"n": n}}})
                .to_string();
                let during = outage.load(Ordering::SeqCst);
                let (status, _, answer) = http_raw(
                    port,
                    "POST",
                    "/api/v1/policy/evaluate",
                    &[
                        ("Content-Type", "application/json"),
                        ("Authorization", &auth),
                        ("X-Request-Id", &id),
                    ],
                    body.as_bytes(),
                )
                .unwrap();
                let mut s = seen.lock().unwrap();
                *if during {
                    &mut s.during
                } else {
                    &mut s.outside
                }
                .entry(status)
                .or_default() += 1;
                match status {
                    200 => {
                        s.answered.insert(id);
                    }
                    503 => {
                        assert!(answer.contains("retry"), "{answer}");
                        drop(s);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    other => panic!("decision {n}: {other} {answer}"),
                }
            }
        })
    };
    let pushes = Arc::new(AtomicU64::new(0));
    let ingest = {
        let (outage, stop, seen, pushes) =
            (outage.clone(), stop.clone(), seen.clone(), pushes.clone());
        std::thread::spawn(move || {
            let auth = format!("Bearer {INGEST_TOKEN}");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                let values: Vec<_> = (0..10)
                    .map(|k| {
                        json!([
                            (ns + k).to_string(),
                            format!("level=info msg=\"line {n}.{k}\"")
                        ])
                    })
                    .collect();
                let body = json!({"streams": [{"stream": {"namespace": "production", "app": "api"},
                    "values": values}]})
                .to_string();
                let (status, _, _) = http_raw(
                    port,
                    "POST",
                    "/loki/api/v1/push",
                    &[
                        ("Content-Type", "application/json"),
                        ("Authorization", &auth),
                    ],
                    body.as_bytes(),
                )
                .unwrap();
                if outage.load(Ordering::SeqCst) {
                    *seen
                        .lock()
                        .unwrap()
                        .pushes_during
                        .entry(status)
                        .or_default() += 1;
                }
                if status == 204 {
                    pushes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Metrics for the engine: CPU of three pods of production/api, remote-written every
    // 250 ms with a little noise.
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let auth = format!("Bearer {INGEST_TOKEN}");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let now = chrono::Utc::now().timestamp_millis();
                let series: Vec<SeriesData> = (0..3)
                    .map(|pod| SeriesData {
                        labels: vec![
                            ("__name__".into(), "cpu_usage".into()),
                            ("container".into(), "api".into()),
                            ("namespace".into(), "production".into()),
                            ("pod".into(), format!("api-7d4b9c8f6a-x2kq{pod}")),
                        ],
                        samples: vec![(now, 0.3 + ((n * 7 + pod) % 11) as f64 / 200.0)],
                    })
                    .collect();
                let body = snap::raw::Encoder::new()
                    .compress_vec(&encode_v1(&series))
                    .unwrap();
                let _ = http_raw(
                    port,
                    "POST",
                    "/api/v1/write",
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/x-protobuf"),
                        ("Content-Encoding", "snappy"),
                        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                    ],
                    &body,
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    // Wait until the engine scores, then take the database away.
    let warming = Instant::now();
    while metric(port, "aegis_engine_rows_scored_total") == 0.0 {
        assert!(
            warming.elapsed() < Duration::from_secs(60),
            "the engine never scored"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lines_before = metric(port, "aegis_ingest_log_lines_total");
    let scored_before = metric(port, "aegis_engine_rows_scored_total");
    outage.store(true, Ordering::SeqCst);
    proxy.cut();
    let cut_at = Instant::now();
    let mut health_during = BTreeSet::new();
    while cut_at.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_secs(2)).await;
        health_during.insert(http_get(port, "/health").map(|(s, _)| s).unwrap_or(0));
    }
    let lines_during = metric(port, "aegis_ingest_log_lines_total") - lines_before;
    let scored_during = metric(port, "aegis_engine_rows_scored_total") - scored_before;
    proxy.restore();
    outage.store(false, Ordering::SeqCst);
    // The database is back: decisions are answered again within a few seconds.
    let back = Instant::now();
    loop {
        let ok = seen.lock().unwrap().outside.get(&200).copied().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if seen.lock().unwrap().outside.get(&200).copied().unwrap_or(0) > ok + 5 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "decisions did not resume"
        );
    }
    let resumed_after = back.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    decisions.join().unwrap();
    ingest.join().unwrap();
    writer.join().unwrap();
    let (_, output) = terminate(child);
    assert!(output.status.success());

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let recorded = common::recorded_request_ids(&fresh.url).await;
    let lost: Vec<_> = seen.answered.difference(&recorded).collect();
    let (code, out, err) = common::run(dir.path(), &fresh.url, &["audit", "verify"]);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    println!(
        "PostgreSQL away {OUTAGE:?}: decisions during {:?}, outside {:?}; {} answered, {} lost; \
         pushes during {:?} ({lines_during} log lines taken, {scored_during} rows scored); \
         /health during {health_during:?}; decisions resumed {resumed_after:.1?} after; \
         {} 'database is unavailable' log lines",
        seen.during,
        seen.outside,
        seen.answered.len(),
        lost.len(),
        seen.pushes_during,
        log.matches("the database is unavailable").count(),
    );
    assert!(
        lost.is_empty(),
        "answered decisions with no audit row: {lost:?}"
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        seen.pushes_during.keys().all(|s| *s == 204) && lines_during > 0.0,
        "ingest stopped while the database was away: {:?}",
        seen.pushes_during
    );
    assert!(
        scored_during > 0.0,
        "scoring stopped while the database was away"
    );
    assert!(
        seen.during.keys().all(|s| *s == 200 || *s == 503),
        "{:?}",
        seen.during
    );
    assert!(seen.during.contains_key(&503), "the outage was not felt");
    assert!(health_during.contains(&503), "{health_during:?}");
    assert!(!log.contains("\"status\":500") && !log.contains("status=500"));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_gone_rate_limits_fall_back_to_memory_and_say_so_once() {
    let proxy = Proxy::start("127.0.0.1:6379".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("redis.db").display());
    let redis = format!("redis://127.0.0.1:{}", proxy.port);
    let (child, port) = serve(
        dir.path(),
        &db,
        &[
            ("AEGIS_REDIS_URL", redis.as_str()),
            ("AEGIS_RATE_LIMIT_PER_MINUTE", "40"),
        ],
    );
    let token = common::login(port, ADMIN, PASSWORD);
    let auth = format!("Bearer {token}");
    let get = |path: &str| {
        http_raw(port, "GET", path, &[("Authorization", &auth)], b"")
            .unwrap()
            .0
    };
    assert_eq!(get("/api/v1/users/me"), 200);
    proxy.cut();
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for _ in 0..60 {
        *statuses.entry(get("/api/v1/users/me")).or_default() += 1;
    }
    let took = started.elapsed();
    // The budget (40 a minute) still holds, now per process: the in-memory limiter allows
    // its burst of 40 (and one more per 1.5 s as it refills), the rest are refused.
    let allowed = statuses.get(&200).copied().unwrap_or(0);
    let refilled = (took.as_secs_f64() / 1.5).ceil() as u32;
    assert!(
        (40..=41 + refilled).contains(&allowed),
        "{statuses:?} in {took:?}"
    );
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0),
        60 - allowed,
        "{statuses:?}"
    );
    // Each check gives Redis at most 250 ms before falling back.
    assert!(took < Duration::from_secs(20), "60 requests took {took:?}");
    let fallbacks = metric(port, "aegis_ratelimit_fallbacks_total");
    proxy.restore();
    terminate(child);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let logged = log
        .matches("redis rate limit check failed; using the in-memory")
        .count();
    println!(
        "Redis away: {statuses:?} in {took:.1?}; {fallbacks} fallbacks counted, {logged} log line(s)"
    );
    assert!(fallbacks >= 60.0, "{fallbacks}");
    assert_eq!(logged, 1, "logged once, not per request");
}
