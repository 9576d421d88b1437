//! Approval gates end to end, on SQLite and PostgreSQL: an action allowed by a policy with
//! `require_approval` waits in the queue with its dry-run; approved, it goes through the
//! guards and runs; rejected or timed out, it never runs; every step is in the audit chain.

use std::sync::Arc;
use std::time::Duration;

use aegis_core::ExecutorMode;
use aegis_executor::{Action, ActionRequest, Executor, Params};
use aegis_policy::{Origin, Policy, PolicySpec};
use aegis_store::testing::TestDb;
use aegis_store::{ActionAuditQuery, ExecutorStore};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::tests::{assert_envelope, bearer, send, test_auth};
use crate::{AppState, app};
use aegis_runtime::PolicyService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings, policy_request};
use aegis_runtime::ratelimit::{Limiter, Limits};

fn policy(name: &str, v: Value) -> Policy {
    Policy {
        id: name.into(),
        spec: PolicySpec::from_json(v).unwrap(),
        origin: Origin::Builtin,
    }
}

async fn setup(
    db: &TestDb,
    timeout: Duration,
) -> (Router, Arc<ExecutorService>, Arc<PolicyService>) {
    let policies = Arc::new(PolicyService::new(db.store.clone()));
    policies
        .engine()
        .set_file_policies(vec![
            policy(
                "remediate",
                json!({"name": "Service Remediation", "type": "self_healing",
                "effect": "allow", "priority": 10, "actions": ["*"], "resources": ["cluster:*"],
                "conditions": {"roles": ["service"]}}),
            ),
            policy(
                "gate",
                json!({"name": "Severe Scaling Needs Approval", "type": "self_healing",
                "effect": "allow", "priority": 60, "actions": ["scale_deployment"],
                "resources": ["cluster:production/*"], "conditions": {"roles": ["service"]},
                "require_approval": {"min_severity": "high"}}),
            ),
            policy(
                "admin",
                json!({"name": "admin api", "type": "api_access", "effect": "allow",
                "actions": ["*"], "conditions": {"roles": ["admin"]}}),
            ),
        ])
        .unwrap();
    let executor = Arc::new(ExecutorService::new(
        Executor::DryRun,
        ExecutorSettings {
            require_signature: false,
            approval_timeout: timeout,
            cooldown: Duration::ZERO,
            ..ExecutorSettings::default()
        },
        Limiter::in_memory(Limits::default()),
    ));
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(test_auth())
        .with_policies(Arc::clone(&policies))
        .with_executor_arc(Arc::clone(&executor));
    (app(state), executor, policies)
}

/// Scale `production/deployment/NAME` up by one, as the loop asks.
fn scale(name: &str) -> ActionRequest {
    ActionRequest {
        action: Action::ScaleDeployment,
        namespace: "production".into(),
        target: format!("deployment/{name}"),
        params: Params {
            scale_by: Some(1),
            ..Params::default()
        },
        reason: Some("cpu saturated".into()),
        timestamp: chrono::Utc::now(),
        nonce: uuid::Uuid::now_v7().to_string(),
        idempotency_key: None,
    }
}

/// The loop's request: scale `deployment/NAME` by one at `severity`.
async fn ask(
    db: &TestDb,
    executor: &ExecutorService,
    policies: &PolicyService,
    name: &str,
    severity: &str,
) -> aegis_runtime::guards::ExecuteResponse {
    ask_as(db, executor, policies, name, severity, "aegis-engine").await
}

/// [`ask`] on behalf of `actor`.
async fn ask_as(
    db: &TestDb,
    executor: &ExecutorService,
    policies: &PolicyService,
    name: &str,
    severity: &str,
    actor: &str,
) -> aegis_runtime::guards::ExecuteResponse {
    let req = scale(name);
    let mut question = policy_request(&req, None);
    question
        .context
        .metadata
        .insert("severity".into(), json!(severity));
    executor
        .execute_internal(&db.store, policies, req, actor, question, None)
        .await
        .unwrap()
}

fn post(path: &str, body: Option<Value>) -> Request<Body> {
    Request::post(path)
        .header(header::AUTHORIZATION, bearer("admin-1", &["admin"]))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, bearer("admin-1", &["admin"]))
        .body(Body::empty())
        .unwrap()
}

async fn phases(db: &TestDb, target: &str) -> Vec<(String, String)> {
    let mut rows = db
        .store
        .list_action_audit(&ActionAuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    rows.retain(|r| r.target == target);
    rows.reverse();
    rows.into_iter().map(|r| (r.phase, r.status)).collect()
}

#[tokio::test]
async fn an_approval_is_approved_rejected_or_times_out() {
    for db in TestDb::both().await {
        let (router, executor, policies) = setup(&db, Duration::from_secs(60)).await;

        // Medium severity: below the gate's threshold, carried out at once.
        let direct = ask(&db, &executor, &policies, "web", "medium").await;
        assert_eq!(direct.status, "dry_run", "{}", db.name());

        // Critical: held, with the dry-run of what it would do.
        let held = ask(&db, &executor, &policies, "api", "critical").await;
        assert_eq!(held.status, "awaiting_approval", "{}: {held:?}", db.name());
        assert!(held.message.contains("Severe Scaling Needs Approval"));
        let (status, _, queue) =
            send(router.clone(), get("/api/v1/approvals?status=pending")).await;
        assert_eq!(status, StatusCode::OK, "{queue}");
        assert_eq!(queue["count"], 1, "{queue}");
        let item = &queue["approvals"][0];
        assert_eq!(item["id"], held.id);
        assert_eq!(item["entity"], "production/deployment/api");
        assert_eq!(item["policy"], "Severe Scaling Needs Approval");
        assert!(
            item["dry_run"]["message"].as_str().unwrap().contains("api"),
            "the approver sees what would be done: {item}"
        );
        assert_eq!(
            item["question"]["context"]["metadata"]["severity"],
            "critical"
        );
        assert_eq!(
            phases(&db, "deployment/api").await,
            [("approval".into(), "pending".into())]
        );

        // Approved: the guards run again and the action is carried out.
        let (status, _, decided) = send(
            router.clone(),
            post(
                &format!("/api/v1/approvals/{}/approve", held.id),
                Some(json!({"reason": "capacity review ok"})),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        assert_eq!(decided["approval"]["status"], "approved");
        assert_eq!(decided["approval"]["decided_by"], "admin-1");
        assert_eq!(decided["action"]["status"], "dry_run", "{decided}");
        assert_eq!(decided["approval"]["action_id"], decided["action"]["id"]);
        assert_eq!(
            phases(&db, "deployment/api").await,
            [
                ("approval".into(), "pending".into()),
                ("approval".into(), "approved".into()),
                ("intent".into(), "pending".into()),
                ("result".into(), "dry_run".into()),
            ]
        );
        // Once only.
        let (status, _, again) = send(
            router.clone(),
            post(&format!("/api/v1/approvals/{}/approve", held.id), None),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        assert!(
            again["error"]["message"]
                .as_str()
                .unwrap()
                .contains("approved already")
        );

        // Rejected: never carried out.
        let held = ask(&db, &executor, &policies, "checkout", "high").await;
        let (status, _, decided) = send(
            router.clone(),
            post(
                &format!("/api/v1/approvals/{}/reject", held.id),
                Some(json!({"reason": "not during the sale"})),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        assert_eq!(decided["approval"]["status"], "rejected");
        assert_eq!(decided["approval"]["reason"], "not during the sale");
        assert!(decided.get("action").is_none());
        assert_eq!(
            phases(&db, "deployment/checkout").await,
            [
                ("approval".into(), "pending".into()),
                ("approval".into(), "rejected".into()),
            ]
        );
        let (status, _, missing) =
            send(router.clone(), post("/api/v1/approvals/nope/approve", None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn an_approval_that_times_out_is_a_rejection() {
    for db in TestDb::both().await {
        let (router, executor, policies) = setup(&db, Duration::from_secs(1)).await;
        let held = ask(&db, &executor, &policies, "api", "critical").await;
        assert_eq!(held.status, "awaiting_approval");
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let (status, _, late) = send(
            router.clone(),
            post(&format!("/api/v1/approvals/{}/approve", held.id), None),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{}: {late}", db.name());
        assert!(
            late["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expired"),
            "{late}"
        );
        let (_, _, item) = send(
            router.clone(),
            get(&format!("/api/v1/approvals/{}", held.id)),
        )
        .await;
        assert_eq!(item["status"], "expired");
        assert_eq!(item["reason"], "timed out");
        assert_eq!(
            phases(&db, "deployment/api").await,
            [
                ("approval".into(), "pending".into()),
                ("approval".into(), "expired".into()),
            ],
            "{}: never carried out",
            db.name()
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn an_open_breaker_refuses_actions_until_an_operator_resets_it() {
    for db in TestDb::both().await {
        let (router, executor, policies) = setup(&db, Duration::from_secs(60)).await;
        for _ in 0..3 {
            db.store
                .record_verification("production/web", false, 3)
                .await
                .unwrap();
        }
        let (status, _, list) = send(router.clone(), get("/api/v1/breakers")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["breakers"][0]["entity"], "production/web");
        assert_eq!(list["breakers"][0]["open"], true);
        let req = scale("web");
        let mut question = policy_request(&req, None);
        // Without a severity the approval gate would hold it (fail closed).
        question
            .context
            .metadata
            .insert("severity".into(), json!("low"));
        let refused = executor
            .execute_internal(
                &db.store,
                &policies,
                req.clone(),
                "aegis-engine",
                question.clone(),
                None,
            )
            .await
            .unwrap_err();
        // The runtime's refusal as the API answers it.
        let refused = crate::ApiError::from(refused);
        assert_eq!(refused.status(), StatusCode::CONFLICT, "{}", db.name());
        assert!(
            refused
                .message()
                .contains("circuit breaker open on production/web")
        );
        let (status, _, reset) = send(
            router.clone(),
            post("/api/v1/breakers/production/web/reset", None),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reset}");
        assert_eq!(reset["open"], false);
        assert_eq!(reset["reset_by"], "admin-1");
        let done = executor
            .execute_internal(&db.store, &policies, req, "aegis-engine", question, None)
            .await
            .unwrap();
        assert_eq!(done.status, "dry_run");
        assert_eq!(
            phases(&db, "deployment/web").await,
            [
                ("result".into(), "denied".into()),
                ("breaker".into(), "reset".into()),
                ("intent".into(), "pending".into()),
                ("result".into(), "dry_run".into()),
            ]
        );
        let (status, _, _) =
            send(router, post("/api/v1/breakers/production/nope/reset", None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        db.cleanup().await;
    }
}

/// Issue 27: four-eyes approvals. The caller whose action was held cannot approve it (the
/// attempt is refused, audited and changes nothing); another approver can, and the approval
/// records both who asked and who approved.
#[tokio::test]
async fn whoever_asked_cannot_approve_their_own_held_action() {
    for db in TestDb::both().await {
        let (router, executor, policies) = setup(&db, Duration::from_secs(60)).await;
        let held = ask_as(&db, &executor, &policies, "api", "critical", "admin-1").await;
        assert_eq!(held.status, "awaiting_approval", "{}: {held:?}", db.name());
        let approve = format!("/api/v1/approvals/{}/approve", held.id);
        let (status, headers, refused) = send(router.clone(), post(&approve, None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}: {refused}", db.name());
        assert_envelope(&refused, "forbidden", &headers);
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("four-eyes"),
            "{refused}"
        );
        let (_, _, still) = send(
            router.clone(),
            get(&format!("/api/v1/approvals/{}", held.id)),
        )
        .await;
        assert_eq!(still["status"], "pending", "{still}");
        assert_eq!(
            phases(&db, "deployment/api").await,
            [
                ("approval".into(), "pending".into()),
                ("approval".into(), "refused".into()),
            ]
        );

        let by_other = Request::post(&approve)
            .header(header::AUTHORIZATION, bearer("admin-2", &["admin"]))
            .body(Body::empty())
            .unwrap();
        let (status, _, decided) = send(router.clone(), by_other).await;
        assert_eq!(status, StatusCode::OK, "{}: {decided}", db.name());
        assert_eq!(decided["approval"]["requested_by"], "admin-1");
        assert_eq!(decided["approval"]["decided_by"], "admin-2");
        assert_eq!(decided["action"]["status"], "dry_run", "{decided}");

        // Withdrawing one's own request stays open.
        let held = ask_as(&db, &executor, &policies, "cart", "critical", "admin-1").await;
        let (status, _, decided) = send(
            router.clone(),
            post(&format!("/api/v1/approvals/{}/reject", held.id), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        assert_eq!(decided["approval"]["status"], "rejected");
        db.cleanup().await;
    }
}
