//! `/executor/execute` end to end: guards, audit rows, the fake Kubernetes API; both databases.

use std::sync::Arc;
use std::time::Duration;

use aegis_core::ExecutorMode;
use aegis_executor::testing as fake_kube;
use aegis_executor::{Executor, ScaleLimits, signature};
use aegis_policy::{Origin, Policy, PolicySpec};
use aegis_store::testing::TestDb;
use aegis_store::{AuditLog, ExecutorStore, NewActionAudit};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::tests::{bearer, send, test_auth};
use crate::{AppState, app};
use aegis_runtime::PolicyService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings};
use aegis_runtime::ratelimit::{Limiter, Limits};

const SECRET: &[u8] = b"action-secret-action-secret-0123456789";

fn policy(name: &str, v: Value) -> Policy {
    Policy {
        id: name.into(),
        spec: PolicySpec::from_json(v).unwrap(),
        origin: Origin::Builtin,
    }
}

async fn router(
    db: &TestDb,
    executor: Executor,
    settings: ExecutorSettings,
    per_minute: u32,
) -> Router {
    let service = Arc::new(PolicyService::new(db.store.clone()));
    service
        .engine()
        .set_file_policies(vec![
            policy("allow", json!({"name": "service remediates", "type": "self_healing", "effect": "allow",
                "priority": 10, "actions": ["*"], "resources": ["cluster:*"], "conditions": {"roles": ["service"]}})),
            policy("deny", json!({"name": "no rollbacks of payments", "type": "self_healing", "effect": "deny",
                "priority": 50, "actions": ["rollback_deployment"], "resources": ["cluster:production/deployment/payments"]})),
            policy("admin", json!({"name": "admin api", "type": "api_access", "effect": "allow", "actions": ["*"],
                "conditions": {"roles": ["admin"]}})),
            policy("auditor", json!({"name": "auditor reads", "type": "api_access", "effect": "allow",
                "actions": ["GET /audit/logs"], "conditions": {"roles": ["auditor"]}})),
        ])
        .unwrap();
    let limits = Limits {
        action_per_minute: per_minute,
        ..Limits::default()
    };
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(test_auth())
        .with_policies(service)
        .with_executor(ExecutorService::new(
            executor,
            settings,
            Limiter::in_memory(limits),
        ));
    app(state)
}

fn settings() -> ExecutorSettings {
    ExecutorSettings {
        secret: Some(SECRET.to_vec()),
        scale: ScaleLimits {
            min_replicas: 1,
            max_replicas: 20,
            max_step: 5,
        },
        ..ExecutorSettings::default()
    }
}

fn body(action: &str, namespace: &str, target: &str, params: Value, nonce: &str) -> String {
    json!({"action": action, "namespace": namespace, "target": target, "params": params,
           "reason": "test", "timestamp": chrono::Utc::now(), "nonce": nonce})
    .to_string()
}

fn signed(body: &str) -> Request<Body> {
    let sig = signature::sign(SECRET, body.as_bytes());
    Request::post("/executor/execute")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-aegis-signature", sig)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn denied_rows(db: &TestDb) -> Vec<aegis_store::ActionAuditRow> {
    db.store
        .list_action_audit(&aegis_store::ActionAuditQuery {
            status: Some("denied".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn scale_through_the_fake_cluster_with_intent_and_result() {
    for db in TestDb::both().await {
        let (url, cluster) = fake_kube::start(fake_kube::cluster_with_api()).await;
        let mut s = settings();
        s.cooldown = Duration::ZERO;
        let r = router(&db, Executor::Kubernetes(fake_kube::client(&url)), s, 100).await;
        let (status, _, answer) = send(
            r.clone(),
            signed(&body(
                "scale_deployment",
                "production",
                "api",
                json!({"replicas": 5}),
                "n1",
            )),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{} {answer}", db.name());
        assert_eq!(answer["status"], "succeeded");
        assert_eq!(answer["details"], json!({"from": 3, "to": 5}));
        assert_eq!(
            cluster.lock().unwrap().deployments["api"]["spec"]["replicas"],
            5
        );

        let rows = db
            .store
            .list_action_audit(&aegis_store::ActionAuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let phases: Vec<(&str, &str)> = rows
            .iter()
            .rev()
            .map(|r| (r.phase.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(phases, [("intent", "pending"), ("result", "succeeded")]);
        assert_eq!(rows[0].action_id, answer["id"].as_str().unwrap());
        assert_eq!(answer["audit_id"], rows[0].id);
        assert_eq!(
            rows[0].actor, None,
            "a signed request without a token has no user"
        );

        // A refused outcome (out of bounds) is a `denied` result after its intent, 403.
        let (status, _, answer) = send(
            r.clone(),
            signed(&body(
                "scale_deployment",
                "production",
                "api",
                json!({"replicas": 19}),
                "n2",
            )),
        )
        .await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (StatusCode::FORBIDDEN, Some("denied")),
            "{answer}"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn every_refusal_has_its_status_and_an_audit_row() {
    for db in TestDb::both().await {
        let mut s = settings();
        s.cooldown = Duration::from_secs(600);
        let r = router(&db, Executor::DryRun, s, 3).await;
        let ok = body("restart_pod", "production", "api", json!({}), "first");
        let (status, _, answer) = send(r.clone(), signed(&ok)).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (StatusCode::OK, Some("dry_run")),
            "{} {answer}",
            db.name()
        );

        let mut cases: Vec<(&str, Request<Body>, StatusCode)> = Vec::new();
        let tampered = body("restart_pod", "production", "web", json!({}), "sig");
        let mut bad = signed(&tampered);
        bad.headers_mut().insert(
            "x-aegis-signature",
            signature::sign(b"wrong-secret", tampered.as_bytes())
                .parse()
                .unwrap(),
        );
        cases.push(("bad signature", bad, StatusCode::UNAUTHORIZED));
        let unsigned = Request::post("/executor/execute")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body(
                "restart_pod",
                "production",
                "web",
                json!({}),
                "unsigned",
            )))
            .unwrap();
        cases.push(("no signature", unsigned, StatusCode::UNAUTHORIZED));
        let stale = json!({"action": "restart_pod", "namespace": "production", "target": "web", "params": {},
            "timestamp": chrono::Utc::now() - chrono::Duration::seconds(400), "nonce": "stale"}).to_string();
        cases.push(("stale timestamp", signed(&stale), StatusCode::UNAUTHORIZED));
        cases.push(("replayed nonce", signed(&ok), StatusCode::CONFLICT));
        for ns in ["kube-system", "Production", "production "] {
            let b = json!({"action": "restart_pod", "namespace": ns, "target": "web", "params": {},
                "timestamp": chrono::Utc::now(), "nonce": format!("ns-{ns}")})
            .to_string();
            // The allowlist is exact: no case folding, no trimming.
            cases.push(("namespace", signed(&b), StatusCode::FORBIDDEN));
        }
        cases.push((
            "policy deny",
            signed(&body(
                "rollback_deployment",
                "production",
                "payments",
                json!({}),
                "pol",
            )),
            StatusCode::FORBIDDEN,
        ));
        cases.push((
            "cooldown",
            signed(&body("restart_pod", "production", "api", json!({}), "cool")),
            StatusCode::TOO_MANY_REQUESTS,
        ));
        for (what, request, expected) in cases {
            let (status, headers, answer) = send(r.clone(), request).await;
            assert_eq!(status, expected, "{what} on {}: {answer}", db.name());
            assert!(answer["error"]["message"].is_string(), "{what}: {answer}");
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert!(headers.contains_key(header::RETRY_AFTER), "{what}");
            }
        }
        // Rate: 3 restart actions per minute in `production`. The first dry run and the
        // cooldown refusal took two (the limiter runs before the cooldown); one more passes.
        let (status, _, answer) = send(
            r.clone(),
            signed(&body(
                "restart_pod",
                "production",
                "web-2",
                json!({}),
                "rate-1",
            )),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (status, headers, answer) = send(
            r.clone(),
            signed(&body(
                "restart_pod",
                "production",
                "web-3",
                json!({}),
                "rate-2",
            )),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
        assert!(headers.contains_key(header::RETRY_AFTER));

        let denied = denied_rows(&db).await;
        let reasons: Vec<String> = denied
            .iter()
            .map(|r| r.reason.clone().unwrap_or_default())
            .collect();
        for needle in [
            "does not match",
            "missing X-Aegis-Signature",
            "away from the server's clock",
            "already used",
            "not in AEGIS_ALLOWED_NAMESPACES",
            "`Production` is not in",
            "`production ` is not in",
            "policy: denied by policy `no rollbacks of payments`",
            "cooldown",
            "too many requests",
        ] {
            assert!(
                reasons.iter().any(|r| r.contains(needle)),
                "no audit row for `{needle}` on {}: {reasons:#?}",
                db.name()
            );
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn idempotency_blast_radius_and_the_audit_endpoint() {
    for db in TestDb::both().await {
        let mut s = settings();
        s.blast_radius = 2;
        let r = router(&db, Executor::DryRun, s, 100).await;
        let first = json!({"action": "scale_deployment", "namespace": "production", "target": "api", "params": {"replicas": 2},
            "timestamp": chrono::Utc::now(), "nonce": "a", "idempotency_key": "incident-7"}).to_string();
        let (_, _, one) = send(r.clone(), signed(&first)).await;
        let retry = first.replace("\"nonce\":\"a\"", "\"nonce\":\"b\"");
        assert_ne!(first, retry);
        let (status, _, two) = send(r.clone(), signed(&retry)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["id"], two["id"], "a retry gets the first answer");
        let (status, _, _) = send(
            r.clone(),
            signed(&body("restart_pod", "production", "web", json!({}), "c")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, answer) = send(
            r.clone(),
            signed(&body("restart_pod", "production", "db", json!({}), "d")),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("blast radius"),
            "{answer}"
        );

        let auditor = Request::get("/audit/logs?status=dry_run&namespace=production&limit=1")
            .header(header::AUTHORIZATION, bearer("aud-1", &["auditor"]))
            .body(Body::empty())
            .unwrap();
        let (status, _, page) = send(r.clone(), auditor).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["logs"].as_array().unwrap().len(), 1);
        assert_eq!(page["logs"][0]["action"], "restart_pod");
        assert!(page["next_cursor"].is_string());
        let anonymous = Request::get("/audit/logs").body(Body::empty()).unwrap();
        assert_eq!(send(r.clone(), anonymous).await.0, StatusCode::UNAUTHORIZED);

        let sign = Request::post("/executor/generate-signature")
            .header(header::AUTHORIZATION, bearer("admin-1", &["admin"]))
            .body(Body::from("{\"x\":1}"))
            .unwrap();
        let (status, _, sig) = send(r.clone(), sign).await;
        assert_eq!(
            (status, sig["signature"].as_str()),
            (
                StatusCode::OK,
                Some(signature::sign(SECRET, b"{\"x\":1}").as_str())
            )
        );
        let as_user = Request::post("/executor/generate-signature")
            .header(header::AUTHORIZATION, bearer("u", &["user"]))
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(send(r, as_user).await.0, StatusCode::FORBIDDEN);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn an_intent_without_result_is_marked_unknown_on_start() {
    for db in TestDb::both().await {
        let intent = NewActionAudit {
            created_at: None,
            action_id: "crashed-1".into(),
            phase: "intent".into(),
            action: "restart_pod".into(),
            namespace: "production".into(),
            target: "api".into(),
            status: "pending".into(),
            actor: None,
            reason: None,
            details: json!({}),
        };
        db.store.append_action_audit(&[intent]).await.unwrap();
        let service = ExecutorService::new(
            Executor::DryRun,
            settings(),
            Limiter::in_memory(Limits::default()),
        );
        let pending = service.reconcile(&db.store).await.unwrap();
        assert_eq!(pending.len(), 1, "{}", db.name());
        assert!(db.store.pending_intents().await.unwrap().is_empty());
        let rows = db
            .store
            .list_action_audit(&aegis_store::ActionAuditQuery {
                status: Some("unknown".into()),
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows[0].action_id, "crashed-1");
        assert!(
            service.reconcile(&db.store).await.unwrap().is_empty(),
            "reported once"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_retry_of_an_action_interrupted_between_intent_and_result_is_not_run_again() {
    for db in TestDb::both().await {
        let (url, cluster) = fake_kube::start(fake_kube::cluster_with_api()).await;
        let mut s = settings();
        s.cooldown = Duration::ZERO;
        let executor = Executor::Kubernetes(fake_kube::client(&url));
        // What a crash leaves: the key claimed, the intent written, no result.
        assert!(
            db.store
                .reserve_idempotency_key("incident-9", "crashed-2")
                .await
                .unwrap()
        );
        assert!(
            !db.store
                .reserve_idempotency_key("incident-9", "other")
                .await
                .unwrap(),
            "a claimed key is not claimed twice"
        );
        let r = router(&db, executor, s, 100).await;
        let retry =
            json!({"action": "scale_deployment", "namespace": "production", "target": "api",
            "params": {"replicas": 4}, "timestamp": chrono::Utc::now(), "nonce": "retry-1",
            "idempotency_key": "incident-9"})
            .to_string();
        let (status, _, answer) = send(r.clone(), signed(&retry)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{} {answer}", db.name());
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("crashed-2") && message.contains("not run again"),
            "{message}"
        );
        assert!(
            cluster.lock().unwrap().calls.is_empty(),
            "the cluster was not even asked"
        );

        // A finished key still answers the first answer, and a fresh key acts once.
        let fresh = retry
            .replace("incident-9", "incident-10")
            .replace("retry-1", "fresh-1");
        let (status, _, one) = send(r.clone(), signed(&fresh)).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        let again = fresh.replace("fresh-1", "fresh-2");
        let (status, _, two) = send(r.clone(), signed(&again)).await;
        assert_eq!(status, StatusCode::OK, "{two}");
        assert_eq!(one["id"], two["id"], "{one} {two}");
        let patches = cluster
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == "PATCH")
            .count();
        assert_eq!(patches, 1, "{}: one action, one change: {one}", db.name());
        db.cleanup().await;
    }
}
