//! The Kafka consumer against librdkafka's mock cluster: every format, a poison message,
//! commits after processing, and a restart that reads only what was not committed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aegis_ingest::kafka::{KafkaSettings, KafkaStats, run};
use aegis_ingest::remote_write::{encode_v1, realistic_series};
use aegis_ingest::{BatchKind, Ingest, IngestLimits, SampleBatch};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

fn sample_json(name: &str, value: f64) -> String {
    serde_json::json!({"timestamp": "2026-11-24T14:00:00.5Z", "value": value.to_string(), "name": name,
        "labels": {"__name__": name, "job": "adapter"}})
    .to_string()
}

/// Consumes until `samples` samples and `lines` lines arrived (or 20 s passed).
async fn consume(
    rx: &mut tokio::sync::mpsc::Receiver<SampleBatch>,
    samples: usize,
    lines: usize,
) -> (usize, usize) {
    let (mut s, mut l) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s < samples || l < lines {
        let batch = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for batches")
            .unwrap();
        match batch.kind {
            BatchKind::Samples => s += batch.batch.num_rows(),
            BatchKind::Logs => l += batch.batch.num_rows(),
        }
    }
    (s, l)
}

#[tokio::test(flavor = "multi_thread")]
async fn consume_commit_restart_and_skip_poison() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("telemetry", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();

    for i in 0..5 {
        produce(
            &producer,
            "telemetry",
            &format!("s{i}"),
            sample_json(&format!("m{i}"), i as f64).as_bytes(),
        )
        .await;
    }
    produce(&producer, "telemetry", "poison", b"{ this is not json").await;
    for i in 0..2 {
        let body = snap::raw::Encoder::new()
            .compress_vec(&encode_v1(&realistic_series(10, 1, 1_795_000_000_000 + i)))
            .unwrap();
        produce(&producer, "telemetry", &format!("rw{i}"), &body).await;
    }
    for i in 0..2 {
        let line = serde_json::json!({"timestamp": "1795000000000000000", "line": format!("ERROR worker {i} died"),
            "labels": {"app": "worker"}}).to_string();
        produce(&producer, "telemetry", &format!("l{i}"), line.as_bytes()).await;
    }

    let settings = KafkaSettings {
        brokers: brokers.clone(),
        topics: vec!["telemetry".into()],
        group: "aegis-test".into(),
        batch_max: 4,
        batch_wait: Duration::from_millis(200),
    };
    let (ingest, mut rx) = Ingest::new(
        64,
        IngestLimits {
            admission: aegis_ingest::Admission::unbounded(),
            ..IngestLimits::default()
        },
    );
    let stats = Arc::new(KafkaStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        settings.clone(),
        ingest.clone(),
        Arc::clone(&stats),
        async move {
            let _ = stopped.await;
        },
    ));
    let (s, l) = consume(&mut rx, 25, 2).await;
    assert_eq!(
        (s, l),
        (25, 2),
        "5 adapter samples + 2 × 10 remote-write samples, 2 lines"
    );
    // Let the last commit land, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(
        stats.poison.load(Ordering::Relaxed),
        1,
        "the poison message was skipped and counted"
    );
    assert_eq!(stats.messages.load(Ordering::Relaxed), 10);
    assert!(stats.commits.load(Ordering::Relaxed) >= 1);

    // A restart in the same group reads only what came after the commit.
    for i in 0..3 {
        produce(
            &producer,
            "telemetry",
            &format!("late{i}"),
            sample_json("late", i as f64).as_bytes(),
        )
        .await;
    }
    let stats2 = Arc::new(KafkaStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(settings, ingest, Arc::clone(&stats2), async move {
        let _ = stopped.await;
    }));
    let (s, _) = consume(&mut rx, 3, 0).await;
    assert_eq!(s, 3);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(rx.try_recv().is_err(), "nothing committed was read again");
    assert_eq!(stats2.messages.load(Ordering::Relaxed), 3);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_pauses_the_partitions_and_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("busy", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..12 {
        produce(
            &producer,
            "busy",
            &format!("k{i}"),
            sample_json(&format!("m{i}"), 1.0).as_bytes(),
        )
        .await;
    }
    let settings = KafkaSettings {
        brokers,
        topics: vec!["busy".into()],
        group: "aegis-busy".into(),
        batch_max: 2,
        batch_wait: Duration::from_millis(100),
    };
    // A queue of one batch that nobody drains at first.
    let (ingest, mut rx) = Ingest::new(
        1,
        IngestLimits {
            admission: aegis_ingest::Admission::unbounded(),
            ..IngestLimits::default()
        },
    );
    let stats = Arc::new(KafkaStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(settings, ingest, Arc::clone(&stats), async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        stats.pauses.load(Ordering::Relaxed) >= 1,
        "the consumer paused while the queue was full"
    );
    let (s, _) = consume(&mut rx, 12, 0).await;
    assert_eq!(s, 12, "every message arrived once the queue drained");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
