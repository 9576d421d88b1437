//! The one error type of the API and its JSON envelope.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::middleware::current_request_id;

/// Machine-readable error codes, stable for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is invalid (400).
    BadRequest,
    /// No or invalid credentials (401).
    Unauthenticated,
    /// Authenticated but not allowed (403).
    Forbidden,
    /// Nothing at this path or with this id (404).
    NotFound,
    /// The method is not served at this path (405).
    MethodNotAllowed,
    /// A conflicting state or a replayed request (409).
    Conflict,
    /// The body is larger than allowed (413).
    PayloadTooLarge,
    /// The content type is not accepted (415).
    UnsupportedMediaType,
    /// The body parsed but its content is not acceptable (422).
    Unprocessable,
    /// Too many requests; retry after `Retry-After` (429).
    RateLimited,
    /// Overloaded or not ready; retry after `Retry-After` (503).
    Unavailable,
    /// The request took too long (408).
    Timeout,
    /// A fault on our side (500); details are in the log under the request id.
    Internal,
}

impl ErrorCode {
    /// The code for a status produced outside a handler (router, body limit, panic).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Unauthenticated,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 => Self::Timeout,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            422 => Self::Unprocessable,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            400..=499 => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

/// An error answer: status, code and a message meant for the caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: ErrorCode,
    message: &'a str,
    request_id: &'a str,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400: the caller sent something invalid; the message says what to change.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// 401: missing or invalid credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    /// 403: not allowed, with the reason.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 409: conflicts with the current state or replays an earlier request.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    /// 413: the body is too large.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            message,
        )
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many requests",
        )
        .with_retry_after(retry_after_secs)
    }

    /// 503 with `Retry-After`: overloaded or not ready.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
        .with_retry_after(retry_after_secs)
    }

    /// 500: logs `error` with the request id and tells the caller only that it failed.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(request_id = %current_request_id().unwrap_or_default(), %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; the server log has details under this request id",
        )
    }

    /// Adds a `Retry-After` header (seconds).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Renders the envelope for `request_id`.
    pub(crate) fn render(&self, request_id: &str) -> Response {
        let body = Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                request_id,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(&current_request_id().unwrap_or_default())
    }
}

impl From<aegis_store::Error> for ApiError {
    fn from(error: aegis_store::Error) -> Self {
        match error {
            aegis_store::Error::Conflict(message) => Self::conflict(message),
            // The database is down or unreachable: the request may succeed later (503 with
            // Retry-After, not a 500 that says the server is broken).
            other if other.is_unavailable() => {
                // Once every 10 s at most: an outage under load is a few lines, not one per
                // request.
                static LOG: aegis_runtime::throttle::Throttle =
                    aegis_runtime::throttle::Throttle::new();
                if LOG.ready(std::time::Duration::from_secs(10)) {
                    tracing::warn!(error = %other, "the database is unavailable; answering 503 (logged every 10 s at most)");
                }
                Self::unavailable("the database is unavailable; retry shortly", 5)
            }
            other => Self::internal(other),
        }
    }
}

impl From<aegis_runtime::Refusal> for ApiError {
    fn from(refusal: aegis_runtime::Refusal) -> Self {
        use aegis_runtime::RefusalKind;
        let (status, code) = match refusal.kind {
            RefusalKind::Invalid => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            RefusalKind::Unauthenticated => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
            RefusalKind::Forbidden => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            RefusalKind::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            RefusalKind::Conflict => (StatusCode::CONFLICT, ErrorCode::Conflict),
            RefusalKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            RefusalKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
        };
        let error = Self::new(status, code, refusal.reason);
        match refusal.retry_after {
            Some(secs) => error.with_retry_after(secs),
            None => error,
        }
    }
}

impl From<aegis_runtime::Error> for ApiError {
    fn from(error: aegis_runtime::Error) -> Self {
        match error {
            aegis_runtime::Error::Refused(r) => r.into(),
            aegis_runtime::Error::Store(e) => e.into(),
            aegis_runtime::Error::Internal(e)
            | aegis_runtime::Error::Policy(e)
            | aegis_runtime::Error::Model(e)
            | aegis_runtime::Error::Setup(e) => Self::internal(e),
        }
    }
}
