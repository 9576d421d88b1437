//! `POST /api/v1/alerts` through the router, on SQLite and PostgreSQL: a firing alert that
//! names a workload is decided and acted on once, repeats never act again, the last
//! resolved alert closes the incident, alerts naming no workload or no action are taken
//! and act on nothing; bad bodies are 400/413 in the error envelope; auth like ingest.

use std::sync::Arc;

use aegis_core::ExecutorMode;
use aegis_store::testing::TestDb;
use aegis_store::{ActionAuditQuery, DetectionStore, ExecutorStore, PredictionQuery};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::tests::{assert_envelope, send, test_auth};
use crate::{AppState, app};
use aegis_runtime::PolicyService;
use aegis_runtime::guards::ExecutorSettings;
use aegis_runtime::healing::{HealingLoop, HealingSettings};

const TOKEN: &str = "static-ingest-token";

async fn router(db: &TestDb) -> (Router, Arc<HealingLoop>) {
    let policies = Arc::new(PolicyService::new(db.store.clone()));
    let settings = HealingSettings {
        alert_rules: vec![
            r#"QueueBacklog{severity=~"critical|page"}=scale_up"#
                .parse()
                .unwrap(),
            "Noisy=none".parse().unwrap(),
        ],
        ..HealingSettings::default()
    };
    let executor = ExecutorSettings {
        require_signature: false,
        ..ExecutorSettings::default()
    };
    let h = crate::healing_tests::build(db, Arc::clone(&policies), executor, settings).await;
    let mut auth = test_auth();
    auth.settings.ingest_token = Some(TOKEN.into());
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(auth)
        .with_policies(policies)
        .with_healing(Arc::clone(&h))
        .with_max_body_bytes(64 * 1024);
    (app(state), h)
}

fn alert(status: &str, fingerprint: &str, labels: Value) -> Value {
    json!({"status": status, "labels": labels,
           "annotations": {"summary": "the queue is deep"},
           "startsAt": "2026-12-05T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
           "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint})
}

fn payload(alerts: &[Value]) -> Vec<u8> {
    json!({"version": "4", "groupKey": "{}:{alertname=\"QueueBacklog\"}", "truncatedAlerts": 0,
           "status": "firing", "receiver": "aegis", "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": alerts})
    .to_string()
    .into_bytes()
}

fn post(body: Vec<u8>, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/api/v1/alerts").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body)).unwrap()
}

fn backlog(fingerprint: &str, status: &str) -> Value {
    alert(
        status,
        fingerprint,
        json!({"alertname": "QueueBacklog", "namespace": "production", "deployment": "api",
               "severity": "critical"}),
    )
}

#[tokio::test]
async fn alerts_open_act_once_and_close_their_workloads_incident() {
    for db in TestDb::both().await {
        let name = db.name();
        let (router, h) = router(&db).await;
        let call = |body: Vec<u8>| send(router.clone(), post(body, Some(TOKEN)));

        // Firing: decided by the policy engine and acted on (dry run here).
        let (status, _, body) = call(payload(&[backlog("fp-1", "firing")])).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(
            (body["received"].as_u64(), body["acted"].as_u64()),
            (Some(1), Some(1)),
            "{name}: {body}"
        );
        let a = &body["alerts"][0];
        assert_eq!(a["result"], "acted");
        assert_eq!(a["entity"], "production/api");
        assert_eq!(a["event"]["recommended_action"], "scale_up");
        assert_eq!(a["event"]["severity"], "critical");
        assert_eq!(a["event"]["decision"], "ALLOW", "{name}: {body}");
        assert_eq!(a["event"]["action_status"], "dry_run", "{name}: {body}");
        let incident = a["incident"].as_u64().unwrap();

        // Alertmanager's repeat: nothing new.
        let (_, _, body) = call(payload(&[backlog("fp-1", "firing")])).await;
        assert_eq!(body["alerts"][0]["result"], "duplicate", "{name}: {body}");
        assert_eq!(body["acted"], 0);
        // A second alert on the same workload asking for the same action joins the incident.
        let second = alert(
            "firing",
            "fp-2",
            json!({"alertname": "QueueBacklog", "namespace": "production",
                   "pod": "api-7d4b9c8f6a-x2kqp", "severity": "page"}),
        );
        let (_, _, body) = call(payload(std::slice::from_ref(&second))).await;
        assert_eq!(body["alerts"][0]["result"], "duplicate", "{name}: {body}");
        assert_eq!(body["alerts"][0]["incident"], incident);

        // No workload; a workload but no action; an action of `none`.
        let (_, _, body) = call(payload(&[
            alert(
                "firing",
                "fp-3",
                json!({"alertname": "NodeDiskFilling", "severity": "critical"}),
            ),
            alert(
                "firing",
                "fp-4",
                json!({"alertname": "Other", "namespace": "production", "deployment": "web"}),
            ),
            alert(
                "firing",
                "fp-5",
                json!({"alertname": "Noisy", "namespace": "production",
                                            "deployment": "web", "aegis_action": "restart_pod"}),
            ),
        ]))
        .await;
        let results: Vec<&str> = body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["result"].as_str().unwrap())
            .collect();
        assert_eq!(
            results,
            ["no_workload", "unmapped", "unmapped"],
            "{name}: {body}"
        );
        assert_eq!(body["acted"], 0);
        assert_eq!(h.stats(0).alert_incidents_open, 1, "{name}");
        // Recorded in the prediction history once, though Alertmanager repeats it.
        let (_, _, body) = call(payload(&[alert(
            "firing",
            "fp-3",
            json!({"alertname": "NodeDiskFilling", "severity": "critical"}),
        )]))
        .await;
        assert_eq!(body["alerts"][0]["result"], "no_workload");
        let recorded = db
            .store
            .predictions(&PredictionQuery {
                detector: Some("alertmanager".into()),
                entity: Some("-".into()),
                limit: 10,
                ..PredictionQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(recorded.len(), 1, "{name}: {recorded:?}");

        // Resolution: the incident closes with its last alert.
        let mut resolved = second;
        resolved["status"] = json!("resolved");
        let (_, _, body) = call(payload(&[backlog("fp-1", "resolved")])).await;
        assert_eq!(body["alerts"][0]["result"], "resolved", "{name}: {body}");
        assert_eq!(
            h.stats(0).alert_incidents_open,
            1,
            "{name}: fp-2 still fires"
        );
        call(payload(&[resolved])).await;
        let stats = h.stats(0);
        assert_eq!(
            (stats.alert_incidents_open, stats.alert_incidents_closed),
            (0, 1),
            "{name}"
        );
        // Post-action verification reads the alert: resolved before the check is effective.
        let later = chrono::Utc::now().timestamp_millis() + 301_000;
        h.tick_at(later, None).await;
        let audit = db
            .store
            .list_action_audit(&ActionAuditQuery {
                limit: 50,
                ..ActionAuditQuery::default()
            })
            .await
            .unwrap();
        let verdicts: Vec<&str> = audit
            .iter()
            .filter(|r| r.phase == "verification")
            .map(|r| r.status.as_str())
            .collect();
        assert_eq!(verdicts, ["effective"], "{name}: {audit:?}");

        // Firing again after that is a new incident, decided afresh.
        let (_, _, body) = call(payload(&[backlog("fp-1", "firing")])).await;
        assert_eq!(body["alerts"][0]["result"], "acted", "{name}: {body}");
        assert_ne!(body["alerts"][0]["incident"].as_u64().unwrap(), incident);

        // The decision record names the alert.
        let records = db
            .store
            .list_decision_records(Some("production/api"), 10)
            .await
            .unwrap();
        assert_eq!(records.len(), 2, "{name}");
        let record: Value = serde_json::from_str(&records[0].record).unwrap();
        assert_eq!(
            record["evidence"]["alert"]["alertname"], "QueueBacklog",
            "{name}: {record}"
        );
        assert_eq!(
            record["decision"]["question"]["context"]["metadata"]["source"], "alertmanager",
            "{name}: {record}"
        );
    }
}

#[tokio::test]
async fn bad_alert_bodies_are_refused_in_the_envelope() {
    let db = TestDb::sqlite().await;
    let (router, h) = router(&db).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not an Alertmanager webhook payload"),
        (br#"{"version": "3", "alerts": []}"#.to_vec(), "version"),
        (br#"{"version": "4"}"#.to_vec(), "alerts"),
        (payload(&[alert("pending", "x", json!({}))]), "status"),
        (
            payload(&[alert(
                "firing",
                "x",
                json!({"alertname": "A", "namespace": "x".repeat(5_000)}),
            )]),
            "longer than",
        ),
        (
            payload(
                &(0..1_001)
                    .map(|i| json!({"status": "firing", "labels": {"n": i.to_string()}}))
                    .collect::<Vec<_>>(),
            ),
            "at most 1000",
        ),
    ];
    for (body, says) in cases {
        let (status, headers, answer) = send(router.clone(), post(body, Some(TOKEN))).await;
        // The 1,001-alert payload is over this router's 64 KiB body limit.
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            assert_envelope(&answer, "payload_too_large", &headers);
            continue;
        }
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_envelope(&answer, "bad_request", &headers);
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    // Oversized: 413 in the envelope.
    let big = payload(&[alert(
        "firing",
        "x",
        json!({"alertname": "A", "filler": "y".repeat(100_000)}),
    )]);
    let (status, headers, answer) = send(router.clone(), post(big, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_envelope(&answer, "payload_too_large", &headers);
    // Without a token: 401; nothing was taken by any of these.
    let (status, _, _) = send(
        router.clone(),
        post(payload(&[backlog("fp-1", "firing")]), None),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.stats(0).alert_incidents_open, 0);
}
