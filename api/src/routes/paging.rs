//! The query parameters every audit listing shares: a time range, a cursor, a page size.

use chrono::{DateTime, Utc};

use crate::ApiError;

/// Largest page.
pub(super) const MAX_PAGE: i64 = 1_000;
/// Page size when none is asked for.
pub(super) const DEFAULT_PAGE: i64 = 100;

/// Parsed `from`, `to`, `cursor` and `limit`.
pub(super) struct Window {
    pub(super) from: Option<DateTime<Utc>>,
    pub(super) to: Option<DateTime<Utc>>,
    pub(super) before_id: Option<i64>,
    pub(super) limit: i64,
}

fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "`{name}` must be an RFC 3339 time such as 2026-11-24T14:00:00Z, not `{v}`"
                    ))
                })
        })
        .transpose()
}

/// Checks and parses the shared parameters.
pub(super) fn window(
    from: Option<&str>,
    to: Option<&str>,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<Window, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let before_id = cursor
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("`cursor` `{c}` is not one this API gave out"))
            })
        })
        .transpose()?;
    Ok(Window {
        from: time("from", from)?,
        to: time("to", to)?,
        before_id,
        limit,
    })
}

/// The cursor of the next page: the last id, when the page was full.
pub(super) fn next_cursor(rows: usize, limit: i64, last_id: Option<i64>) -> Option<String> {
    (rows as i64 == limit)
        .then(|| last_id.map(|id| id.to_string()))
        .flatten()
}
