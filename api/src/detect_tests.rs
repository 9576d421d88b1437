//! Detector endpoints through `oneshot`, on SQLite and PostgreSQL.

use std::sync::Arc;

use aegis_core::ExecutorMode;
use aegis_store::testing::TestDb;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use aegis_store::DetectionStore;

use crate::tests::{assert_envelope, bearer, test_auth};
use crate::{AppState, app};
use aegis_runtime::PolicyService;
use aegis_runtime::detector_service::DetectorService;

fn post(path: &str, body: &Value, role: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, bearer("caller-1", &[role]))
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    let mut r = crate::tests::get(path);
    r.headers_mut().insert(
        header::AUTHORIZATION,
        bearer("caller-1", &["user"]).parse().unwrap(),
    );
    r
}

async fn router(db: &TestDb) -> (axum::Router, Arc<DetectorService>) {
    let policies = Arc::new(PolicyService::new(db.store.clone()));
    policies.install_defaults_if_new().await.unwrap();
    policies.reload_database().await.unwrap();
    let detectors = DetectorService::start(db.store.clone(), 0.6).await.unwrap();
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(test_auth())
        .with_policies(policies)
        .with_detectors(Arc::clone(&detectors));
    (app(state), detectors)
}

#[tokio::test]
async fn detectors_answer_record_and_report_on_both_backends() {
    for db in TestDb::both().await {
        let name = db.name();
        let (router, detectors) = router(&db).await;

        // A healthy workload: not anomalous, nothing to do.
        let healthy = json!({"entity": "production/api", "features": {"cpu_usage": 0.35, "memory_usage": 0.45, "latency_p99_ms": 120.0}});
        let (status, _, body) = crate::tests::send(
            router.clone(),
            post("/api/v1/detect-anomaly", &healthy, "user"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["is_anomaly"], false, "{name}: {body}");
        assert!(
            body["model_version"]
                .as_str()
                .unwrap()
                .starts_with("isolation-forest-")
        );
        assert_eq!(body["defaulted_features"].as_array().unwrap().len(), 13);

        // Saturated: anomalous, explained by the features that drove it.
        let hot = json!({"entity": "production/api", "features": {
            "cpu_usage": 0.99, "cpu_max": 1.0, "latency_p99_ms": 9000.0, "latency_ratio": 12.0,
            "request_rate_ratio": 5.0, "error_rate": 0.3, "memory_usage": 0.97, "memory_slope": 0.05,
            "log_error_rate": 0.6, "log_warn_rate": 0.5}});
        let (status, _, body) = crate::tests::send(
            router.clone(),
            post("/api/v1/detect-anomaly", &hot, "service"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["is_anomaly"], true, "{name}: {body}");
        assert!(body["score"].as_f64().unwrap() >= 0.6);
        assert_ne!(body["severity"], "low", "{body}");
        let top = body["contributions"][0]["feature"].as_str().unwrap();
        assert!(
            [
                "cpu_usage",
                "cpu_max",
                "latency_p99_ms",
                "latency_ratio",
                "request_rate_ratio",
                "error_rate",
                "memory_usage",
                "memory_slope",
                "log_error_rate",
                "log_warn_rate"
            ]
            .contains(&top),
            "{name}: top feature {top}"
        );
        assert!(
            body["recommendation"]["explanation"]
                .as_str()
                .unwrap()
                .contains("anomaly score")
        );

        // A series with one spike: the spike is flagged.
        let mut samples: Vec<f64> = (0..300)
            .map(|i| 50.0 + ((i * 7919) % 13) as f64 / 13.0)
            .collect();
        samples[200] = 150.0;
        let (status, _, body) = crate::tests::send(
            router.clone(),
            post(
                "/api/v1/detect-anomaly",
                &json!({"samples": samples}),
                "user",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        let anomalies: Vec<u64> = body["series"]["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(anomalies.contains(&200), "{name}: {anomalies:?}");
        let scores = body["series"]["scores"].as_array().unwrap();
        let spike = scores[200].as_f64().unwrap();
        assert!(
            scores
                .iter()
                .enumerate()
                .all(|(i, s)| i == 200 || s.as_f64().unwrap() < spike)
        );

        // Bad input: clear 400s in the error envelope.
        for bad in [
            json!({"features": {"cpu": 0.5}}),
            json!({"features": {"cpu_usage": 0.5}, "samples": [1.0]}),
            json!({"samples": [1.0, 2.0]}),
            json!({}),
            json!({"features": {"cpu_usage": 1e300}}),
        ] {
            let (status, headers, body) =
                crate::tests::send(router.clone(), post("/api/v1/detect-anomaly", &bad, "user"))
                    .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {bad} → {body}");
            assert_envelope(&body, "bad_request", &headers);
        }

        // A crash loop from logs and restarts.
        let failure = json!({"entity": "production/api", "features": {"restarts": 9, "ready_ratio": 0.2},
        "logs": [
            "Back-off restarting failed container api in pod api-7d4b9c8f6a-x2kqp",
            {"line": "panic: runtime error: invalid memory address or nil pointer dereference", "level": "error"},
            "Warning BackOff pod/api-7d4b9c8f6a-x2kqp CrashLoopBackOff",
            {"line": "starting api version 2.3.1", "level": "info"}
        ]});
        let (status, _, body) = crate::tests::send(
            router.clone(),
            post("/api/v1/detect-failure", &failure, "service"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["failure_type"], "crash_loop", "{name}: {body}");
        assert_eq!(body["recommendation"]["action"], "rollback_deployment");
        assert!(
            body["model_version"]
                .as_str()
                .unwrap()
                .starts_with("failure-classifier-")
        );
        assert_eq!(body["log_features"]["crash_loop"], 2);
        assert!(!body["templates"].as_array().unwrap().is_empty());
        let p: f64 = body["probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-6);

        // Auditors may not ask the detectors (default api_access policies).
        let (status, _, _) = crate::tests::send(
            router.clone(),
            post("/api/v1/detect-failure", &failure, "auditor"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // History: filters and cursor.
        let (status, _, body) =
            crate::tests::send(router.clone(), get("/api/v1/metrics/predictions?limit=2")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["predictions"].as_array().unwrap().len(), 2);
        let cursor = body["next_cursor"].as_str().unwrap().to_string();
        let (_, _, rest) = crate::tests::send(
            router.clone(),
            get(&format!("/api/v1/metrics/predictions?cursor={cursor}")),
        )
        .await;
        assert_eq!(rest["predictions"].as_array().unwrap().len(), 2, "{rest}");
        let (_, _, body) = crate::tests::send(
            router.clone(),
            get("/api/v1/metrics/predictions?detector=failure_classifier"),
        )
        .await;
        let rows = body["predictions"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["failure_type"], "crash_loop");
        let (_, _, body) = crate::tests::send(
            router.clone(),
            get("/api/v1/metrics/predictions?detector=isolation_forest&is_anomaly=true"),
        )
        .await;
        assert_eq!(body["predictions"].as_array().unwrap().len(), 1, "{body}");
        let (status, _, _) = crate::tests::send(
            router.clone(),
            get("/api/v1/metrics/predictions?severity=extreme"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Stats: both models with versions, the classifier's per-class figures, counts.
        let (status, _, body) =
            crate::tests::send(router.clone(), get("/api/v1/metrics/stats")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["models"][1]["class_metrics"].as_array().unwrap().len(),
            7,
            "{body}"
        );
        let hour = body["detections"]["last_hour"].as_array().unwrap();
        let iforest = hour
            .iter()
            .find(|d| d["detector"] == "isolation_forest")
            .unwrap();
        assert_eq!(
            (
                iforest["predictions"].as_i64(),
                iforest["anomalies"].as_i64()
            ),
            (Some(3), Some(1)),
            "{body}"
        );
        assert!(
            body["latency"]["isolation_forest"]["samples"]
                .as_u64()
                .unwrap()
                >= 3
        );

        // A restart loads the stored models instead of fitting new ones.
        let again = DetectorService::start(db.store.clone(), 0.6).await.unwrap();
        assert_eq!(
            again.anomaly().file.version,
            detectors.anomaly().file.version
        );
        assert_eq!(
            again.classifier().file.version,
            detectors.classifier().file.version
        );
        // Crafted lines never change the engine's template miner (issue 27, attack 6).
        let miner = |router: axum::Router| async move {
            crate::tests::send(router, get("/api/v1/metrics/stats"))
                .await
                .2["templates"]
                .as_u64()
                .unwrap()
        };
        let before = miner(router.clone()).await;
        let crafted: Vec<String> = (0..2_000)
            .map(|i| format!("crafted{i} filler{} token{}", i * 7, i % 13))
            .collect();
        let flood = json!({"entity": "production/api", "logs": crafted});
        let (status, _, body) = crate::tests::send(
            router.clone(),
            post("/api/v1/detect-failure", &flood, "service"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert!(body["log_features"]["new_template_rate"].as_f64().unwrap() > 0.5);
        assert_eq!(miner(router.clone()).await, before, "{name}");

        db.cleanup().await;
    }
}

#[tokio::test]
async fn retraining_swaps_in_a_model_fitted_on_recent_normal_rows() {
    let db = TestDb::sqlite().await;
    let detectors = DetectorService::start(db.store.clone(), 0.6).await.unwrap();
    assert_eq!(detectors.retrain().await.unwrap(), None, "too few rows yet");
    let before = detectors.anomaly().file.version.clone();
    let rows = aegis_detectors::synthetic::healthy_rows(9, 600);
    for i in 0..rows.rows() {
        detectors.remember_normal(rows.row(i));
    }
    let version = detectors.retrain().await.unwrap().unwrap();
    assert_ne!(version, before);
    assert_eq!(detectors.anomaly().file.version, version);
    assert_eq!(detectors.anomaly().file.training_rows, 600);
    let (held, offered, last) = detectors.retraining_state();
    assert_eq!((held, offered), (600, 600));
    assert!(last.is_some());
    db.cleanup().await;
}

#[tokio::test]
async fn labelled_rows_feed_the_next_classifier_training() {
    for db in TestDb::both().await {
        let name = db.name();
        let (router, detectors) = router(&db).await;
        let before = detectors.classifier().file.version.clone();
        let mut features = serde_json::Map::new();
        for (f, v) in aegis_detectors::FAILURE_FEATURES
            .iter()
            .zip(aegis_detectors::HEALTHY_DEFAULTS)
        {
            features.insert((*f).to_string(), json!(v));
        }
        let rows: Vec<Value> = (0..20)
            .map(|_| json!({"label": "none", "features": features, "entity": "production/api"}))
            .collect();
        // Only admins label (default policies): users are refused.
        let (status, _, _) = crate::tests::send(
            router.clone(),
            post("/api/v1/training-data", &json!({"rows": rows}), "user"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}");
        let (status, _, body) = crate::tests::send(
            router.clone(),
            post("/api/v1/training-data", &json!({"rows": rows}), "admin"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(body["inserted"], 20);
        for bad in [
            json!({"rows": [{"label": "meltdown", "features": features}]}),
            json!({"rows": [{"label": "none", "features": {"cpu_usage": 0.5}}]}),
            json!({"rows": []}),
        ] {
            let (status, headers, body) =
                crate::tests::send(router.clone(), post("/api/v1/training-data", &bad, "admin"))
                    .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {bad} → {body}");
            assert_envelope(&body, "bad_request", &headers);
        }
        assert_eq!(db.store.training_rows().await.unwrap().len(), 20);
        let (status, _, body) = crate::tests::send(
            router.clone(),
            post(
                "/api/v1/models/retrain",
                &json!({"model": "failure-classifier"}),
                "admin",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        let version = body["version"].as_str().unwrap().to_string();
        assert_eq!(detectors.classifier().file.version, version);
        assert_eq!(body["class_metrics"].as_array().unwrap().len(), 7);
        // 1,680 bundled training rows plus 16 of the 20 labelled ones (every fifth is held out).
        assert_eq!(
            detectors.classifier().classifier.training_rows,
            1_680 + 16,
            "{name}"
        );
        let _ = before;
        let (status, _, _) = crate::tests::send(
            router.clone(),
            post(
                "/api/v1/models/retrain",
                &json!({"model": "isolation-forest"}),
                "admin",
            ),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{name}: too few normal rows yet"
        );
        db.cleanup().await;
    }
}
