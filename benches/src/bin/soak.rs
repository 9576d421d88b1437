//! Soak load: a steady, realistic mix against a running `aegis serve` for a long time, with
//! the server's memory, file descriptors, threads and request latency printed at marks.
//!
//! The mix: remote write at `--rate` samples/s (2,000-series bodies, a Prometheus-like
//! sender), Loki JSON pushes (20 lines every 100 ms), policy evaluations at `--evaluate`
//! per second and a `GET /api/v1/health` (readiness probe) every second. At each mark: VmRSS, open
//! file descriptors and threads of the server, and p50/p99/max latency of evaluations and
//! remote writes within the window; any answer other than 2xx (or 503 on ingest, retried)
//! is counted as an error.
//!
//! ```text
//! soak --url http://127.0.0.1:PORT --pid PID --token SERVICE_TOKEN --ingest-token T
//!      [--minutes 60] [--mark-minutes 10] [--rate 20000] [--evaluate 50]
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a load tool fails loudly"
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

use aegis_benches::BODY_SERIES as SERIES;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Latencies (µs) of one window, and errors.
struct Window {
    evaluate: Histogram<u64>,
    write: Histogram<u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            evaluate: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            write: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        }
    }
}

async fn send(client: &HttpClient, req: http::Request<Full<Bytes>>) -> (u16, Duration) {
    let started = Instant::now();
    match client.request(req).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            (status, started.elapsed())
        }
        Err(_) => (0, started.elapsed()),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(pid), Some(token), Some(ingest_token)) = (
        arg(&args, "--url"),
        arg(&args, "--pid"),
        arg(&args, "--token"),
        arg(&args, "--ingest-token"),
    ) else {
        eprintln!(
            "usage: soak --url URL --pid PID --token ACCESS --ingest-token T [--minutes 60] [--mark-minutes 10] [--rate 20000] [--evaluate 50]"
        );
        std::process::exit(2);
    };
    let pid: u32 = pid.parse().expect("--pid");
    let minutes: f64 = arg(&args, "--minutes").map_or(60.0, |s| s.parse().expect("--minutes"));
    let mark: f64 =
        arg(&args, "--mark-minutes").map_or(10.0, |s| s.parse().expect("--mark-minutes"));
    let rate: f64 = arg(&args, "--rate").map_or(20_000.0, |s| s.parse().expect("--rate"));
    let evaluate_rate: f64 =
        arg(&args, "--evaluate").map_or(50.0, |s| s.parse().expect("--evaluate"));

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let window = Arc::new(Mutex::new(Window::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(AtomicU64::new(0));
    let decisions = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(minutes * 60.0);

    // Remote write: fresh timestamps each second, one body per 2,000 samples due.
    {
        let (client, url, token, window, errors, retried, samples, running) = (
            client.clone(),
            url.clone(),
            ingest_token.clone(),
            window.clone(),
            errors.clone(),
            retried.clone(),
            samples.clone(),
            running.clone(),
        );
        tokio::spawn(async move {
            let per_second = (rate / SERIES as f64).max(1.0) as usize;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut second = 0i64;
            let base = chrono::Utc::now().timestamp_millis();
            while running.load(Ordering::SeqCst) {
                tick.tick().await;
                for shard in 0..per_second {
                    let body = aegis_benches::remote_write_bodies(shard, 1, base + second * 1_000)
                        .remove(0);
                    let (client, url, token, window, errors, retried, samples) = (
                        client.clone(),
                        url.clone(),
                        token.clone(),
                        window.clone(),
                        errors.clone(),
                        retried.clone(),
                        samples.clone(),
                    );
                    tokio::spawn(async move {
                        loop {
                            let req = http::Request::post(format!("{url}/api/v1/write"))
                                .header("content-type", "application/x-protobuf")
                                .header("content-encoding", "snappy")
                                .header("x-prometheus-remote-write-version", "0.1.0")
                                .header("authorization", format!("Bearer {token}"))
                                .body(Full::new(body.clone()))
                                .unwrap();
                            let (status, took) = send(&client, req).await;
                            match status {
                                200..=299 => {
                                    window
                                        .lock()
                                        .unwrap()
                                        .write
                                        .saturating_record(took.as_micros() as u64);
                                    samples.fetch_add(SERIES as u64, Ordering::Relaxed);
                                    return;
                                }
                                503 => {
                                    retried.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                _ => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                            }
                        }
                    });
                }
                second += 1;
            }
        });
    }
    // Loki JSON pushes.
    {
        let (client, url, token, errors, running) = (
            client.clone(),
            url.clone(),
            ingest_token.clone(),
            errors.clone(),
            running.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            while running.load(Ordering::SeqCst) {
                tick.tick().await;
                let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                let values: Vec<String> = (0..20)
                    .map(|k| {
                        let level = if (n + k).is_multiple_of(97) {
                            "error"
                        } else {
                            "info"
                        };
                        format!(
                            "[\"{}\", \"level={level} msg=\\\"request {} served\\\" status=200\"]",
                            now + k as i64,
                            n + k
                        )
                    })
                    .collect();
                n += 20;
                let body = format!(
                    "{{\"streams\": [{{\"stream\": {{\"namespace\": \"production\", \"app\": \"api\", \"pod\": \"api-{}\"}}, \"values\": [{}]}}]}}",
                    n % 5,
                    values.join(",")
                );
                let req = http::Request::post(format!("{url}/loki/api/v1/push"))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let (status, _) = send(&client, req).await;
                if !(200..=299).contains(&status) && status != 503 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Policy evaluations, each timed.
    {
        let (client, url, token, window, errors, decisions, running) = (
            client.clone(),
            url.clone(),
            token.clone(),
            window.clone(),
            errors.clone(),
            decisions.clone(),
            running.clone(),
        );
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / evaluate_rate.max(0.1)));
            let mut n = 0u64;
            while running.load(Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                let body = format!(
                    "{{\"action\": \"scale_up\", \"resource\": \"cluster:production\", \"type\": \"self_healing\", \"context\": {{\"user_id\": \"ai-engine\", \"role\": \"service\", \"metadata\": {{\"severity\": \"high\", \"n\": {n}}}}}}}"
                );
                let req = http::Request::post(format!("{url}/api/v1/policy/evaluate"))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let (client, window, errors, decisions) = (
                    client.clone(),
                    window.clone(),
                    errors.clone(),
                    decisions.clone(),
                );
                tokio::spawn(async move {
                    let (status, took) = send(&client, req).await;
                    if status == 200 {
                        window
                            .lock()
                            .unwrap()
                            .evaluate
                            .saturating_record(took.as_micros() as u64);
                        decisions.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
    }
    // A readiness probe, as a load balancer or kubelet sends it (it checks the database).
    {
        let (client, url, errors, running) =
            (client.clone(), url.clone(), errors.clone(), running.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while running.load(Ordering::SeqCst) {
                tick.tick().await;
                let req = http::Request::get(format!("{url}/api/v1/health"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                if send(&client, req).await.0 != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    println!(
        "| minute | VmRSS MiB | fds | threads | evaluate p50 / p99 / max ms | remote write p50 / p99 ms | samples | decisions | 503 retries | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let print_mark = |minute: f64| {
        let mut w = window.lock().unwrap();
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {minute:.0} | {:.0} | {} | {} | {:.2} / {:.2} / {:.1} | {:.2} / {:.2} | {} | {} | {} | {} |",
            aegis_benches::proc_status(&pid.to_string(), "VmRSS:") as f64 / 1024.0,
            open_fds(pid),
            aegis_benches::proc_status(&pid.to_string(), "Threads:"),
            ms(&w.evaluate, 0.5),
            ms(&w.evaluate, 0.99),
            w.evaluate.max() as f64 / 1000.0,
            ms(&w.write, 0.5),
            ms(&w.write, 0.99),
            samples.load(Ordering::Relaxed),
            decisions.load(Ordering::Relaxed),
            retried.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
        );
        *w = Window::new();
    };
    // Minute 0: after a short warm-up, so the first row is the baseline.
    tokio::time::sleep(Duration::from_secs(30)).await;
    print_mark(0.0);
    let mut next = started + Duration::from_secs_f64(mark * 60.0);
    while next <= end + Duration::from_secs(1) {
        tokio::time::sleep_until(next.into()).await;
        print_mark(next.duration_since(started).as_secs_f64() / 60.0);
        next += Duration::from_secs_f64(mark * 60.0);
    }
    running.store(false, Ordering::SeqCst);
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "soak finished: {} samples, {} decisions, {errors} errors",
        samples.load(Ordering::Relaxed),
        decisions.load(Ordering::Relaxed)
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
