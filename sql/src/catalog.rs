//! The tables a statement can name, their schemas, and the [`Source`] that fills them.
//!
//! Arrow only (no DataFusion), so the runtime can fill tables without linking the engine
//! that runs the SQL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::Error;

/// Rows of history (`predictions`, `actions`) a query sees.
pub const HISTORY_ROWS: i64 = 10_000;

/// A table a statement may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The engine's short windows.
    Samples,
    /// Every ingested series with its label set and newest sample.
    Series,
    /// The most recent log lines the engine kept.
    Logs,
    /// The newest rows of prediction history.
    Predictions,
    /// The newest rows of the action audit.
    Actions,
}

impl Table {
    /// Every table.
    pub const ALL: [Self; 5] = [
        Self::Samples,
        Self::Series,
        Self::Logs,
        Self::Predictions,
        Self::Actions,
    ];

    /// Its name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Self::Samples => "samples",
            Self::Series => "series",
            Self::Logs => "logs",
            Self::Predictions => "predictions",
            Self::Actions => "actions",
        }
    }

    /// Its schema.
    pub fn schema(self) -> Schema {
        match self {
            Self::Samples => samples_schema(),
            Self::Series => series_schema(),
            Self::Logs => logs_schema(),
            Self::Predictions => predictions_schema(),
            Self::Actions => actions_schema(),
        }
    }

    /// One batch of `columns`, in the order of [`schema`](Self::schema).
    pub fn batch(self, columns: Vec<ArrayRef>) -> Result<RecordBatch, Error> {
        RecordBatch::try_new(Arc::new(self.schema()), columns).map_err(Error::internal)
    }

    /// The tables `sql` names (tables are built only when used).
    pub fn named_in(sql: &str) -> impl Iterator<Item = Self> + '_ {
        Self::ALL.into_iter().filter(|t| mentions(sql, t.name()))
    }
}

/// What fills the tables of a query: each is asked only when the statement names it, on
/// the query's own thread, under its permit and deadline.
pub trait Source: Send + Sync + 'static {
    /// The rows of `table` as one batch in its schema.
    fn batch(
        &self,
        table: Table,
    ) -> Pin<Box<dyn Future<Output = Result<RecordBatch, Error>> + Send + '_>>;
}

/// Whether `sql` mentions `name` as a word (tables are built only when used).
pub fn mentions(sql: &str, name: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.match_indices(name).any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + name.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

fn timestamp_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        true,
    )
}

fn samples_schema() -> Schema {
    Schema::new(vec![
        Field::new("namespace", DataType::Utf8, false),
        Field::new("workload", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        timestamp_field("timestamp"),
        Field::new("value", DataType::Float64, false),
    ])
}

fn series_schema() -> Schema {
    Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        timestamp_field("last_timestamp"),
        Field::new("last_value", DataType::Float64, true),
    ])
}

fn logs_schema() -> Schema {
    Schema::new(vec![
        timestamp_field("timestamp"),
        Field::new("stream", DataType::Utf8, false),
        Field::new("namespace", DataType::Utf8, true),
        Field::new("workload", DataType::Utf8, true),
        Field::new("level", DataType::Utf8, true),
        Field::new("line", DataType::Utf8, false),
    ])
}

fn predictions_schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        timestamp_field("created_at"),
        Field::new("detector", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("is_anomaly", DataType::Boolean, false),
        Field::new("severity", DataType::Utf8, true),
        Field::new("failure_type", DataType::Utf8, true),
        Field::new("recommended_action", DataType::Utf8, true),
        Field::new("confidence", DataType::Float64, true),
    ])
}

fn actions_schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        timestamp_field("created_at"),
        Field::new("action_id", DataType::Utf8, false),
        Field::new("phase", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("namespace", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("actor", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
    ])
}
