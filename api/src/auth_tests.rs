//! Auth flows through `oneshot`, on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use aegis_core::ExecutorMode;
use aegis_store::testing::TestDb;
use aegis_store::{AuditWriterOptions, NewUser, PolicyAuditWriter, UserStore};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::tests::{assert_envelope, send, test_auth_with_sessions};
use crate::{AppState, app};
use aegis_runtime::PolicyService;
use aegis_runtime::ratelimit::{Limiter, Limits};

const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    router: Router,
    writer: PolicyAuditWriter,
    admin_id: String,
}

async fn fixture(db: &TestDb, limits: Limits) -> Fixture {
    let writer = PolicyAuditWriter::spawn(db.store.clone(), AuditWriterOptions::default());
    let service = Arc::new(PolicyService::new(db.store.clone()).with_audit(writer.sender()));
    service.install_defaults_if_new().await.unwrap();
    service.reload_database().await.unwrap();
    let auth = test_auth_with_sessions();
    let admin = db
        .store
        .create_user(
            &NewUser {
                email: "root@example.com".into(),
                name: None,
                password_hash: auth.hasher.hash(PASSWORD).unwrap(),
                roles: vec!["admin".into()],
            },
            None,
        )
        .await
        .unwrap();
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(auth)
        .with_limiter(Limiter::in_memory(limits))
        .with_policies(service);
    Fixture {
        router: app(state),
        writer,
        admin_id: admin.id,
    }
}

fn post(path: &str, body: &Value, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn call(method: &str, path: &str, token: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

async fn login(router: &Router, email: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
    send(
        router.clone(),
        post(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
            None,
        ),
    )
    .await
}

#[tokio::test]
async fn signup_login_refresh_rotation_reuse_and_logout() {
    for db in TestDb::both().await {
        let f = fixture(&db, Limits::default()).await;
        let r = &f.router;
        let (status, _, user) = send(
            r.clone(),
            post(
                "/api/v1/auth/signup",
                &json!({"email": " Ada@Example.com ", "password": PASSWORD, "name": "Ada"}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{} {user}", db.name());
        assert_eq!(
            (user["email"].as_str(), user["roles"].clone()),
            (Some("ada@example.com"), json!(["user"]))
        );

        // Issue 27, attack 12: a taken email answers like a new account (no enumeration);
        // nothing changes, the owner's password still works and the decoy's does not.
        let (status, _, decoy) = send(
            r.clone(),
            post(
                "/api/v1/auth/signup",
                &json!({"email": "ada@example.com", "password": "another password 12345"}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{} {decoy}", db.name());
        assert_eq!(
            decoy.as_object().map(|o| o.keys().collect::<Vec<_>>()),
            user.as_object().map(|o| o.keys().collect::<Vec<_>>())
        );
        assert_ne!(decoy["id"], user["id"]);
        assert_eq!(decoy["email"], user["email"]);
        let (status, _, _) = login(r, "ada@example.com", "another password 12345").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let stored = db
            .store
            .user_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(json!(stored.id), user["id"]);
        let (status, _, body) = send(
            r.clone(),
            post(
                "/api/v1/auth/signup",
                &json!({"email": "bob@example.com", "password": "short"}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("at least 12 characters"),
            "{body}"
        );

        let (status, _, tokens) = login(r, "ADA@example.com", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert_eq!(
            (tokens["token_type"].as_str(), tokens["expires_in"].as_u64()),
            (Some("Bearer"), Some(900))
        );
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let refresh1 = tokens["refresh_token"].as_str().unwrap().to_owned();
        let (status, _, me) = send(r.clone(), call("GET", "/api/v1/users/me", &access)).await;
        assert_eq!(
            (status, me["email"].as_str()),
            (StatusCode::OK, Some("ada@example.com")),
            "{me}"
        );

        // Unknown email and wrong password answer alike.
        let (s1, _, wrong) = login(r, "ada@example.com", "not the password at all").await;
        let (s2, _, unknown) = login(r, "nobody@example.com", PASSWORD).await;
        assert_eq!(
            (s1, s2),
            (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
        );
        assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);

        // Rotation: refresh1 -> refresh2; refresh1 again is reuse and kills refresh2 too.
        let (status, _, rotated) = send(
            r.clone(),
            post(
                "/api/v1/auth/refresh",
                &json!({"refresh_token": refresh1}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let refresh2 = rotated["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(refresh1, refresh2);
        let (status, _, body) = send(
            r.clone(),
            post(
                "/api/v1/auth/refresh",
                &json!({"refresh_token": refresh1}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already used"),
            "{body}"
        );
        let (status, _, _) = send(
            r.clone(),
            post(
                "/api/v1/auth/refresh",
                &json!({"refresh_token": refresh2}),
                None,
            ),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the whole family is revoked"
        );

        // Logout revokes the (new) family.
        let (_, _, tokens) = login(r, "ada@example.com", PASSWORD).await;
        let refresh3 = tokens["refresh_token"].as_str().unwrap().to_owned();
        let (status, _, _) = send(
            r.clone(),
            post(
                "/api/v1/auth/logout",
                &json!({"refresh_token": refresh3}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) = send(
            r.clone(),
            post(
                "/api/v1/auth/refresh",
                &json!({"refresh_token": refresh3}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn signup_cannot_escalate_roles() {
    for db in TestDb::both().await {
        let f = fixture(&db, Limits::default()).await;
        for body in [
            json!({"email": "eve@example.com", "password": PASSWORD, "roles": ["admin"]}),
            json!({"email": "eve@example.com", "password": PASSWORD, "role": "admin"}),
        ] {
            let (status, headers, answer) =
                send(f.router.clone(), post("/api/v1/auth/signup", &body, None)).await;
            assert!(status.is_client_error(), "{body}: {status} {answer}");
            assert!(answer["error"]["code"].is_string(), "{answer}");
            assert!(headers.contains_key("x-request-id"));
        }
        assert!(
            db.store
                .user_by_email("eve@example.com")
                .await
                .unwrap()
                .is_none(),
            "{}",
            db.name()
        );
        // A plain signup gets `user`, and a `user` token cannot list users.
        send(
            f.router.clone(),
            post(
                "/api/v1/auth/signup",
                &json!({"email": "eve@example.com", "password": PASSWORD}),
                None,
            ),
        )
        .await;
        let eve = db
            .store
            .user_by_email("eve@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(eve.roles, ["user"]);
        let (_, _, tokens) = login(&f.router, "eve@example.com", PASSWORD).await;
        let (status, _, _) = send(
            f.router.clone(),
            call(
                "GET",
                "/api/v1/users",
                tokens["access_token"].as_str().unwrap(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_user_deleting_a_user_is_403_and_audited_an_admin_gets_204() {
    for db in TestDb::both().await {
        let f = fixture(&db, Limits::default()).await;
        let r = &f.router;
        for email in ["mallory@example.com", "victim@example.com"] {
            send(
                r.clone(),
                post(
                    "/api/v1/auth/signup",
                    &json!({"email": email, "password": PASSWORD}),
                    None,
                ),
            )
            .await;
        }
        let victim = db
            .store
            .user_by_email("victim@example.com")
            .await
            .unwrap()
            .unwrap();
        let (_, _, tokens) = login(r, "mallory@example.com", PASSWORD).await;
        let user_token = tokens["access_token"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/users/{}", victim.id);

        let (status, headers, body) = send(r.clone(), call("DELETE", &path, &user_token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{} {body}", db.name());
        assert_envelope(&body, "forbidden", &headers);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Deny User Delete Operations"),
            "{body}"
        );
        assert!(db.store.user_by_id(&victim.id).await.unwrap().is_some());

        let (_, _, admin) = login(r, "root@example.com", PASSWORD).await;
        let admin_token = admin["access_token"].as_str().unwrap().to_owned();
        let (status, _, body) = send(r.clone(), call("DELETE", &path, &admin_token)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        assert!(db.store.user_by_id(&victim.id).await.unwrap().is_none());
        let (status, _, _) = send(
            r.clone(),
            call(
                "DELETE",
                &format!("/api/v1/users/{}", f.admin_id),
                &admin_token,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "no deleting yourself");

        f.writer.shutdown(Duration::from_secs(10)).await;
        let (_, _, page) = send(
            r.clone(),
            call(
                "GET",
                "/api/v1/policy/audit/logs?type=api_access&action=DELETE%20/api/v1/users/%7Bid%7D",
                &admin_token,
            ),
        )
        .await;
        let logs = page["logs"].as_array().unwrap();
        let decisions: Vec<(&str, &str)> = logs
            .iter()
            .map(|l| {
                (
                    l["decision"].as_str().unwrap(),
                    l["resource"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(decisions.len(), 3, "{page}");
        assert!(decisions.contains(&("DENY", path.as_str())), "{page}");
        assert!(decisions.contains(&("ALLOW", path.as_str())), "{page}");
        let denied = logs.iter().find(|l| l["decision"] == "DENY").unwrap();
        assert_eq!(denied["policy_name"], "Deny User Delete Operations");
        db.cleanup().await;
    }
}

fn forge(token: &str, edit: impl FnOnce(&mut Vec<String>)) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    edit(&mut parts);
    parts.join(".")
}

#[tokio::test]
async fn bad_tokens_are_401() {
    for db in TestDb::both().await {
        let f = fixture(&db, Limits::default()).await;
        let (_, _, tokens) = login(&f.router, "root@example.com", PASSWORD).await;
        let good = tokens["access_token"].as_str().unwrap().to_owned();
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(good.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        let sign = |claims: &Value, secret: &[u8], kid: &str| {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some(kid.into());
            jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_secret(secret))
                .unwrap()
        };
        let secret = b"0123456789abcdef0123456789abcdef";
        let mut expired = claims.clone();
        expired["exp"] = json!(chrono::Utc::now().timestamp() - 60);
        expired["nbf"] = json!(chrono::Utc::now().timestamp() - 3600);
        let mut other_aud = claims.clone();
        other_aud["aud"] = json!("another-service");
        let mut escalated = claims.clone();
        escalated["sub"] = json!("someone-else");
        let cases = [
            (
                "alg none",
                forge(&good, |p| {
                    p[0] = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"test"}"#);
                    p[2] = String::new();
                }),
            ),
            (
                "wrong key",
                sign(&claims, b"another-secret-another-secret-32b", "test"),
            ),
            ("unknown kid", sign(&claims, secret, "other")),
            (
                "tampered payload",
                forge(&good, |p| {
                    p[1] = URL_SAFE_NO_PAD.encode(escalated.to_string())
                }),
            ),
            ("expired", sign(&expired, secret, "test")),
            ("other audience", sign(&other_aud, secret, "test")),
            ("garbage", "not-a-token".to_owned()),
        ];
        for (what, token) in cases {
            let (status, headers, body) =
                send(f.router.clone(), call("GET", "/api/v1/users/me", &token)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} on {}: {body}",
                db.name()
            );
            assert_envelope(&body, "unauthenticated", &headers);
        }
        let (status, _, _) = send(f.router.clone(), call("GET", "/api/v1/users/me", &good)).await;
        assert_eq!(status, StatusCode::OK);
        let anonymous = Request::get("/api/v1/users/me")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(f.router.clone(), anonymous).await.0,
            StatusCode::UNAUTHORIZED
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn service_tokens_authenticate_machines_until_revoked() {
    for db in TestDb::both().await {
        let f = fixture(&db, Limits::default()).await;
        let (_, _, admin) = login(&f.router, "root@example.com", PASSWORD).await;
        let admin_token = admin["access_token"].as_str().unwrap().to_owned();
        let (status, _, created) = send(
            f.router.clone(),
            post(
                "/api/v1/service-tokens",
                &json!({"name": "prometheus-eu-1"}),
                Some(&admin_token),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let token = created["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("aegs_"));
        let (status, _, _) = send(
            f.router.clone(),
            post(
                "/api/v1/service-tokens",
                &json!({"name": "root", "role": "admin"}),
                Some(&admin_token),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "no admin service tokens");

        let evaluate = json!({"action": "scale_up", "resource": "cluster:production", "type": "self_healing",
            "context": {"role": "service", "metadata": {"severity": "high"}}});
        let (status, _, body) = send(
            f.router.clone(),
            post("/api/v1/policy/evaluate", &evaluate, Some(&token)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{} {body}", db.name());
        let (status, _, _) = send(f.router.clone(), call("GET", "/api/v1/users", &token)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "a service may not manage users"
        );

        let id = created["id"].as_str().unwrap();
        let (status, _, _) = send(
            f.router.clone(),
            call(
                "DELETE",
                &format!("/api/v1/service-tokens/{id}"),
                &admin_token,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) = send(
            f.router.clone(),
            post("/api/v1/policy/evaluate", &evaluate, Some(&token)),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn login_attempts_and_requests_are_rate_limited() {
    let db = TestDb::sqlite().await;
    let limits = Limits {
        api_per_minute: 1_000,
        login_account_per_minute: 3,
        login_ip_per_minute: 100,
        ..Limits::default()
    };
    let f = fixture(&db, limits).await;
    for _ in 0..3 {
        assert_eq!(
            login(&f.router, "root@example.com", "wrong password here")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, headers, body) = login(&f.router, "root@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_envelope(&body, "rate_limited", &headers);
    let retry: u64 = headers
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another account is not affected.
    send(
        f.router.clone(),
        post(
            "/api/v1/auth/signup",
            &json!({"email": "ada@example.com", "password": PASSWORD}),
            None,
        ),
    )
    .await;
    assert_eq!(
        login(&f.router, "ada@example.com", PASSWORD).await.0,
        StatusCode::OK
    );

    let limits = Limits {
        api_per_minute: 2,
        ..Limits::default()
    };
    let db2 = TestDb::sqlite().await;
    let f2 = fixture(&db2, limits).await;
    let me = || {
        Request::get("/api/v1/users/me")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(f2.router.clone(), me()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(f2.router.clone(), me()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(f2.router.clone(), me()).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let health = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(
        send(f2.router.clone(), health).await.0,
        StatusCode::OK,
        "probes are never limited"
    );
    db.cleanup().await;
    db2.cleanup().await;
}

/// Issue 27, attack 12: signup can be turned off, and a signup flood cannot take the
/// password-hashing permits logins wait for, nor hash without bound from one client.
#[tokio::test]
async fn signup_can_be_turned_off_and_cannot_starve_logins() {
    for db in TestDb::both().await {
        // Every signup permit held, as by a flood of signups in flight: a login still goes
        // through (on its own permits) while a signup waits.
        let auth = test_auth_with_sessions();
        let held = auth.hasher.hold_signup_permits().await;
        let phc = auth.hasher.hash(PASSWORD).unwrap();
        let login_verified = tokio::time::timeout(
            Duration::from_secs(30),
            auth.hasher.verify_async(PASSWORD.to_owned(), Some(phc)),
        )
        .await;
        assert_eq!(login_verified, Ok(true), "a login waited on signups");
        let signup = tokio::time::timeout(
            Duration::from_millis(200),
            auth.hasher.hash_signup_async(PASSWORD.to_owned()),
        )
        .await;
        assert!(signup.is_err(), "a signup ran without a signup permit");
        drop(held);

        // Signups spend the client's login budget: a flood from one client meets 429s.
        let limited = app(AppState::new(db.store.clone(), ExecutorMode::DryRun)
            .with_auth(test_auth_with_sessions())
            .with_limiter(Limiter::in_memory(Limits {
                login_ip_per_minute: 3,
                ..Limits::default()
            })));
        let mut statuses = Vec::new();
        for i in 0..5 {
            let (status, _, _) = send(
                limited.clone(),
                post(
                    "/api/v1/auth/signup",
                    &json!({"email": format!("flood{i}@example.com"), "password": PASSWORD}),
                    None,
                ),
            )
            .await;
            statuses.push(status.as_u16());
        }
        assert_eq!(statuses, [201, 201, 201, 429, 429], "{}", db.name());

        // Turned off: 403 in the envelope, nothing stored.
        let mut auth = test_auth_with_sessions();
        auth.settings.signup_enabled = false;
        let closed = app(AppState::new(db.store.clone(), ExecutorMode::DryRun).with_auth(auth));
        let (status, headers, body) = send(
            closed,
            post(
                "/api/v1/auth/signup",
                &json!({"email": "closed@example.com", "password": PASSWORD}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_envelope(&body, "forbidden", &headers);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("signup_enabled"),
            "{body}"
        );
        assert!(
            db.store
                .user_by_email("closed@example.com")
                .await
                .unwrap()
                .is_none()
        );
        db.cleanup().await;
    }
}
