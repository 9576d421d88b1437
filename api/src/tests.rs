//! Router tests through `oneshot`, on both storage backends where storage is involved.

use aegis_core::ExecutorMode;
use aegis_store::testing::TestDb;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::{AppState, Json, app};

pub(crate) async fn send(
    router: Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

pub(crate) fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

pub(crate) fn assert_envelope(body: &Value, code: &str, headers: &axum::http::HeaderMap) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let id = headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(body["error"]["request_id"], id, "{body}");
}

#[tokio::test]
async fn health_reports_components_on_both_backends() {
    for db in TestDb::both().await {
        let state = AppState::new(db.store.clone(), ExecutorMode::DryRun);
        for path in ["/health", "/api/v1/health"] {
            let (status, headers, body) = send(app(state.clone()), get(path)).await;
            assert_eq!(status, StatusCode::OK, "{} {path}: {body}", db.name());
            assert_eq!(body["status"], "ok");
            assert_eq!(body["components"]["database"]["status"], "ok");
            assert_eq!(body["components"]["database"]["backend"], db.name());
            assert!(
                body["components"]["database"]["schema_version"]
                    .as_i64()
                    .unwrap()
                    >= 1
            );
            assert_eq!(body["components"]["executor"]["mode"], "dry-run");
            assert!(headers.contains_key("x-request-id"));
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn health_is_degraded_with_503_when_the_database_is_gone() {
    for db in TestDb::both().await {
        let state = AppState::new(db.store.clone(), ExecutorMode::Kubernetes);
        db.store.close().await;
        let (status, _, body) = send(app(state), get("/health")).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}: {body}",
            db.name()
        );
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["components"]["database"]["status"], "down");
        assert!(body["components"]["database"]["error"].is_string());
        assert_eq!(body["components"]["executor"]["mode"], "kubernetes");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn unknown_path_and_wrong_method_answer_in_the_envelope() {
    let db = TestDb::sqlite().await;
    let router = app(AppState::new(db.store.clone(), ExecutorMode::DryRun));
    let (status, headers, body) = send(router.clone(), get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "not_found", &headers);

    let request = Request::post("/health").body(Body::empty()).unwrap();
    let (status, headers, body) = send(router, request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_envelope(&body, "method_not_allowed", &headers);
    assert!(headers.contains_key(header::ALLOW));
    db.cleanup().await;
}

#[tokio::test]
async fn client_request_id_is_kept_and_bad_ones_replaced() {
    let db = TestDb::sqlite().await;
    let router = app(AppState::new(db.store.clone(), ExecutorMode::DryRun));
    let request = Request::get("/nope")
        .header("x-request-id", "trace-abc-123")
        .body(Body::empty())
        .unwrap();
    let (_, headers, body) = send(router.clone(), request).await;
    assert_eq!(headers["x-request-id"], "trace-abc-123");
    assert_eq!(body["error"]["request_id"], "trace-abc-123");

    let long = "x".repeat(500);
    let request = Request::get("/health")
        .header("x-request-id", long.as_str())
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(router, request).await;
    let id = headers["x-request-id"].to_str().unwrap();
    assert_ne!(id, long);
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    db.cleanup().await;
}

#[tokio::test]
async fn oversized_body_is_413_in_the_envelope() {
    let db = TestDb::sqlite().await;
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun).with_max_body_bytes(1024);
    let request = Request::get("/health")
        .header(header::CONTENT_LENGTH, "4096")
        .body(Body::from(vec![b'x'; 4096]))
        .unwrap();
    let (status, headers, body) = send(app(state), request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_envelope(&body, "payload_too_large", &headers);
    db.cleanup().await;
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Echo {
    name: String,
}

#[tokio::test]
async fn json_rejections_explain_what_is_wrong() {
    let router = Router::new()
        .route("/echo", post(|Json(e): Json<Echo>| async move { Json(e) }))
        .layer(axum::middleware::from_fn(
            crate::middleware::request_context,
        ));
    let bad = Request::post("/echo")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name": 5}"#))
        .unwrap();
    let (status, headers, body) = send(router.clone(), bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_envelope(&body, "unprocessable", &headers);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("name"),
        "{body}"
    );

    let no_type = Request::post("/echo")
        .body(Body::from(r#"{"name": "a"}"#))
        .unwrap();
    let (status, _, body) = send(router.clone(), no_type).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );

    let syntax = Request::post("/echo")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{"))
        .unwrap();
    let (status, _, body) = send(router, syntax).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let db = TestDb::sqlite().await;
    let router = app(AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_metrics(handle)
        .with_auth(test_auth()));
    send(router.clone(), get("/health")).await;
    send(router.clone(), get("/does/not/exist/42")).await;
    // No policies are installed: the access check itself denies (and is counted).
    let evaluate = Request::post("/api/v1/policy/evaluate")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, bearer("u1", &["user"]))
        .body(Body::from(
            r#"{"action": "delete_user", "resource": "users:1", "type": "api_access"}"#,
        ))
        .unwrap();
    send(router.clone(), evaluate).await;
    let response = router.oneshot(get("/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(r#"aegis_http_requests_total{route="/health",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(!text.contains("/does/not/exist"), "{text}");
    // Other tests share the process-wide recorder, so only presence is certain, not counts.
    assert!(
        text.contains(r#"aegis_policy_evaluations_total{type="api_access",decision="DENY"}"#),
        "{text}"
    );
    assert!(
        text.contains("aegis_policy_evaluation_duration_seconds"),
        "{text}"
    );
    assert!(
        text.contains("aegis_http_request_duration_seconds"),
        "{text}"
    );
    db.cleanup().await;
}

/// Auth for tests: a fixed key, so tokens can be minted without the state, and cheap password
/// hashing (the OWASP cost is covered by its own test).
pub(crate) fn test_auth() -> crate::auth::Auth {
    let key =
        crate::auth::JwtKey::new("test", b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
    let mut settings =
        crate::auth::AuthSettings::new(crate::auth::JwtKeys::single(key, "aegis", "aegis-api"));
    settings.skip_session_check = true;
    crate::auth::Auth {
        settings,
        hasher: crate::auth::PasswordHasher::with_params(1024, 1, 1).unwrap(),
    }
}

/// [`test_auth`] with the session check on, for tests that log in for real.
pub(crate) fn test_auth_with_sessions() -> crate::auth::Auth {
    let mut auth = test_auth();
    auth.settings.skip_session_check = false;
    auth
}

/// A bearer header value for a caller with `roles`, signed with [`test_auth`]'s key.
pub(crate) fn bearer(id: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let (token, _) = test_auth()
        .settings
        .keys
        .issue(
            id,
            &roles,
            "test-session",
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    format!("Bearer {token}")
}

#[tokio::test]
async fn security_headers_cors_and_the_openapi_document() {
    let db = TestDb::sqlite().await;
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_cors_origins(vec!["https://ui.example.com".to_owned()]);
    let (status, headers, _) = send(app(state.clone()), get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );

    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/api/v1/policy/evaluate")
        .header(header::ORIGIN, "https://ui.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(app(state.clone()), preflight).await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://ui.example.com"
    );
    let foreign = Request::get("/health")
        .header(header::ORIGIN, "https://evil.example.com")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(app(state.clone()), foreign).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    let (status, _, doc) = send(app(state.clone()), get("/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/api/v1/auth/login",
        "/api/v1/users/{id}",
        "/api/v1/policy/evaluate",
        "/api/v1/policies/{id}/versions",
        "/health",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let docs = app(state).oneshot(get("/docs/")).await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    db.cleanup().await;
}
