//! Remote write load generator: sends realistic 1.0 bodies (2,000 series × 1 sample, 15
//! labels) over HTTP to a receiver and reports samples per second of wall time and per
//! CPU-second of the receiving process (read from `/proc/PID/stat`).
//!
//! ```text
//! remote_write_load URL PID [SECONDS] [CONNECTIONS] [TOKEN]
//! ```
//! Each connection sends its own series (label `conn`) with increasing timestamps, so every
//! receiver, Prometheus's TSDB included, accepts every sample in order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a load tool fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use aegis_benches::BODY_SERIES as SERIES;
/// Clock ticks per second of `/proc/PID/stat` (Linux's USER_HZ).
const TICKS: f64 = 100.0;

fn cpu_seconds(pid: u32) -> f64 {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc/PID/stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / TICKS
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: remote_write_load URL PID [SECONDS] [CONNECTIONS] [TOKEN]");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let pid: u32 = args[2].parse().expect("PID");
    let seconds: u64 = args.get(3).map_or(20, |s| s.parse().expect("SECONDS"));
    let connections: usize = args.get(4).map_or(4, |s| s.parse().expect("CONNECTIONS"));
    let token = args.get(5).cloned();

    // Enough distinct bodies that no connection runs out (about 1 ms of encoding each).
    let per_conn = 400;
    let start_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        - 3_600_000;
    let all: Vec<Vec<Bytes>> = (0..connections)
        .map(|c| aegis_benches::remote_write_bodies(c, per_conn, start_ms))
        .collect();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for bodies in all {
        let (client, url, token, accepted, refused) = (
            client.clone(),
            url.clone(),
            token.clone(),
            accepted.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for body in bodies {
                if Instant::now() >= deadline {
                    break;
                }
                loop {
                    let mut req = http::Request::post(&url)
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "snappy")
                        .header("x-prometheus-remote-write-version", "0.1.0");
                    if let Some(t) = &token {
                        req = req.header("authorization", format!("Bearer {t}"));
                    }
                    let response = client
                        .request(req.body(Full::new(body.clone())).unwrap())
                        .await
                        .expect("request");
                    let status = response.status();
                    drop(response);
                    if status.is_success() {
                        accepted.fetch_add(SERIES as u64, Ordering::Relaxed);
                        break;
                    }
                    refused.fetch_add(1, Ordering::Relaxed);
                    if status.as_u16() != 503 && status.as_u16() != 429 {
                        panic!("{url} answered {status}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let samples = accepted.load(Ordering::Relaxed);
    println!(
        "{url}: {samples} samples in {wall:.1} s = {:.2} M samples/s; server CPU {cpu:.2} s = {:.2} M samples per CPU-second; {} retried answers",
        samples as f64 / wall / 1e6,
        samples as f64 / cpu.max(1e-9) / 1e6,
        refused.load(Ordering::Relaxed)
    );
}
