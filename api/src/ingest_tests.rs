//! `POST /api/v1/write` through the router: versions, headers, limits, overload, auth.

use std::sync::Arc;

use aegis_core::ExecutorMode;
use aegis_ingest::remote_write::{encode_v1, encode_v2, realistic_series};
use aegis_ingest::{Ingest, IngestLimits, SeriesLimits};
use aegis_policy::{Origin, Policy, PolicySpec};
use aegis_store::testing::TestDb;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::tests::{assert_envelope, bearer, send, test_auth};
use crate::{AppState, app};
use aegis_runtime::PolicyService;

type Batches = tokio::sync::mpsc::Receiver<aegis_ingest::SampleBatch>;

/// A router whose policies let services write and push, with the ingest token configured.
async fn router(db: &TestDb, queue: usize, limits: IngestLimits) -> (Router, Batches) {
    let mut auth = test_auth();
    auth.settings.ingest_token = Some("static-ingest-token".into());
    router_with(db, queue, limits, auth)
}

fn router_with(
    db: &TestDb,
    queue: usize,
    limits: IngestLimits,
    auth: crate::auth::Auth,
) -> (Router, Batches) {
    let service = Arc::new(PolicyService::new(db.store.clone()));
    let spec = PolicySpec::from_json(
        json!({"name": "services send telemetry", "type": "api_access",
        "effect": "allow", "actions": ["POST /api/v1/write", "POST /loki/api/v1/push"],
        "conditions": {"roles": ["service"]}}),
    )
    .unwrap();
    service
        .engine()
        .set_file_policies(vec![Policy {
            id: "w".into(),
            spec,
            origin: Origin::Builtin,
        }])
        .unwrap();
    let (ingest, rx) = Ingest::new(queue, limits);
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(auth)
        .with_policies(service)
        .with_ingest(ingest, Arc::default());
    (app(state), rx)
}

fn write(body: Vec<u8>, content_type: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_ENCODING, "snappy");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, t);
    }
    b.body(Body::from(body)).unwrap()
}

/// Limits for tests that send recorded data with fixed timestamps: no time window (the
/// window itself is tested with the defaults below).
fn recorded() -> IngestLimits {
    IngestLimits {
        admission: aegis_ingest::Admission::unbounded(),
        ..IngestLimits::default()
    }
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

#[tokio::test]
async fn versions_headers_limits_overload_and_auth() {
    let db = TestDb::sqlite().await;
    let limits = IngestLimits {
        series: SeriesLimits {
            max_labels: 20,
            ..SeriesLimits::default()
        },
        max_decompressed: 1 << 20,
        admission: aegis_ingest::Admission::unbounded(),
    };
    let (r, mut rx) = router(&db, 2, limits).await;
    let service = bearer("svc", &["service"]);
    let series = realistic_series(20, 2, 1_795_000_000_000);

    let (status, headers, _) = send(
        r.clone(),
        write(
            snappy(&encode_v1(&series)),
            "application/x-protobuf",
            Some(&service),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        !headers.contains_key("x-prometheus-remote-write-samples-written"),
        "1.0 answers carry no counts"
    );

    let v2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    let (status, headers, _) = send(
        r.clone(),
        write(
            snappy(&encode_v2(&series)),
            v2,
            Some("Bearer static-ingest-token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["x-prometheus-remote-write-samples-written"], "40");
    assert_eq!(headers["x-prometheus-remote-write-histograms-written"], "0");
    assert_eq!(headers["x-prometheus-remote-write-exemplars-written"], "0");

    // The queue (2 batches) is full now: 503 with Retry-After, nothing taken.
    let (status, headers, body) = send(
        r.clone(),
        write(
            snappy(&encode_v1(&series)),
            "application/x-protobuf",
            Some(&service),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(rx.recv().await.unwrap().batch.num_rows(), 40);
    assert_eq!(rx.recv().await.unwrap().batch.num_rows(), 40);

    let cases = [
        (
            write(
                snappy(&encode_v1(&series)),
                "application/json",
                Some(&service),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            write(
                snappy(&encode_v1(&series)),
                "application/x-protobuf;proto=foo.Bar",
                Some(&service),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            write(
                b"not snappy at all".to_vec(),
                "application/x-protobuf",
                Some(&service),
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            write(
                snappy(&[0x0a, 0xff, 0xff]),
                "application/x-protobuf",
                Some(&service),
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            write(
                snappy(&vec![0u8; 2 << 20]),
                "application/x-protobuf",
                Some(&service),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            write(
                snappy(&encode_v1(&[aegis_ingest::remote_write::SeriesData {
                    labels: (0..30).map(|i| (format!("l{i:02}"), "v".into())).collect(),
                    samples: vec![(1, 1.0)],
                }])),
                "application/x-protobuf",
                Some(&service),
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            write(snappy(&encode_v1(&series)), "application/x-protobuf", None),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            write(
                snappy(&encode_v1(&series)),
                "application/x-protobuf",
                Some(&bearer("u", &["user"])),
            ),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (request, expected, code) in cases {
        let (status, headers, body) = send(r.clone(), request).await;
        assert_eq!(status, expected, "{body}");
        assert_envelope(&body, code, &headers);
    }
    // Configured open (a trusted network), a request without a token is taken.
    let mut open = test_auth();
    open.settings.ingest_open = true;
    let (open_router, _open_rx) = router_with(&db, 4, recorded(), open);
    let (status, _, body) = send(
        open_router,
        write(snappy(&encode_v1(&series)), "application/x-protobuf", None),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let wrong_encoding = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "gzip")
        .header(header::AUTHORIZATION, service.as_str())
        .body(Body::from(snappy(&encode_v1(&series))))
        .unwrap();
    assert_eq!(
        send(r.clone(), wrong_encoding).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    db.cleanup().await;
}

#[tokio::test]
async fn loki_push_in_every_encoding() {
    use std::io::Write;
    let db = TestDb::sqlite().await;
    let (r, mut rx) = router_with(&db, 16, recorded(), test_auth());
    let token = bearer("svc", &["service"]);
    let proto = aegis_ingest::loki::encode_proto(&[(
        "{job=\"api\"}".into(),
        vec![(1_795_000_000_000_000_000, "ERROR down".into())],
    )]);
    let json_body = json!({"streams": [{"stream": {"job": "api"}, "values": [["1795000000000000000", "ERROR down"]]}]}).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json_body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let push = |body: Vec<u8>, content_type: &str, encoding: Option<&str>| {
        let mut b = Request::post("/loki/api/v1/push")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::AUTHORIZATION, token.as_str());
        if let Some(e) = encoding {
            b = b.header(header::CONTENT_ENCODING, e);
        }
        b.body(Body::from(body)).unwrap()
    };
    for (request, what) in [
        (
            push(snappy(&proto), "application/x-protobuf", None),
            "protobuf, snappy without Content-Encoding (winston-loki)",
        ),
        (
            push(snappy(&proto), "application/x-protobuf", Some("snappy")),
            "protobuf, snappy",
        ),
        (
            push(json_body.clone().into_bytes(), "application/json", None),
            "JSON",
        ),
        (
            push(gz.clone(), "application/json", Some("gzip")),
            "JSON, gzip",
        ),
    ] {
        let (status, _, body) = send(r.clone(), request).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{what}: {body}");
        let batch = rx.recv().await.unwrap();
        assert_eq!(
            (batch.kind, batch.batch.num_rows()),
            (aegis_ingest::BatchKind::Logs, 1),
            "{what}"
        );
    }
    let (status, headers, body) = send(
        r.clone(),
        push(b"{\"streams\": 5}".to_vec(), "application/json", None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "bad_request", &headers);
    let (status, _, _) = send(r.clone(), push(gz, "text/plain", None)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    db.cleanup().await;
}

/// Overload: senders offer about three times what a (deliberately slow) engine takes. Every
/// answer is 204 or 503; senders retry 503s; in the end the engine counted every sample.
/// `AEGIS_OVERLOAD_SECS` stretches the run (the campaign is 30 s; CI runs 4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_204_or_503_and_loses_nothing_after_retries() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let seconds: u64 = std::env::var("AEGIS_OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let db = TestDb::sqlite().await;
    let (r, mut rx) = router(&db, 4, recorded()).await;
    // The engine: 10 ms per batch, about 100 batches per second.
    let counted = Arc::new(AtomicU64::new(0));
    let engine = {
        let counted = Arc::clone(&counted);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                counted.fetch_add(batch.batch.num_rows() as u64, Ordering::Relaxed);
            }
        })
    };
    // Three senders, each offering a request every 10 ms: about 300 per second, 3× the engine.
    let per_sender = 100 * seconds as usize;
    let token = bearer("svc", &["service"]);
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut senders = Vec::new();
    for s in 0..3 {
        let (r, token, accepted, refused) =
            (r.clone(), token.clone(), accepted.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            let mut sent = 0u64;
            for i in 0..per_sender {
                let body = snappy(&encode_v1(&realistic_series(
                    5,
                    1,
                    1_795_000_000_000 + (s * 1_000_000 + i) as i64,
                )));
                let mut backoff = std::time::Duration::from_millis(5);
                loop {
                    let (status, headers, _) = send(
                        r.clone(),
                        write(body.clone(), "application/x-protobuf", Some(&token)),
                    )
                    .await;
                    match status {
                        StatusCode::NO_CONTENT => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert!(headers.contains_key(header::RETRY_AFTER));
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(std::time::Duration::from_millis(200));
                        }
                        other => panic!("only 204 or 503 may answer an overload, not {other}"),
                    }
                }
                sent += 5;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            sent
        }));
    }
    let mut sent = 0;
    for s in senders {
        sent += s.await.unwrap();
    }
    // Let the engine drain.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while counted.load(Ordering::Relaxed) < sent && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        counted.load(Ordering::Relaxed),
        sent,
        "every acknowledged sample reached the engine"
    );
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the engine really was overloaded"
    );
    assert_eq!(accepted.load(Ordering::Relaxed) * 5, sent);
    engine.abort();
    db.cleanup().await;
}

#[tokio::test]
async fn pull_mode_reads_prometheus_and_loki_query_range() {
    use axum::extract::Query;
    use std::collections::HashMap;
    // A Prometheus and a Loki that answer query_range like the real ones.
    let app = Router::new()
        .route("/api/v1/query_range", axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
            assert_eq!(q["query"], "rate(http_requests_total[1m])");
            assert!(q["start"].parse::<f64>().unwrap() < q["end"].parse::<f64>().unwrap());
            axum::Json(json!({"status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": {"__name__": "rate_http", "job": "api"}, "values": [[1795000000.0, "1.5"], [1795000015.0, "2.5"]]},
                {"metric": {"job": "db", "__name__": "rate_http"}, "values": [[1795000000.0, "NaN"]]}
            ]}}))
        }))
        .route("/loki/api/v1/query_range", axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
            assert_eq!(q["query"], "{app=\"api\"} |= \"error\"");
            axum::Json(json!({"status": "success", "data": {"resultType": "streams", "result": [
                {"stream": {"app": "api"}, "values": [["1795000000000000000", "error: boom"], ["1795000001000000000", "error: again"]]}
            ]}}))
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (ingest, mut rx) = Ingest::new(8, recorded());
    let puller = aegis_ingest::pull::Puller::new(
        aegis_ingest::pull::PullSettings {
            prometheus: Some((url.clone(), vec!["rate(http_requests_total[1m])".into()])),
            loki: Some((url, vec!["{app=\"api\"} |= \"error\"".into()])),
            interval: std::time::Duration::from_secs(15),
        },
        ingest.clone(),
    )
    .unwrap();
    let (samples, lines) = puller
        .poll_once(1_795_000_000_000, 1_795_000_030_000)
        .await
        .unwrap();
    assert_eq!((samples, lines), (3, 2));
    let batch = rx.recv().await.unwrap();
    assert_eq!(
        (batch.source, batch.batch.num_rows()),
        ("prometheus_pull", 3)
    );
    let ts = batch
        .batch
        .column(1)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap();
    assert_eq!(ts.value(1), 1_795_000_015_000);
    let labels: Vec<String> = {
        let registry = ingest.registry().lock().unwrap();
        registry
            .labels(0)
            .unwrap()
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    };
    assert_eq!(labels, ["__name__=rate_http", "job=api"]);
    let logs = rx.recv().await.unwrap();
    assert_eq!((logs.source, logs.batch.num_rows()), ("loki_pull", 2));
}
