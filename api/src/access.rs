//! The front door of every matched route: authenticate, rate-limit, authorise.
//!
//! 1. Authenticate: `Authorization: Bearer` with a JWT access token (user), a service token
//!    (`aegs_…`), or the static ingest token on ingest routes. A presented but invalid token
//!    is 401 at once; no token leaves the request anonymous.
//! 2. Rate-limit per caller (or client IP when anonymous) and route: 429 with `Retry-After`.
//! 3. Authorise: public routes pass; every other route needs a caller and an ALLOW from the
//!    policy engine for the `api_access` request (action `METHOD /route/template`, resource
//!    the path, the caller's id and roles as context). A DENY is 403 with the deciding
//!    policy's reason, and is written to the policy audit log (so are ALLOWs of requests that
//!    change something).

use std::net::SocketAddr;

use aegis_core::metric_names;
use aegis_policy::{Context, PolicyType, Request as PolicyRequest};
use aegis_store::UserStore;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{Method, header};

use crate::auth::{Caller, CallerKind, hash_token};
use crate::{ApiError, AppState, RequestId};
use aegis_runtime::ratelimit::Class;

/// Routes anyone may call. Everything else needs a caller and a policy ALLOW.
const PUBLIC: &[&str] = &[
    "/health",
    "/api/v1/health",
    "/metrics",
    "/api/v1/auth/signup",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/openapi.json",
    "/api/v1/openapi-ui.json",
    // Authenticated by its signature (and, when a token is sent, the caller's roles).
    "/executor/execute",
];

/// Routes that take the static ingest token.
const INGEST: &[&str] = &["/api/v1/write", "/loki/api/v1/push", "/api/v1/alerts"];

/// Never throttled by the per-caller budget: probes, and the ingest endpoints, whose
/// back-pressure is the engine queue's 503 (Prometheus retries a 503 but drops on a 429).
const UNLIMITED: &[&str] = &[
    "/health",
    "/api/v1/health",
    "/metrics",
    "/api/v1/write",
    "/loki/api/v1/push",
    "/api/v1/alerts",
];

fn is_public(route: &str) -> bool {
    PUBLIC.contains(&route) || route.starts_with("/docs")
}

/// The client's address as the listener saw it (no proxy headers are trusted).
pub(crate) fn client_ip(req: &Request) -> String {
    ip_of(req.extensions())
}

fn ip_of(extensions: &http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// The client's IP address as an extractor (`unknown` without connection info).
pub(crate) struct ClientIp(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(ip_of(&parts.extensions)))
    }
}

/// The bearer token; on ingest routes also the password of HTTP Basic auth, which is all
/// some Loki clients (python-logging-loki, winston-loki) can send (as Grafana Cloud's Loki
/// takes an API key).
fn bearer(req: &Request, ingest_route: bool) -> Option<String> {
    use base64::Engine;
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(token.trim().to_owned());
    }
    if ingest_route && scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_owned());
    }
    None
}

fn unauthenticated(message: &str) -> ApiError {
    metrics::counter!(metric_names::AUTH_ATTEMPTS_TOTAL, "result" => "invalid_token").increment(1);
    ApiError::unauthenticated(message.to_owned())
}

async fn authenticate(
    state: &AppState,
    token: Option<&str>,
    route: &str,
) -> Result<Option<Caller>, ApiError> {
    let Some(token) = token else {
        return Ok(None);
    };
    let auth = state.auth();
    if token.starts_with("aegs_") {
        let hash = hash_token(token);
        if let Some(caller) = state.token_cache().get(&hash) {
            return Ok(Some(caller));
        }
        let record = state.store().use_service_token(&hash).await?;
        if let Some(t) = &record {
            state.token_cache().put(
                hash,
                Caller {
                    id: format!("service-token:{}", t.id),
                    roles: vec![t.role.clone()],
                    kind: CallerKind::Service,
                },
            );
        }
        return match record {
            Some(t) => Ok(Some(Caller {
                id: format!("service-token:{}", t.id),
                roles: vec![t.role],
                kind: CallerKind::Service,
            })),
            None => Err(unauthenticated(
                "the service token is unknown, revoked or expired",
            )),
        };
    }
    if INGEST.contains(&route)
        && auth
            .settings
            .ingest_token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    {
        return Ok(Some(Caller {
            id: "ingest-token".to_owned(),
            roles: vec!["service".to_owned()],
            kind: CallerKind::Service,
        }));
    }
    match auth.settings.keys.verify(token) {
        Ok(claims) => {
            let caller = Caller {
                id: claims.sub,
                roles: claims.roles,
                kind: CallerKind::User,
            };
            session_is_live(state, &caller, claims.sid.as_deref()).await?;
            Ok(Some(caller))
        }
        Err(error) => {
            tracing::debug!(%error, "bearer token refused");
            Err(unauthenticated(
                "the access token is invalid or expired; log in again or refresh it",
            ))
        }
    }
}

/// An access token is only as good as the login session it came from: logout, a role change,
/// deactivation, deletion or refresh-token reuse end the session, and its access tokens stop
/// working on the next request instead of living out their 15 minutes. Live sessions are
/// remembered for the token cache's few seconds (cleared here on every such change, so
/// within this process the change is immediate; another replica sees it within the TTL).
async fn session_is_live(
    state: &AppState,
    caller: &Caller,
    sid: Option<&str>,
) -> Result<(), ApiError> {
    #[cfg(test)]
    if state.auth().settings.skip_session_check {
        return Ok(());
    }
    let ended = || {
        unauthenticated(
            "the session has ended (logout, or a change to the account or its roles); log in again",
        )
    };
    let sid = sid.ok_or_else(ended)?;
    let key = format!("session {sid} {}", caller.id);
    if state.token_cache().get(&key).is_some() {
        return Ok(());
    }
    match state.store().session_is_live(&caller.id, sid).await {
        Ok(true) => {
            state.token_cache().put(key, caller.clone());
            Ok(())
        }
        Ok(false) => Err(ended()),
        // The database cannot say right now: a session seen live within an access token's
        // lifetime is taken as still live (as a JWT alone was before sessions were
        // checked), so an outage does not log everyone out; an unknown one waits (503).
        Err(e)
            if e.is_unavailable()
                && state
                    .token_cache()
                    .seen_within(&key, state.auth().settings.access_ttl) =>
        {
            tracing::debug!(error = %e, "the session check cannot reach the database; trusting the session seen live before");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware; see the module documentation.
pub(crate) async fn access(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());

    // Everything needed from the request, taken before the first await: a borrowed request
    // would make this future not `Send`.
    let token = bearer(&req, INGEST.contains(&route.as_str()));
    let asked = Asked {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
    };
    let ip = client_ip(&req);

    let mut caller = match authenticate(&state, token.as_deref(), &route).await {
        Ok(caller) => caller,
        Err(refused) => {
            // A failed authentication costs the client's IP what a failed login costs, so
            // guessing tokens is as slow as guessing passwords, and a flood of made-up
            // tokens meets a 429 instead of a database lookup each. A 503 (the database
            // could not say) is not a failed authentication.
            if refused.status() == http::StatusCode::UNAUTHORIZED
                && let Err(retry_after) = state.limiter().check(Class::LoginIp, &ip).await
            {
                return Err(ApiError::rate_limited(retry_after));
            }
            return Err(refused);
        }
    };
    if caller.is_none() && state.auth().settings.ingest_open && INGEST.contains(&route.as_str()) {
        // Configured open for a trusted network: anonymous senders act as the service role,
        // still through the policy engine.
        caller = Some(Caller {
            id: format!("anonymous-ingest:{ip}"),
            roles: vec!["service".to_owned()],
            kind: CallerKind::Service,
        });
    }

    if !UNLIMITED.contains(&route.as_str()) {
        let who = caller
            .as_ref()
            .map_or_else(|| format!("ip:{ip}"), |c| c.id.clone());
        if let Err(retry_after) = state
            .limiter()
            .check(Class::Api, &format!("{who} {} {route}", asked.method))
            .await
        {
            return Err(ApiError::rate_limited(retry_after));
        }
    }

    if !is_public(&route) {
        let Some(caller) = &caller else {
            return Err(ApiError::unauthenticated(
                "this endpoint needs a bearer token",
            ));
        };
        authorize(&state, &asked, &route, caller).await?;
    }
    if let Some(caller) = caller {
        req.extensions_mut().insert(caller);
    }
    Ok(next.run(req).await)
}

/// Whether `caller` may read SQL table `table`, whose rows `GET route` shows: a table
/// carries the access rules of that endpoint, so SQL is never a way around them. A denial
/// is 403 naming the table and the endpoint, and is on record like any denial.
pub(crate) async fn authorize_table(
    state: &AppState,
    caller: &Caller,
    table: &str,
    route: &str,
    request_id: Option<String>,
) -> Result<(), ApiError> {
    let asked = Asked {
        method: Method::GET,
        path: route.to_owned(),
        request_id,
    };
    authorize(state, &asked, route, caller).await.map_err(|e| {
        if e.status() == http::StatusCode::FORBIDDEN {
            ApiError::forbidden(format!(
                "table `{table}` holds the rows `GET {route}` shows, which you may not read ({})",
                e.message()
            ))
        } else {
            e
        }
    })
}

/// The parts of a request authorisation looks at.
struct Asked {
    method: Method,
    path: String,
    request_id: Option<String>,
}

async fn authorize(
    state: &AppState,
    req: &Asked,
    route: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    let policy_request = PolicyRequest {
        action: format!("{} {route}", req.method),
        resource: req.path.clone(),
        policy_type: PolicyType::ApiAccess,
        context: Context {
            user_id: Some(caller.id.clone()),
            role: None,
            roles: caller.roles.clone(),
            metadata: serde_json::Map::from_iter([
                (
                    "method".to_owned(),
                    serde_json::Value::from(req.method.as_str()),
                ),
                ("route".to_owned(), serde_json::Value::from(route)),
            ]),
            time: None,
        },
    };
    let service = state.policies();
    let decision = service.engine().evaluate(&policy_request);
    metrics::histogram!(metric_names::POLICY_EVALUATION_DURATION_SECONDS)
        .record(decision.elapsed().as_secs_f64());
    metrics::counter!(metric_names::POLICY_EVALUATIONS_TOTAL,
        "type" => "api_access", "decision" => decision.decision())
    .increment(1);
    let reads = matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS);
    // The evaluate endpoint records its own decision; auditing the access check as well would
    // double the audit volume of the busiest endpoint for no information.
    // Ingest requests are telemetry, not changes: auditing every allowed one would write a
    // decision row per Prometheus batch. Their denials are still recorded.
    let routine = route == "/api/v1/policy/evaluate" || INGEST.contains(&route);
    if !decision.allowed() || (!reads && !routine) {
        let recorded = service
            .record(
                &policy_request,
                &decision,
                req.request_id.clone(),
                Some(aegis_runtime::Asker::of(caller.principal())),
            )
            .await;
        // A change goes through only once its permission is on record; a refusal is a
        // refusal either way (its row stays queued).
        if decision.allowed() {
            recorded?;
        }
    }
    if decision.allowed() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{}: {}",
            decision.decision(),
            decision.reason()
        )))
    }
}
