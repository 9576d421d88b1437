//! Policy endpoints through `oneshot`, on SQLite and PostgreSQL.

use std::sync::Arc;

use aegis_core::ExecutorMode;
use aegis_store::testing::TestDb;
use aegis_store::{AuditWriterOptions, PolicyAuditWriter};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::tests::{assert_envelope, bearer, test_auth};

/// Sends `request` as an admin unless it already says who it is.
async fn send(
    router: axum::Router,
    mut request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            bearer("admin-1", &["admin"]).parse().unwrap(),
        );
    }
    crate::tests::send(router, request).await
}

fn get(path: &str) -> Request<Body> {
    crate::tests::get(path)
}
use crate::{AppState, app};
use aegis_runtime::PolicyService;

fn json_request(method: &str, path: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn empty(method: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap()
}

/// State with the default policies installed and a decision audit writer.
async fn state(db: &TestDb) -> (AppState, Arc<PolicyService>, PolicyAuditWriter) {
    let writer = PolicyAuditWriter::spawn(db.store.clone(), AuditWriterOptions::default());
    let service = Arc::new(PolicyService::new(db.store.clone()).with_audit(writer.sender()));
    assert_eq!(service.install_defaults_if_new().await.unwrap(), 9);
    assert_eq!(
        service.install_defaults_if_new().await.unwrap(),
        0,
        "only on first start"
    );
    service.reload_database().await.unwrap();
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(test_auth())
        .with_policies(Arc::clone(&service));
    (state, service, writer)
}

fn scale_up(severity: &str) -> Value {
    json!({"action": "scale_up", "resource": "cluster:production", "type": "self_healing",
           "context": {"user_id": "ai-engine", "role": "service", "metadata": {"severity": severity},
                       "time": "2026-11-24T14:00:00Z"}})
}

#[tokio::test]
async fn the_three_example_scenarios_decide_as_documented() {
    for db in TestDb::both().await {
        let (state, _, writer) = state(&db).await;
        let router = app(state);
        let (status, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &scale_up("high")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["allowed"], true, "{body}");
        assert_eq!(body["decision"], "ALLOW");
        assert_eq!(body["policy"]["name"], "Allow Auto-Scale");
        assert!(body["evaluated_in_us"].is_u64());
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("Allow Auto-Scale")
        );

        // camelCase spelling of the original design is accepted.
        let delete_user = json!({"action": "delete_user", "resource": "users:42", "policyType": "api_access",
                                 "context": {"userId": "u-7", "role": "user"}});
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &delete_user),
        )
        .await;
        assert_eq!(
            (body["decision"].as_str(), body["policy"]["name"].as_str()),
            (Some("DENY"), Some("Deny User Delete Operations")),
            "{body}"
        );

        let restart = json!({"action": "restart_pod", "resource": "cluster:production", "type": "self_healing",
                             "context": {"role": "service", "time": "2026-11-24T10:30:00+01:00"}});
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &restart),
        )
        .await;
        assert_eq!(
            (body["decision"].as_str(), body["policy"]["name"].as_str()),
            (
                Some("DENY"),
                Some("Deny Destructive Actions During Peak Hours")
            ),
            "{body}"
        );

        // "Why not": the same restart with `?explain=true` lists the candidates; the
        // service remediation policy says it was outranked by the peak-hours deny.
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate?explain=true", &restart),
        )
        .await;
        let candidates = body["candidates"].as_array().unwrap();
        assert_eq!(
            candidates[0]["name"], "Deny Destructive Actions During Peak Hours",
            "{body}"
        );
        assert_eq!(candidates[0]["verdict"], "decided");
        let remediation = candidates
            .iter()
            .find(|c| c["name"] == "Allow Service Remediation")
            .unwrap();
        assert_eq!(remediation["verdict"], "not_matched", "{body}");
        assert!(
            remediation["reason"]
                .as_str()
                .unwrap()
                .contains("resource `cluster:production` matches none of"),
            "{body}"
        );
        let (_, _, plain) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &restart),
        )
        .await;
        assert!(plain.get("candidates").is_none(), "only when asked");

        let written = writer.shutdown(std::time::Duration::from_secs(10)).await;
        assert_eq!(written, 5, "every decision is audited ({})", db.name());
        let (_, _, page) = send(router, get("/api/v1/policy/audit/logs")).await;
        let logs = page["logs"].as_array().unwrap();
        assert_eq!(logs.len(), 5, "{page}");
        assert_eq!(logs[0]["action"], "restart_pod");
        assert_eq!(logs[4]["decision"], "ALLOW");
        // The actor on record is the authenticated caller; whom the question was about
        // is kept apart (issue 27, attack 3).
        assert_eq!(logs[4]["user_id"], "admin-1");
        assert_eq!(logs[4]["role"], "admin");
        assert_eq!(
            logs[4]["context"]["subject"]["user_id"], "ai-engine",
            "{page}"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn crud_versions_and_restore_change_decisions_at_once() {
    for db in TestDb::both().await {
        let (state, _, _writer) = state(&db).await;
        let router = app(state);
        let (_, _, list) = send(router.clone(), get("/api/v1/policies")).await;
        assert_eq!(list["count"], 9, "{list}");

        let freeze = json!({"name": "Freeze Production", "type": "self_healing", "effect": "deny", "priority": 500,
                            "actions": ["*"], "resources": ["cluster:production"]});
        let (status, _, created) = send(
            router.clone(),
            json_request("POST", "/api/v1/policies", &freeze),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["version"], 1);
        let id = created["id"].as_str().unwrap().to_owned();
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &scale_up("critical")),
        )
        .await;
        assert_eq!(body["policy"]["name"], "Freeze Production", "{body}");

        let (status, headers, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policies", &freeze),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_envelope(&body, "conflict", &headers);

        // Disable it (version 2): scaling is allowed again.
        let mut disabled = created.clone();
        disabled["enabled"] = json!(false);
        let put = Request::builder()
            .method("PUT")
            .uri(format!("/api/v1/policies/{id}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::IF_MATCH, "\"1\"")
            .body(Body::from(disabled.to_string()))
            .unwrap();
        let (status, _, updated) = send(router.clone(), put).await;
        assert_eq!(
            (status, updated["version"].as_i64()),
            (StatusCode::OK, Some(2)),
            "{updated}"
        );
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &scale_up("critical")),
        )
        .await;
        assert_eq!(body["decision"], "ALLOW", "{body}");

        // A stale If-Match is a conflict.
        let stale = Request::builder()
            .method("PUT")
            .uri(format!("/api/v1/policies/{id}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::IF_MATCH, "1")
            .body(Body::from(disabled.to_string()))
            .unwrap();
        assert_eq!(send(router.clone(), stale).await.0, StatusCode::CONFLICT);

        // Restore version 1 (enabled) as version 3: denied again.
        let (status, _, restored) = send(
            router.clone(),
            empty("POST", &format!("/api/v1/policies/{id}/versions/1/restore")),
        )
        .await;
        assert_eq!(
            (
                status,
                restored["version"].as_i64(),
                restored["enabled"].as_bool()
            ),
            (StatusCode::OK, Some(3), Some(true)),
            "{restored}"
        );
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &scale_up("critical")),
        )
        .await;
        assert_eq!(body["decision"], "DENY", "{body}");

        let (status, _, _) = send(
            router.clone(),
            empty("DELETE", &format!("/api/v1/policies/{id}")),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &scale_up("critical")),
        )
        .await;
        assert_eq!(body["decision"], "ALLOW", "{body}");
        let (status, headers, body) =
            send(router.clone(), get(&format!("/api/v1/policies/{id}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_envelope(&body, "not_found", &headers);

        let (_, _, history) = send(
            router.clone(),
            get(&format!("/api/v1/policies/{id}/versions")),
        )
        .await;
        let changes: Vec<&str> = history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["change"].as_str().unwrap())
            .collect();
        assert_eq!(
            changes,
            ["create", "update", "restore", "delete"],
            "{history}"
        );
        assert_eq!(history["versions"][1]["changed_by"], "admin-1", "{history}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn invalid_policies_and_requests_are_400_with_the_field_named() {
    let db = TestDb::sqlite().await;
    let (state, _, _writer) = state(&db).await;
    let router = app(state);
    let cases = [
        (
            json!({"name": "x", "type": "self_healing", "effect": "allow", "actions": []}),
            "at least one action",
        ),
        (
            json!({"name": "x", "type": "self_healing", "effect": "allow", "actions": ["a"], "colour": 1}),
            "colour",
        ),
        (
            json!({"name": "x", "type": "self_healing", "effect": "allow", "actions": ["a"],
                "conditions": {"metadata": {"pod": {"matches": "(["}}}}),
            "invalid regex",
        ),
        (
            json!({"name": "x", "type": "self_healing", "effect": "allow", "actions": ["a"],
                "conditions": {"time": {"start": "09:00", "end": "17:00", "timezone": "Nowhere/Town"}}}),
            "unknown timezone",
        ),
        (
            json!({"name": "x", "type": "self_healing", "effect": "maybe", "actions": ["a"]}),
            "maybe",
        ),
    ];
    for (policy, needle) in cases {
        let (status, headers, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policies", &policy),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{policy}: {body}");
        assert_envelope(&body, "bad_request", &headers);
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{needle}: {body}"
        );
    }
    let (status, _, body) = send(
        router.clone(),
        json_request(
            "POST",
            "/api/v1/policy/evaluate",
            &json!({"action": "", "resource": "x", "type": "self_healing"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = send(
        router.clone(),
        get("/api/v1/policy/audit/logs?decision=MAYBE"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = send(
        router.clone(),
        get("/api/v1/policy/audit/logs?from=yesterday"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RFC 3339"),
        "{body}"
    );
    let (status, _, _) = send(router, get("/api/v1/policy/audit/logs?limit=100000")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    db.cleanup().await;
}

#[tokio::test]
async fn emergency_stop_denies_self_healing_survives_restart_and_resumes() {
    for db in TestDb::both().await {
        let (state, _, _writer) = state(&db).await;
        let router = app(state);
        let (status, _, body) = send(
            router.clone(),
            json_request(
                "POST",
                "/api/v1/policy/emergency-stop",
                &json!({"reason": "incident 42"}),
            ),
        )
        .await;
        assert_eq!(
            (status, body["emergency_stop"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{body}"
        );
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &scale_up("high")),
        )
        .await;
        assert_eq!(
            (body["decision"].as_str(), body["kind"].as_str()),
            (Some("DENY"), Some("emergency_stop")),
            "{body}"
        );
        // API access is not affected.
        let admin = json!({"action": "GET /api/v1/users", "resource": "users", "type": "api_access", "context": {"role": "admin"}});
        let (_, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policy/evaluate", &admin),
        )
        .await;
        assert_eq!(body["decision"], "ALLOW", "{body}");

        // A restarted process comes back stopped.
        let (restarted, service, _w) = state_again(&db).await;
        assert!(service.engine().is_stopped(), "{}", db.name());
        let (_, _, body) = send(app(restarted.clone()), get("/api/v1/policy/emergency-stop")).await;
        assert_eq!(body["emergency_stop"], true);

        let (status, _, body) = send(
            app(restarted.clone()),
            empty("POST", "/api/v1/policy/resume"),
        )
        .await;
        assert_eq!(
            (status, body["emergency_stop"].as_bool()),
            (StatusCode::OK, Some(false)),
            "{body}"
        );
        let (_, _, body) = send(
            app(restarted),
            json_request("POST", "/api/v1/policy/evaluate", &scale_up("high")),
        )
        .await;
        assert_eq!(body["decision"], "ALLOW", "{body}");
        let (_, _, page) = send(
            router,
            get("/api/v1/policy/audit/logs?action=emergency_stop"),
        )
        .await;
        assert!(
            page["logs"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("incident 42"),
            "{page}"
        );
        assert_eq!(page["logs"][0]["user_id"], "admin-1", "{page}");
        db.cleanup().await;
    }
}

/// A second service over the same database, as after a restart.
async fn state_again(db: &TestDb) -> (AppState, Arc<PolicyService>, PolicyAuditWriter) {
    let writer = PolicyAuditWriter::spawn(db.store.clone(), AuditWriterOptions::default());
    let service = Arc::new(PolicyService::new(db.store.clone()).with_audit(writer.sender()));
    service.reload_database().await.unwrap();
    service.restore_emergency_stop().await.unwrap();
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(test_auth())
        .with_policies(Arc::clone(&service));
    (state, service, writer)
}

#[tokio::test]
async fn audit_logs_page_with_a_cursor_and_filter() {
    for db in TestDb::both().await {
        let (state, _, writer) = state(&db).await;
        let router = app(state);
        for i in 0..7 {
            let severity = if i % 2 == 0 { "high" } else { "low" };
            send(
                router.clone(),
                json_request("POST", "/api/v1/policy/evaluate", &scale_up(severity)),
            )
            .await;
        }
        writer.shutdown(std::time::Duration::from_secs(10)).await;
        let mut seen = 0;
        let mut url =
            "/api/v1/policy/audit/logs?decision=allow&type=self_healing&limit=2".to_owned();
        loop {
            let (status, _, page) = send(router.clone(), get(&url)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for log in page["logs"].as_array().unwrap() {
                assert_eq!(log["decision"], "ALLOW");
                seen += 1;
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => {
                    url = format!(
                        "/api/v1/policy/audit/logs?decision=allow&type=self_healing&limit=2&cursor={cursor}"
                    )
                }
                None => break,
            }
        }
        assert_eq!(seen, 4, "{}", db.name());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_broken_policy_folder_keeps_the_working_snapshot_and_shows_in_health() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"),
        "name: files allow\ntype: self_healing\neffect: allow\npriority: 1000\nactions: [rollback_deployment]\n").unwrap();
    let service = Arc::new(
        PolicyService::new(db.store.clone()).with_policy_dir(Some(dir.path().to_path_buf())),
    );
    // The defaults give the admin access to the evaluate endpoint.
    service.install_defaults_if_new().await.unwrap();
    service.reload_database().await.unwrap();
    assert_eq!(service.reload_files(false), Ok(true));
    assert_eq!(
        service.reload_files(false),
        Ok(false),
        "unchanged files are not reloaded"
    );
    let router = app(AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(test_auth())
        .with_policies(Arc::clone(&service)));
    let rollback =
        json!({"action": "rollback_deployment", "resource": "x", "type": "self_healing"});
    let (_, _, body) = send(
        router.clone(),
        json_request("POST", "/api/v1/policy/evaluate", &rollback),
    )
    .await;
    assert_eq!(body["decision"], "ALLOW", "{body}");

    std::fs::write(
        dir.path().join("p.yaml"),
        "name: files allow\ntype: self_healing\neffect: allow\nactions: []\n",
    )
    .unwrap();
    let error = service.reload_files(false).unwrap_err().to_string();
    assert!(
        error.contains("p.yaml:5") || error.contains("p.yaml:4"),
        "{error}"
    );
    let (_, _, body) = send(
        router.clone(),
        json_request("POST", "/api/v1/policy/evaluate", &rollback),
    )
    .await;
    assert_eq!(body["decision"], "ALLOW", "the old snapshot stays: {body}");
    let (status, _, health) = send(router.clone(), get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["components"]["policies"]["file_error"]
            .as_str()
            .unwrap()
            .contains("at least one action"),
        "{health}"
    );

    std::fs::remove_file(dir.path().join("p.yaml")).unwrap();
    assert_eq!(service.reload_files(false), Ok(true));
    let (_, _, body) = send(
        router.clone(),
        json_request("POST", "/api/v1/policy/evaluate", &rollback),
    )
    .await;
    assert_eq!(body["decision"], "DENY", "{body}");
    let (_, _, health) = send(router, get("/health")).await;
    assert_eq!(health["status"], "ok", "{health}");
    db.cleanup().await;
}

#[tokio::test]
async fn a_replica_picks_up_another_replicas_policy_change() {
    for db in TestDb::both().await {
        let (state_a, _, _wa) = state(&db).await;
        let (_, replica_b, _wb) = state_again(&db).await;
        assert_eq!(replica_b.reload_database_if_changed().await, Ok(false));
        let freeze = json!({"name": "Freeze", "type": "self_healing", "effect": "deny", "priority": 900, "actions": ["*"]});
        let (status, _, _) = send(
            app(state_a),
            json_request("POST", "/api/v1/policies", &freeze),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            replica_b.reload_database_if_changed().await,
            Ok(true),
            "{}",
            db.name()
        );
        let req: aegis_policy::Request = serde_json::from_value(scale_up("high")).unwrap();
        let at = chrono::Utc::now();
        assert_eq!(
            replica_b
                .engine()
                .evaluate_at(&req, at)
                .policy()
                .unwrap()
                .name,
            "Freeze"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_change_that_breaks_a_guard_rail_is_refused_over_the_api_and_from_the_folder() {
    for db in TestDb::both().await {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("guardrails_invariants.yaml"),
            "invariants:\n  - name: nothing in kube-system\n    never_allow:\n      type: self_healing\n      resources: [\"cluster:kube-system/*\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("protect.yaml"),
            "name: Protect kube-system\ntype: self_healing\neffect: deny\npriority: 1000\nactions: [\"*\"]\nresources: [\"cluster:kube-system/*\"]\n",
        )
        .unwrap();
        let service = Arc::new(
            PolicyService::new(db.store.clone()).with_policy_dir(Some(dir.path().to_path_buf())),
        );
        service.install_defaults_if_new().await.unwrap();
        service.reload_database().await.unwrap();
        assert_eq!(service.reload_files(false), Ok(true), "{}", db.name());
        let router = app(AppState::new(db.store.clone(), ExecutorMode::DryRun)
            .with_auth(test_auth())
            .with_policies(Arc::clone(&service)));
        let opener = json!({"name": "Restart CoreDNS", "type": "self_healing", "effect": "allow",
            "priority": 2000, "actions": ["restart_pod"],
            "resources": ["cluster:kube-system/deployment/coredns"]});
        let (status, headers, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policies", &opener),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{}: {body}", db.name());
        assert_envelope(&body, "conflict", &headers);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("nothing in kube-system")
                && message.contains("Restart CoreDNS")
                && message.contains("cluster:kube-system/deployment/coredns"),
            "{message}"
        );
        let (_, _, list) = send(router.clone(), get("/api/v1/policies")).await;
        assert!(
            !list.to_string().contains("Restart CoreDNS"),
            "nothing was written"
        );
        // Below the deny it cannot get through: accepted.
        let mut harmless = opener.clone();
        harmless["priority"] = json!(10);
        let (status, _, body) = send(
            router.clone(),
            json_request("POST", "/api/v1/policies", &harmless),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        // Raising it over the deny is refused too.
        let (status, _, _) = send(
            router.clone(),
            json_request("PUT", &format!("/api/v1/policies/{id}"), &opener),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);

        // The folder: dropping the deny would open kube-system; the old set stays.
        std::fs::remove_file(dir.path().join("protect.yaml")).unwrap();
        let error = service.reload_files(false).unwrap_err().to_string();
        assert!(error.contains("nothing in kube-system"), "{error}");
        assert_eq!(service.health().status, "degraded");
        db.cleanup().await;
    }
}
