//! Open-loop remote write load: offers a fixed rate of samples for a time, whatever the
//! receiver answers, and retries refused bodies as Prometheus does (30 ms backoff doubling
//! to 5 s, the body kept). Reports what was offered and accepted, every answer by status,
//! the sender-side backlog, the receiver's memory (VmRSS every 200 ms) and how long the
//! backlog took to drain once the offered load stopped; then checks the receiver's own
//! count (`aegis_ingest_samples_total` on `/metrics`) against what it acknowledged.
//!
//! ```text
//! ingest_overload --url URL --pid PID --rate SAMPLES_PER_S [--seconds 60]
//!                 [--connections 8] [--token T] [--metrics URL] [--drain-secs 300]
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a load tool fails loudly"
)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use aegis_benches::BODY_SERIES as SERIES;
/// Distinct bodies per connection, reused in turn (encoding them live would take the CPU
/// the receiver needs on a 2-core machine).
const POOL: usize = 64;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn samples_counter(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
) -> Option<f64> {
    let response = client
        .request(http::Request::get(url).body(Full::new(Bytes::new())).ok()?)
        .await
        .ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("aegis_ingest_samples_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Some(total)
}

#[derive(Default)]
struct Counts {
    statuses: BTreeMap<u16, u64>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(pid), Some(rate)) = (
        arg(&args, "--url"),
        arg(&args, "--pid"),
        arg(&args, "--rate"),
    ) else {
        eprintln!(
            "usage: ingest_overload --url URL --pid PID --rate SAMPLES_PER_S [--seconds 60] [--connections 8] [--token T] [--metrics URL] [--drain-secs 300]"
        );
        std::process::exit(2);
    };
    let pid: u32 = pid.parse().expect("--pid");
    let rate: f64 = rate.parse().expect("--rate");
    let seconds: u64 = arg(&args, "--seconds").map_or(60, |s| s.parse().expect("--seconds"));
    let connections: usize =
        arg(&args, "--connections").map_or(8, |s| s.parse().expect("--connections"));
    let drain_secs: u64 =
        arg(&args, "--drain-secs").map_or(300, |s| s.parse().expect("--drain-secs"));
    let token = arg(&args, "--token");
    let metrics_url = arg(&args, "--metrics");

    let start_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        - 3_600_000;
    let pools: Vec<Vec<Bytes>> = (0..connections)
        .map(|c| aegis_benches::remote_write_bodies(c, POOL, start_ms))
        .collect();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections * 2)
        .build_http();
    let counter_before = match &metrics_url {
        Some(m) => samples_counter(&client, m).await,
        None => None,
    };

    let queues: Vec<Arc<Mutex<VecDeque<Bytes>>>> = (0..connections)
        .map(|_| Arc::new(Mutex::new(VecDeque::new())))
        .collect();
    let offered = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let producing = Arc::new(AtomicBool::new(true));
    let counts = Arc::new(Mutex::new(Counts::default()));
    let max_backlog = Arc::new(AtomicU64::new(0));
    let rss_start = aegis_benches::proc_status(&pid.to_string(), "VmRSS:");
    let rss_max = Arc::new(AtomicU64::new(rss_start));
    let started = Instant::now();

    // The producer: every 10 ms, the bodies the rate asks for, round-robin over the
    // connections' queues (the sender-side buffer Prometheus keeps per shard).
    let producer = {
        let (queues, offered, producing, max_backlog) = (
            queues.clone(),
            offered.clone(),
            producing.clone(),
            max_backlog.clone(),
        );
        tokio::spawn(async move {
            let deadline = started + Duration::from_secs(seconds);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut due = 0.0f64;
            let mut n = 0usize;
            while Instant::now() < deadline {
                tick.tick().await;
                due += rate / 100.0 / SERIES as f64;
                while due >= 1.0 {
                    due -= 1.0;
                    let conn = n % queues.len();
                    let body = pools[conn][(n / queues.len()) % POOL].clone();
                    queues[conn].lock().unwrap().push_back(body);
                    offered.fetch_add(SERIES as u64, Ordering::Relaxed);
                    n += 1;
                }
                let backlog: usize = queues.iter().map(|q| q.lock().unwrap().len()).sum();
                max_backlog.fetch_max((backlog * SERIES) as u64, Ordering::Relaxed);
            }
            producing.store(false, Ordering::SeqCst);
        })
    };
    let sampler = {
        let rss_max = rss_max.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                rss_max.fetch_max(
                    aegis_benches::proc_status(&pid.to_string(), "VmRSS:"),
                    Ordering::Relaxed,
                );
            }
        })
    };

    let mut senders = Vec::new();
    for queue in &queues {
        let (queue, client, url, token, accepted, counts, producing) = (
            queue.clone(),
            client.clone(),
            url.clone(),
            token.clone(),
            accepted.clone(),
            counts.clone(),
            producing.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(30);
            loop {
                let next = queue.lock().unwrap().front().cloned();
                let Some(body) = next else {
                    if !producing.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                let mut req = http::Request::post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0");
                if let Some(t) = &token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let status = match client.request(req.body(Full::new(body)).unwrap()).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        status
                    }
                    Err(_) => 0,
                };
                *counts.lock().unwrap().statuses.entry(status).or_default() += 1;
                match status {
                    200..=299 => {
                        queue.lock().unwrap().pop_front();
                        accepted.fetch_add(SERIES as u64, Ordering::Relaxed);
                        backoff = Duration::from_millis(30);
                    }
                    0 | 429 | 500..=599 => {
                        // Kept and retried, as Prometheus does with 5xx (and 429 when told to).
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    other => panic!("{url} answered {other}: the body would be dropped"),
                }
            }
        }));
    }
    producer.await.unwrap();
    let offered_secs = started.elapsed().as_secs_f64();
    let accepted_while_offering = accepted.load(Ordering::Relaxed);
    let stopped = Instant::now();
    let drain_deadline = stopped + Duration::from_secs(drain_secs);
    for s in senders {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, s).await.is_err() {
            eprintln!("the backlog did not drain within {drain_secs} s");
            std::process::exit(1);
        }
    }
    let drained = stopped.elapsed().as_secs_f64();
    sampler.abort();
    let rss_end = aegis_benches::proc_status(&pid.to_string(), "VmRSS:");
    let offered = offered.load(Ordering::Relaxed);
    let accepted = accepted.load(Ordering::Relaxed);
    let statuses = counts.lock().unwrap().statuses.clone();
    println!(
        "offered {offered} samples in {offered_secs:.1} s ({:.2} M samples/s); accepted {:.2} M/s while offering; {accepted} accepted in all ({:.2} M/s over offer + drain); backlog drained {drained:.1} s after the offer stopped",
        offered as f64 / offered_secs / 1e6,
        accepted_while_offering as f64 / offered_secs / 1e6,
        accepted as f64 / (offered_secs + drained) / 1e6
    );
    println!("answers by status (0 = connection error): {statuses:?}");
    println!(
        "sender backlog at most {} samples; receiver VmRSS {:.0} MiB at start, {:.0} MiB at most, {:.0} MiB at the end",
        max_backlog.load(Ordering::Relaxed),
        rss_start as f64 / 1024.0,
        rss_max.load(Ordering::Relaxed) as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    let bad: u64 = statuses
        .iter()
        .filter(|(s, _)| !matches!(**s, 200..=299 | 429 | 503))
        .map(|(_, n)| n)
        .sum();
    let mut ok = accepted == offered && bad == 0;
    if let (Some(m), Some(before)) = (&metrics_url, counter_before) {
        let after = samples_counter(&client, m).await.unwrap_or(0.0);
        let counted = (after - before).round() as u64;
        println!("receiver counted {counted} samples (aegis_ingest_samples_total delta)");
        ok &= counted == accepted;
    }
    println!(
        "{}",
        if ok {
            "zero loss: every offered sample was accepted and counted; only 2xx/429/503 answers"
        } else {
            "LOSS or unexpected answers"
        }
    );
    if !ok {
        std::process::exit(1);
    }
}
