//! Aegis SQL: read-only SQL over recent data, planned and run by DataFusion.
//!
//! - [`catalog`]: the tables (`samples`, `series`, `logs`, `predictions`, `actions`), their
//!   schemas, and the [`Source`] trait that fills them (Arrow only; always built).
//! - `check` (feature `datafusion`): what is refused from the text before any data is read —
//!   statements that are not queries, deep nesting, large expressions, functions that make
//!   data from nothing, table functions.
//! - `run` (feature `datafusion`): planning read-only, running on a blocking thread under a
//!   permit, a deadline and a memory pool of its own, and the answer as JSON rows or Arrow.
//! - [`testing`]: a synthetic samples table of any size (tests, the `query_speed` example).
//!
//! The HTTP handler (`POST /api/v1/query`) authorizes the tables and calls [`run_within`];
//! the `sql_request` fuzz target calls [`plan_request`].

pub mod catalog;
#[cfg(feature = "datafusion")]
mod check;
#[cfg(feature = "datafusion")]
mod run;
pub mod testing;

pub use catalog::{HISTORY_ROWS, Source, Table, mentions};
#[cfg(feature = "datafusion")]
pub use check::check_text;
#[cfg(feature = "datafusion")]
pub use run::{QueryRequest, arrow_stream, json_answer, plan_request, run_within};

use std::time::Duration;

/// Most queries running at once (each on a blocking thread of its own).
pub const MAX_RUNNING_QUERIES: usize = 4;
/// Most rows one answer carries.
pub const MAX_ROWS: usize = 10_000;
/// Longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest statement accepted.
pub const MAX_SQL_BYTES: usize = 16 * 1024;
/// Most parts a dotted name may have: `catalog.schema.table.column` and one field.
pub const MAX_NAME_PARTS: usize = 5;
/// Most operators (`+`, `AND`, `::`, `LIKE`, ...) one statement may hold.
pub const MAX_STATEMENT_OPERATORS: usize = 256;
/// Deepest nesting the parser accepts (each subquery, parenthesis, function call, `CASE`
/// and prefix operator such as `NOT` is a level or two), below DataFusion's 50.
pub const MAX_NESTING: usize = 24;
/// The stack SQL is parsed on: the parser needs up to ~85 KiB per level of nesting in a
/// debug build.
pub const PARSE_STACK: usize = 8 << 20;
/// Most operators and function calls one expression (a select item, a `GROUP BY` key, a
/// `WHERE` condition) may hold.
pub const MAX_EXPRESSION_OPERATORS: usize = 64;
/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// Most bytes of Arrow data one answer may hold (before JSON encoding): a query that
/// selects more is refused, not streamed out of memory.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// Why a query was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a valid read-only statement, over a limit, or over its memory: the caller changes it.
    #[error("{0}")]
    Invalid(String),
    /// Every permit is taken: retry shortly.
    #[error("{0}")]
    Busy(String),
    /// Ran past its deadline.
    #[error("{0}")]
    Timeout(String),
    /// A table's rows could not be read (the database is down): retry shortly.
    #[error("{0}")]
    Unavailable(String),
    /// A fault on our side.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A fault from anything displayable.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    /// An invalid statement or request, with what to change.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}
