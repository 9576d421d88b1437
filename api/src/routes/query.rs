//! `POST /api/v1/query`: SQL over recent data (see `aegis_sql` for the tables, the limits
//! and how a statement is checked, planned and run). The handler authorizes each table the
//! statement names, refuses what the text alone shows is wrong, and answers JSON rows or an
//! Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_sql::{ARROW_STREAM, QUERY_TIMEOUT, QueryRequest};
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::{ApiError, AppState, ErrorCode, Json};

/// Each table and the endpoint that shows the same rows: a statement naming a table needs
/// the access that endpoint needs (role `user` reads no action audit through SQL either).
const TABLE_ROUTES: [(&str, &str); 5] = [
    ("samples", "/api/v1/ingest/series"),
    ("series", "/api/v1/ingest/series"),
    ("logs", "/api/v1/ingest/streams"),
    ("predictions", "/api/v1/metrics/predictions"),
    ("actions", "/audit/logs"),
];

impl From<aegis_sql::Error> for ApiError {
    fn from(error: aegis_sql::Error) -> Self {
        match error {
            aegis_sql::Error::Invalid(m) => Self::bad_request(m),
            aegis_sql::Error::Busy(m) => Self::unavailable(m, 1),
            aegis_sql::Error::Timeout(m) => {
                Self::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::Timeout, m)
            }
            aegis_sql::Error::Unavailable(m) => Self::unavailable(m, 5),
            aegis_sql::Error::Internal(m) => Self::internal(m),
        }
    }
}

/// The tables of `state`, for one query.
fn tables(state: &AppState) -> Arc<aegis_runtime::tables::Tables> {
    Arc::new(aegis_runtime::tables::Tables {
        healing: state.healing().cloned(),
        ingest: state.ingest().cloned(),
        latest: Arc::clone(state.latest_samples()),
        store: state.store().clone(),
    })
}

/// Runs `sql` over `state`'s tables under a permit, the deadline `timeout` and the
/// configured memory; `encode` makes the answer under the same permit and deadline.
pub(crate) async fn run_within<T: Send + 'static>(
    state: &AppState,
    sql: String,
    limit: usize,
    timeout: Duration,
    encode: impl FnOnce(Arc<Schema>, Vec<RecordBatch>, bool) -> Result<T, aegis_sql::Error>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    aegis_sql::run_within(
        tables(state),
        state.running_queries(),
        state.query_memory_bytes(),
        sql,
        limit,
        timeout,
        encode,
    )
    .await
    .map_err(ApiError::from)
}

#[utoipa::path(post, operation_id = "query", path = "/api/v1/query", tag = "detectors",
    request_body = QueryRequest,
    responses((status = 200, description = "`{columns, rows, row_count, truncated, elapsed_ms}`, or an Arrow IPC stream with `Accept: application/vnd.apache.arrow.stream`", body = Object),
        (status = 400, description = "not a valid read-only statement"), (status = 408, description = "over the time limit"), (status = 503, description = "too many queries at once; retry after `Retry-After`")),
    security(("bearer" = [])))]
pub(super) async fn query(
    State(state): State<AppState>,
    caller: Option<Caller>,
    headers: HeaderMap,
    Json(req): Json<QueryRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let limit = req.check()?;
    let caller = caller.ok_or_else(|| ApiError::unauthenticated("a bearer token is needed"))?;
    for (table, route) in TABLE_ROUTES {
        if aegis_sql::mentions(&req.sql, table) {
            crate::access::authorize_table(
                &state,
                &caller,
                table,
                route,
                crate::middleware::current_request_id(),
            )
            .await?;
        }
    }
    // What can be refused from the text alone is refused before a permit is taken, so a
    // burst of bad statements is answered 400, not 503.
    aegis_sql::check_text(&req.sql)?;
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    let answer = run_within(
        &state,
        req.sql,
        limit,
        QUERY_TIMEOUT,
        move |schema, batches, truncated| {
            if wants_arrow {
                return Ok(Answer::Arrow(
                    aegis_sql::arrow_stream(&schema, &batches)?,
                    truncated,
                ));
            }
            let elapsed_ms = started.elapsed().as_millis() as u64;
            aegis_sql::json_answer(&schema, &batches, truncated, elapsed_ms).map(Answer::Json)
        },
    )
    .await?;
    Ok(match answer {
        Answer::Arrow(buf, truncated) => {
            let mut response = (StatusCode::OK, buf).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
            if truncated {
                response
                    .headers_mut()
                    .insert("x-aegis-truncated", HeaderValue::from_static("true"));
            }
            response
        }
        Answer::Json(body) => {
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    })
}

/// An encoded answer.
enum Answer {
    /// An Arrow IPC stream, and whether the rows were cut at the limit.
    Arrow(Vec<u8>, bool),
    /// The JSON document.
    Json(Vec<u8>),
}
