//! Extractors whose rejections speak the error envelope.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ApiError, ErrorCode};

/// JSON body in, JSON body out; a bad body is a 400/413/415 in the error envelope with the
/// parser's explanation (line, column, field).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "expected `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            ApiError::new(status, ErrorCode::for_status(status), r.body_text())
        })?;
        if let Some(at) = nul_in_strings(&bytes) {
            return Err(ApiError::bad_request(format!(
                "{at} holds a NUL character (\\u0000), which no text field may hold"
            )));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection_to_error(rejection)),
        }
    }
}

/// `application/json` or `application/*+json`, as axum's own extractor accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Where a JSON string (a key or a value) holds U+0000, named as a JSON path (`$.action`).
/// Requests are refused at the edge: PostgreSQL cannot store the character in text or
/// jsonb, and a row the database refuses must never reach the audit trail's queue. The
/// full parse runs only when the escape appears in the raw bytes.
fn nul_in_strings(bytes: &[u8]) -> Option<String> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes
        .windows(ESCAPE.len())
        .any(|w| w.eq_ignore_ascii_case(ESCAPE))
    {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    fn walk(v: &serde_json::Value, path: &mut String) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(k, item)| {
                let len = path.len();
                path.push('.');
                path.push_str(&k.replace('\0', "\\u0000"));
                let found = k.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::from("$");
    walk(&value, &mut path).then_some(path)
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected `Content-Type: application/json`".to_owned()
        }
        _ => rejection.body_text(),
    };
    ApiError::new(status, ErrorCode::for_status(status), message)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::nul_in_strings;

    #[test]
    fn a_nul_in_any_string_is_found_and_named() {
        assert_eq!(
            nul_in_strings(br#"{"action":"a\u0000b"}"#).as_deref(),
            Some("$.action")
        );
        assert_eq!(
            nul_in_strings(br#"{"context":{"metadata":[1,"x\u0000"]}}"#).as_deref(),
            Some("$.context.metadata[1]")
        );
        assert!(nul_in_strings(br#"{"k\u0000":1}"#).is_some());
        // An escaped backslash before "u0000" is text, not a NUL.
        assert_eq!(nul_in_strings(br#"{"path":"C:\\u0000"}"#), None);
        assert_eq!(nul_in_strings(br#"{"action":"scale_up"}"#), None);
    }
}
