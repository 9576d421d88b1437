//! `POST /api/v1/write`: Prometheus remote write 1.0 and 2.0.

use std::sync::{Arc, Mutex};

use aegis_core::metric_names;
use aegis_ingest::{DecodeError, IngestError, LatestSamples, RemoteWriteVersion};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState, ErrorCode, Json};

const V2_PROTO: &str = "io.prometheus.write.v2.Request";
const V1_PROTO: &str = "prometheus.WriteRequest";

fn rejected(source: &'static str, reason: &'static str) {
    metrics::counter!(metric_names::INGEST_REJECTED_TOTAL, "source" => source, "reason" => reason)
        .increment(1);
}

/// The answer to a body ingest did not take, counted by reason: 503 (retry) for a full
/// queue, 413 for a body that inflates too far, 400 with the reason otherwise.
fn refused(source: &'static str, error: IngestError) -> ApiError {
    match error {
        IngestError::Overloaded => {
            rejected(source, "overloaded");
            // 503, not 429: Prometheus retries 5xx, but drops on 429 unless told otherwise.
            ApiError::unavailable("the ingest queue is full; retry shortly", 1)
        }
        IngestError::Closed => ApiError::unavailable("ingest is shutting down", 5),
        // Pull mode's own failure; a pushed body never ends here.
        IngestError::Pull(e) => ApiError::internal(e),
        IngestError::Decode(DecodeError::TooLarge { size, max }) => {
            rejected(source, "too_large");
            ApiError::payload_too_large(format!(
                "the body inflates to {size} bytes; at most {max} are accepted"
            ))
        }
        IngestError::Decode(e) => {
            rejected(
                source,
                match e {
                    DecodeError::Limit(_) => "limit",
                    DecodeError::Invalid(_) => "invalid",
                    _ => "malformed",
                },
            );
            ApiError::bad_request(e.to_string())
        }
    }
}

/// The protocol from `Content-Type` (`application/x-protobuf[;proto=...]`), as both specs
/// negotiate it; a missing `proto` parameter means 1.0.
fn version(headers: &HeaderMap) -> Result<RemoteWriteVersion, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let mut parts = content_type.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/x-protobuf"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("remote write takes application/x-protobuf, not `{content_type}`"),
        ));
    }
    let proto = parts
        .find_map(|p| p.strip_prefix("proto="))
        .map(|p| p.trim_matches('"'));
    match proto {
        None | Some(V1_PROTO) => Ok(RemoteWriteVersion::V1),
        Some(V2_PROTO) => Ok(RemoteWriteVersion::V2),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("unknown remote write message `{other}`; use {V1_PROTO} or {V2_PROTO}"),
        )),
    }
}

/// `POST /api/v1/write`.
#[utoipa::path(post, operation_id = "ingest_remote_write", path = "/api/v1/write", tag = "ingest",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "snappy-compressed prometheus.WriteRequest or io.prometheus.write.v2.Request"),
    responses((status = 204, description = "written; 2.0 answers carry X-Prometheus-Remote-Write-*-Written"),
        (status = 400, description = "a bad body, or samples outside [now - max_sample_age, now + future_grace]: the others were taken"), (status = 413), (status = 415), (status = 503, description = "queue full, retry")),
    security(("bearer" = [])))]
pub(crate) async fn remote_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(ingest) = state.ingest() else {
        return Err(ApiError::unavailable("ingest is not enabled", 30));
    };
    let version = version(&headers).inspect_err(|_| rejected("remote_write", "content_type"))?;
    if let Some(encoding) = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        && !encoding.eq_ignore_ascii_case("snappy")
    {
        rejected("remote_write", "content_encoding");
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("remote write bodies are snappy block-compressed, not `{encoding}`"),
        ));
    }
    let ingest = ingest.clone();
    let ingest_for_answer = ingest.clone();
    // Decoding is CPU work of a few hundred microseconds per request: off the async workers.
    let result = tokio::task::spawn_blocking(move || ingest.remote_write(&body, version))
        .await
        .map_err(ApiError::internal)?;
    match result {
        Ok(stats) => {
            metrics::counter!(metric_names::INGEST_SAMPLES_TOTAL, "source" => "remote_write")
                .increment(stats.samples);
            // Samples outside the time window: the rest is taken, and the answer is the 400
            // Prometheus gives out-of-bounds samples, which its senders do not retry.
            let mut response = match ingest_for_answer.describe_refused(&stats.refused, false) {
                Some(text) => {
                    ApiError::bad_request(format!("out of bounds: {text}")).into_response()
                }
                None => StatusCode::NO_CONTENT.into_response(),
            };
            if version == RemoteWriteVersion::V2 {
                let h = response.headers_mut();
                for (name, n) in [
                    ("x-prometheus-remote-write-samples-written", stats.samples),
                    (
                        "x-prometheus-remote-write-histograms-written",
                        stats.histograms,
                    ),
                    (
                        "x-prometheus-remote-write-exemplars-written",
                        stats.exemplars,
                    ),
                ] {
                    h.insert(name, HeaderValue::from(n));
                }
            }
            Ok(response)
        }
        Err(e) => Err(refused("remote_write", e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeriesParams {
    /// `__name__` to match.
    name: String,
}

#[derive(Serialize)]
pub(crate) struct SeriesView {
    labels: std::collections::BTreeMap<String, String>,
    timestamp_ms: i64,
    value: f64,
}

/// `GET /api/v1/ingest/series?name=METRIC`: the series ingested under a metric name with
/// their latest sample (until the engine's SQL endpoint arrives).
#[utoipa::path(get, operation_id = "ingest_series", path = "/api/v1/ingest/series", tag = "ingest",
    params(("name" = String, Query, description = "metric name")), responses((status = 200, body = Object)),
    security(("bearer" = [])))]
pub(crate) async fn series(
    State(state): State<AppState>,
    params: Result<Query<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<SeriesView>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(ingest) = state.ingest() else {
        return Err(ApiError::unavailable("ingest is not enabled", 30));
    };
    let latest: &Arc<Mutex<LatestSamples>> = state.latest_samples();
    let latest = latest.lock().unwrap_or_else(|e| e.into_inner());
    let registry = ingest.registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for id in 0..registry.len() as u32 {
        let Some(labels) = registry.labels(id) else {
            continue;
        };
        if !labels
            .iter()
            .any(|(n, v)| &**n == "__name__" && **v == *p.name)
        {
            continue;
        }
        if let Some((timestamp_ms, value)) = latest.get(id) {
            out.push(SeriesView {
                labels: labels
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                timestamp_ms,
                value,
            });
            if out.len() >= 1_000 {
                break;
            }
        }
    }
    Ok(Json(out))
}

/// `POST /loki/api/v1/push`: protobuf (snappy, with or without `Content-Encoding`, as
/// winston-loki sends it) or JSON, optionally gzip.
#[utoipa::path(post, operation_id = "ingest_loki_push", path = "/loki/api/v1/push", tag = "ingest",
    request_body(content = Object, description = "logproto.PushRequest (application/x-protobuf, snappy) or the JSON form (application/json); Content-Encoding gzip or snappy allowed"),
    responses((status = 204), (status = 400), (status = 413), (status = 415), (status = 503)),
    security(("bearer" = [])))]
pub(crate) async fn loki_push(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    use aegis_ingest::{Compression, LokiFormat};
    let Some(ingest) = state.ingest() else {
        return Err(ApiError::unavailable("ingest is not enabled", 30));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match media.as_str() {
        "application/json" => LokiFormat::Json,
        "application/x-protobuf" | "application/protobuf" | "" => LokiFormat::Protobuf,
        _ => {
            rejected("loki", "content_type");
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                format!(
                    "Loki push takes application/x-protobuf or application/json, not `{content_type}`"
                ),
            ));
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let compression = match (encoding.as_deref(), format) {
        (Some("gzip"), _) => Compression::Gzip,
        (Some("snappy"), _) => Compression::Snappy,
        // Protobuf pushes are snappy-compressed by definition; clients often omit the header.
        (None | Some("identity"), LokiFormat::Protobuf) => Compression::Snappy,
        (None | Some("identity"), LokiFormat::Json) => Compression::None,
        (Some(other), _) => {
            rejected("loki", "content_encoding");
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                format!("unsupported Content-Encoding `{other}`; use gzip or snappy"),
            ));
        }
    };
    let ingest = ingest.clone();
    let ingest_for_answer = ingest.clone();
    let result = tokio::task::spawn_blocking(move || ingest.loki_push(&body, format, compression))
        .await
        .map_err(ApiError::internal)?;
    match result {
        Ok(stats) => {
            metrics::counter!(metric_names::INGEST_LOG_LINES_TOTAL, "source" => "loki")
                .increment(stats.lines);
            // Loki's answer to entries it refuses (too old, too new, too long): 400 naming
            // the entry, the valid ones taken.
            match ingest_for_answer.describe_refused(&stats.refused, true) {
                Some(text) => Err(ApiError::bad_request(text)),
                None => Ok(StatusCode::NO_CONTENT.into_response()),
            }
        }
        Err(e) => Err(refused("loki", e)),
    }
}

/// `GET /api/v1/ingest/streams`: the labels of every log stream received.
#[utoipa::path(get, operation_id = "ingest_streams", path = "/api/v1/ingest/streams", tag = "ingest",
    responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(crate) async fn streams(
    State(state): State<AppState>,
) -> Result<Json<Vec<std::collections::BTreeMap<String, String>>>, ApiError> {
    let Some(ingest) = state.ingest() else {
        return Err(ApiError::unavailable("ingest is not enabled", 30));
    };
    let registry = ingest.streams().lock().unwrap_or_else(|e| e.into_inner());
    let out = (0..registry.len().min(10_000) as u32)
        .filter_map(|id| registry.labels(id))
        .map(|labels| {
            labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    Ok(Json(out))
}
