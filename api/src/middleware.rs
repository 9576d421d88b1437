//! Cross-cutting request handling: request ids, the error envelope for responses made
//! outside handlers, tracing spans and HTTP metrics.

use std::time::Instant;

use aegis_core::metric_names;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::{ApiError, ErrorCode};

/// The header carrying the request id, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The current request's id, when called while a request is handled.
pub(crate) fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A client's id is kept when it is short, visible ASCII; otherwise a new UUIDv7 is made.
fn request_id_for(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// Gives every request an id (echoed in `x-request-id`), a tracing span, and turns any
/// error response that is not already JSON into the error envelope.
pub(crate) async fn request_context(mut req: Request, next: Next) -> Response {
    let id = request_id_for(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    // The route template names the span (`GET /api/v1/policies/{id}`), not the path, so
    // traces group by endpoint; the path stays a field.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    aegis_runtime::telemetry::set_remote_parent(
        &span,
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    aegis_runtime::telemetry::record_trace_id(&span);
    let started = Instant::now();
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span.clone()))
        .await;
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&response) {
        response = envelope_for(response, &id);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    span.record("http.response.status_code", status.as_u16());
    span.in_scope(|| {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        if status == http::StatusCode::SERVICE_UNAVAILABLE {
            // Back-pressure and outages: expected under load, counted where they arise
            // (`aegis_ingest_rejected_total`, the database warning); a line per refused
            // request would flood the log exactly when it matters.
            tracing::debug!(status = status.as_u16(), elapsed_ms, "request refused");
        } else if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), elapsed_ms, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms, "request done");
        }
    });
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Rewrites a plain error response (router 404/405, body limit 413, panic 500) as the
/// envelope, keeping its status and headers such as `Allow` and `Retry-After`.
fn envelope_for(response: Response, request_id: &str) -> Response {
    let status = response.status();
    let code = ErrorCode::for_status(status);
    let message = match code {
        ErrorCode::NotFound => "no such endpoint; see /api/v1/openapi.json",
        ErrorCode::MethodNotAllowed => {
            "method not allowed on this endpoint; see the `Allow` header"
        }
        ErrorCode::PayloadTooLarge => "request body too large",
        ErrorCode::Timeout => "request took too long",
        ErrorCode::Internal => "internal error; the server log has details under this request id",
        _ => status.canonical_reason().unwrap_or("request failed"),
    };
    let (parts, _) = response.into_parts();
    let mut rendered = ApiError::new(status, code, message).render(request_id);
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            rendered.headers_mut().insert(name, value.clone());
        }
    }
    rendered
}

/// Counts and times every request by route template (never the raw path, which would let
/// clients create unbounded label values).
pub(crate) async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(metric_names::HTTP_REQUESTS_TOTAL, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(metric_names::HTTP_REQUEST_DURATION_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Security headers on every response. Pages under `/docs` (Swagger UI) get a CSP that lets
/// their own scripts and styles run; everything else is JSON and gets `default-src 'none'`.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let docs = req.uri().path().starts_with("/docs");
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let set = |headers: &mut http::HeaderMap, name: &'static str, value: &'static str| {
        headers
            .entry(http::HeaderName::from_static(name))
            .or_insert(http::HeaderValue::from_static(value));
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "no-referrer");
    set(
        headers,
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    );
    if docs {
        set(
            headers,
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        );
    } else {
        set(
            headers,
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        );
        // Tokens travel in these bodies: nothing may cache them.
        set(headers, "cache-control", "no-store");
    }
    response
}

/// Reads the whole request body within `timeout` before any handler runs, so a client
/// trickling its body (slowloris) gets a 408 and a closed connection instead of holding a
/// task and a socket for as long as it likes. Every endpoint reads whole bodies anyway, so
/// nothing streams through here; the body limit below this layer still applies.
pub(crate) async fn read_body_in_time(
    timeout: std::time::Duration,
    req: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse;

    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, usize::MAX)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                ApiError::payload_too_large("request body is over the size limit").into_response()
            } else {
                ApiError::bad_request(format!("request body could not be read: {e}"))
                    .into_response()
            };
        }
        Err(_) => {
            tracing::warn!(
                timeout_secs = timeout.as_secs_f64(),
                path = parts.uri.path(),
                "request body not received in time; closing the connection"
            );
            let mut response = ApiError::new(
                http::StatusCode::REQUEST_TIMEOUT,
                ErrorCode::Timeout,
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}
