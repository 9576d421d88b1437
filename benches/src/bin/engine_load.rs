//! Load run of the self-healing loop: `ENTITIES × METRICS` series (default 20,000 × 5 =
//! 100,000) each sending one sample per second (100,000 samples/s) through the ingest
//! queue into the real loop — windows, the stream detector on every series, classifier,
//! incidents, policy engine, executor guards and audit (SQLite), dry-run executor. First
//! `--history-secs` of every series' past go through the same queue (the stream detector
//! judges a point against the series' own history, which takes a few hundred points to
//! settle); then, after a warm-up, one workload at a time gets a sustained CPU spike.
//! Reported with hdrhistogram:
//!
//! - tick → action: from the start of the tick that sees the spike to the executor call
//!   (after every guard and the committed intent row; the incident opens on the first tick above the threshold with
//!   `--open-ticks 1`; each further required tick adds one interval by design);
//! - arrival → action: from the moment the first anomalous sample entered the ingest queue
//!   to the executor call;
//!
//! and the process's resident memory (VmRSS, peak VmHWM) with all series active.
//!
//! `cargo run --release -p aegis-benches --bin engine_load -- [--entities N] [--seconds S]
//! [--open-ticks K] [--tick-ms MS] [--history-secs H]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a load tool whose set-up fails must stop loudly"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_ingest::{BatchKind, Ingest, IngestLimits, SampleBatch, SeriesLimits};
use aegis_runtime::PolicyService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings};
use aegis_runtime::healing::{HealingLoop, HealingSettings};
use aegis_runtime::ratelimit::{Limiter, Limits};
use aegis_store::{AuditWriterOptions, PolicyAuditWriter, Store, StoreOptions};
use arrow_array::{Float64Array, Int64Array, RecordBatch, UInt32Array};
use hdrhistogram::Histogram;

const METRICS: [&str; 5] = aegis_engine::DEFAULT_METRICS;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn normal(metric: usize, noise: f64) -> f64 {
    match metric {
        0 => 0.30 + noise * 0.04,
        1 => 0.45 + noise * 0.02,
        2 => 120.0 * (1.0 + noise * 0.05),
        3 => 0.002 + noise.abs() * 0.001,
        _ => 0.0,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let entities = arg("--entities", 20_000) as usize;
    let seconds = arg("--seconds", 90);
    let open_ticks = arg("--open-ticks", 1) as u32;
    let tick_ms = arg("--tick-ms", 1_000);
    let history_secs = arg("--history-secs", 600) as i64;
    let warmup_secs = 20;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("load.db").display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let writer = PolicyAuditWriter::spawn(store.clone(), AuditWriterOptions::default());
    let policies = Arc::new(PolicyService::new(store.clone()).with_audit(writer.sender()));
    policies.install_defaults_if_new().await.unwrap();
    policies.reload_database().await.unwrap();
    let detectors = aegis_runtime::detector_service::DetectorService::start(store.clone(), 0.6)
        .await
        .unwrap();
    let executor = Arc::new(ExecutorService::new(
        aegis_executor::Executor::DryRun,
        ExecutorSettings {
            require_signature: false,
            // One action per injected workload; the load run measures the path, not the
            // brakes, so the blast radius and the action budget are out of the way.
            blast_radius: i64::MAX,
            ..ExecutorSettings::default()
        },
        Limiter::in_memory(Limits {
            action_per_minute: 1_000_000,
            ..Limits::default()
        }),
    ));
    let defaults = HealingSettings::default();
    let settings = HealingSettings {
        engine: aegis_engine::EngineConfig {
            window_ms: 30_000,
            resolution_ms: 1_000,
            baseline_ms: 120_000,
            baseline_resolution_ms: 2_000,
            warmup_ms: 10_000,
            idle_ms: 600_000,
            max_entities: entities + 10,
            hysteresis: aegis_engine::Hysteresis {
                open_ticks,
                ..defaults.engine.hysteresis
            },
            ..defaults.engine.clone()
        },
        tick: Duration::from_millis(tick_ms),
        ..defaults
    };
    let healing = HealingLoop::new(
        settings,
        detectors,
        Arc::clone(&policies),
        executor,
        store.clone(),
    );
    let (ingest, rx) = Ingest::new(
        4_096,
        IngestLimits {
            series: SeriesLimits::default(),
            ..IngestLimits::default()
        },
    );
    // Register every series as remote write would; ids are dense from 0.
    let mut ids = Vec::with_capacity(entities * METRICS.len());
    {
        let mut registry = ingest.registry().lock().unwrap();
        // Stamped now, as remote write stamps what it resolves: the batches below go
        // straight to the queue and never touch the registry again, so a series resolved
        // at the clock's zero would be idle at the loop's first housekeeping and forgotten.
        registry.set_now(chrono::Utc::now().timestamp());
        for e in 0..entities {
            let deployment = format!("svc-{e}");
            for m in METRICS {
                let labels = [
                    ("__name__", m),
                    ("deployment", deployment.as_str()),
                    ("namespace", "production"),
                ];
                ids.push(registry.resolve(&labels, &SeriesLimits::default()).unwrap());
            }
        }
    }
    let latest = Arc::new(Mutex::new(aegis_ingest::LatestSamples::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut events = healing.subscribe();
    let runner = {
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(
            Arc::clone(&healing).run(ingest.clone(), rx, latest, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            }),
        )
    };

    // The past: every series' normal values for `history_secs`, one a second, through the
    // queue as remote write would bring a backlog.
    let history_started = Instant::now();
    {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let now_ms = chrono::Utc::now().timestamp_millis();
        for s in 0..history_secs {
            let at = now_ms - (history_secs - s) * 1_000;
            let mut values = Vec::with_capacity(ids.len());
            for i in 0..ids.len() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
                values.push(normal(i % METRICS.len(), noise));
            }
            send(&ingest, ids.clone(), vec![at; ids.len()], values).await;
        }
        // Until the loop has scored the backlog.
        let want = (ids.len() as u64) * history_secs as u64;
        while healing.stats(0).samples < want {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(3 * tick_ms)).await;
    }
    let history_took = history_started.elapsed();
    let alarms_before = healing.stats(0).stream_alarms;

    // Injected spikes: entity → when its first anomalous sample entered the queue.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let generator = {
        let arrivals = Arc::clone(&arrivals);
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let slices = 10usize;
            let per_slice = ids.len().div_ceil(slices);
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            let mut noise = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            };
            let mut spiking: Vec<usize> = Vec::new();
            let mut next_spike = Duration::from_secs(warmup_secs + 15);
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            let mut sent = 0u64;
            let mut slice = 0usize;
            while started.elapsed() < Duration::from_secs(seconds) {
                interval.tick().await;
                if started.elapsed() >= next_spike && spiking.len() < 1_000 {
                    // A new workload, spread over the slices.
                    spiking.push((spiking.len() * 7_919 + 13) % entities);
                    next_spike += Duration::from_secs(2);
                }
                let now_ms = chrono::Utc::now().timestamp_millis();
                let lo = slice * per_slice;
                let hi = ((slice + 1) * per_slice).min(ids.len());
                slice = (slice + 1) % slices;
                let mut series = Vec::with_capacity(hi - lo);
                let mut stamps = Vec::with_capacity(hi - lo);
                let mut values = Vec::with_capacity(hi - lo);
                let mut fresh = Vec::new();
                for (i, id) in ids.iter().enumerate().take(hi).skip(lo) {
                    let (entity, metric) = (i / METRICS.len(), i % METRICS.len());
                    let spike = metric == 0 && spiking.contains(&entity);
                    series.push(*id);
                    stamps.push(now_ms);
                    values.push(if spike { 0.97 } else { normal(metric, noise()) });
                    if spike {
                        fresh.push(format!("production/svc-{entity}"));
                    }
                }
                sent += series.len() as u64;
                let arrived = Instant::now();
                send(&ingest, series, stamps, values).await;
                let mut a = arrivals.lock().unwrap();
                for e in fresh {
                    a.entry(e).or_insert(arrived);
                }
            }
            sent
        })
    };

    let mut tick_to_action = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut arrival_to_action = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut acted = 0u64;
    let mut acted_on = std::collections::HashSet::new();
    let mut other = 0u64;
    // Events on workloads that were never spiked: false alarms, and actions on them.
    let (mut false_alarms, mut false_actions) = (0u64, 0u64);
    let deadline = started + Duration::from_secs(seconds + 3);
    let mut rss_peak_active = 0u64;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            break;
        }
        if let Ok(Ok(e)) =
            tokio::time::timeout(wait.min(Duration::from_millis(500)), events.recv()).await
        {
            {
                let arrival = arrivals.lock().unwrap().get(&e.entity).copied();
                match (arrival, e.acted_at, e.action_status.as_str()) {
                    (Some(at), Some(done), "dry_run") => {
                        acted += 1;
                        acted_on.insert(e.entity.clone());
                        tick_to_action.record(e.tick_to_action_us.max(1)).unwrap();
                        arrival_to_action
                            .record(done.saturating_duration_since(at).as_micros().max(1) as u64)
                            .unwrap();
                    }
                    (None, _, status) => {
                        false_alarms += u64::from(e.kind == "opened");
                        false_actions += u64::from(status == "dry_run");
                        other += 1;
                    }
                    _ => other += 1,
                }
            }
        }
        if started.elapsed() > Duration::from_secs(warmup_secs) {
            rss_peak_active = rss_peak_active.max(aegis_benches::proc_status("self", "VmRSS:"));
        }
    }
    let sent = generator.await.unwrap();
    let stats = healing.stats(chrono::Utc::now().timestamp_millis());
    let _ = stop_tx.send(true);
    let _ = runner.await;
    let injected = arrivals.lock().unwrap().len();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "engine load run: {entities} workloads × {} metrics = {} series, {seconds} s, tick {tick_ms} ms, open_ticks {open_ticks}",
        METRICS.len(),
        ids_len(entities)
    );
    println!(
        "  samples sent            {sent} ({:.0}/s)",
        sent as f64 / seconds as f64
    );
    println!(
        "  samples taken           {} (late {}, over limit {})",
        stats.samples, stats.late, stats.over_limit
    );
    println!(
        "  ticks                   {} (last tick {:.1} ms, {} rows scored)",
        stats.ticks,
        stats.last_tick_us as f64 / 1000.0,
        stats.rows_scored
    );
    println!(
        "  model                   {:?} ({})",
        stats.model_version, stats.state
    );
    println!(
        "  history                 {history_secs} s of every series, scored in {:.0} s",
        history_took.as_secs_f64()
    );
    println!(
        "  stream alarms           {} during the run (points flagged; incidents open on those 4 deviations off)",
        stats.stream_alarms - alarms_before
    );
    println!("  injected spikes         {injected}, acted on {acted}, other events {other}");
    {
        let arrivals = arrivals.lock().unwrap();
        let mut missed: Vec<(Duration, &String)> = arrivals
            .iter()
            .filter(|(e, _)| !acted_on.contains(*e))
            .map(|(e, at)| (at.saturating_duration_since(started), e))
            .collect();
        missed.sort();
        let shown: Vec<String> = missed
            .iter()
            .take(12)
            .map(|(at, e)| format!("{e} at {:.0} s", at.as_secs_f64()))
            .collect();
        println!("  not acted on            {}", shown.join(", "));
    }
    println!(
        "  never-spiked workloads  {false_alarms} incidents opened, {false_actions} actions (of {entities} workloads × {} ticks)",
        stats.ticks
    );
    for (name, h) in [
        ("tick → executor call", &tick_to_action),
        ("arrival → executor call", &arrival_to_action),
    ] {
        println!(
            "  {name:<22}  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n = {})",
            q(h, 0.5),
            q(h, 0.9),
            q(h, 0.99),
            h.max() as f64 / 1000.0,
            h.len()
        );
    }
    println!(
        "  memory                  VmRSS {:.0} MB with all series active (peak VmHWM {:.0} MB); windows {:.0} MB",
        rss_peak_active as f64 / 1024.0,
        aegis_benches::proc_status("self", "VmHWM:") as f64 / 1024.0,
        stats.window_bytes as f64 / 1e6
    );
    drop(healing);
    drop(policies);
    writer.shutdown(Duration::from_secs(5)).await;
    store.close().await;
}

/// One batch of samples through the ingest queue, as remote write hands it over.
async fn send(ingest: &Ingest, series: Vec<u32>, stamps: Vec<i64>, values: Vec<f64>) {
    let batch = RecordBatch::try_new(
        aegis_ingest::sample_schema(),
        vec![
            Arc::new(UInt32Array::from(series)),
            Arc::new(Int64Array::from(stamps)),
            Arc::new(Float64Array::from(values)),
        ],
    )
    .unwrap();
    ingest
        .enqueue_wait(SampleBatch {
            source: "load",
            kind: BatchKind::Samples,
            batch,
        })
        .await
        .unwrap();
}

fn ids_len(entities: usize) -> usize {
    entities * METRICS.len()
}
