//! `POST /api/v1/query`: SQL over recent data, planned and run by DataFusion.
//!
//! Tables (each built only when the statement names it):
//! - `samples(namespace, workload, metric, timestamp, value)`: the engine's short windows;
//! - `series(series_id, metric, labels, last_timestamp, last_value)`: every ingested series
//!   with its label set (JSON text) and newest sample;
//! - `logs(timestamp, stream, namespace, workload, level, line)`: the most recent log
//!   lines the engine kept;
//! - `predictions(id, created_at, detector, entity, model_version, score, is_anomaly,
//!   severity, failure_type, recommended_action, confidence)` and
//! - `actions(id, created_at, action_id, phase, action, namespace, target, status, actor,
//!   reason)`: the newest 10,000 rows of prediction history and the action audit.
//!
//! Read-only (no DDL, DML or `SET`), at most [`MAX_ROWS`] rows back (the answer says
//! `truncated`), at most [`QUERY_TIMEOUT`] of work. JSON rows by default; an Arrow IPC
//! stream when `Accept: application/vnd.apache.arrow.stream`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_store::{ActionAuditQuery, DetectionStore, ExecutorStore, PredictionQuery};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::{ApiError, AppState, Json};

/// Most rows one answer carries.
pub const MAX_ROWS: usize = 10_000;
/// Longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest statement accepted.
const MAX_SQL_BYTES: usize = 16 * 1024;
/// Most parts a dotted name may have: `catalog.schema.table.column` and one field.
const MAX_NAME_PARTS: usize = 5;
/// Most operators (`+`, `AND`, `::`, `LIKE`, ...) one statement may hold.
pub const MAX_STATEMENT_OPERATORS: usize = 256;
/// Deepest nesting the parser accepts (each subquery, parenthesis, function call, `CASE`
/// and prefix operator such as `NOT` is a level or two), below DataFusion's 50.
pub const MAX_NESTING: usize = 24;
/// The stack SQL is parsed on: the parser needs up to ~85 KiB per level of nesting in a
/// debug build.
const PARSE_STACK: usize = 8 << 20;
/// Most operators and function calls one expression (a select item, a `GROUP BY` key, a
/// `WHERE` condition) may hold.
pub const MAX_EXPRESSION_OPERATORS: usize = 64;
/// Rows of history (`predictions`, `actions`) a query sees.
const HISTORY_ROWS: i64 = 10_000;
/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// Most bytes of Arrow data one answer may hold (before JSON encoding): a query that
/// selects more is refused, not streamed out of memory.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// The functions a statement may call: aggregates, window functions, and scalar functions
/// whose result is no larger than their arguments by more than a constant. Left out are
/// those that make data from nothing (`repeat`, `lpad`, `rpad`, `array_repeat`, `range`,
/// `generate_series`, ...): `SELECT repeat('a', 300000000)` is 300 MB that no memory pool
/// sees, and ten of them took a gigabyte. Sorted, for the binary search.
const ALLOWED_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
    "array_agg",
    "arrow_typeof",
    "ascii",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "avg",
    "bit_and",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "corr",
    "cos",
    "cosh",
    "cot",
    "count",
    "covar",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "datepart",
    "datetrunc",
    "degrees",
    "dense_rank",
    "ends_with",
    "exp",
    "extract",
    "factorial",
    "first_value",
    "floor",
    "from_unixtime",
    "gcd",
    "greatest",
    "ifnull",
    "initcap",
    "isnan",
    "iszero",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "levenshtein",
    "ln",
    "log",
    "log10",
    "log2",
    "lower",
    "ltrim",
    "make_date",
    "max",
    "md5",
    "mean",
    "median",
    "min",
    "nanvl",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "nvl",
    "nvl2",
    "octet_length",
    "percent_rank",
    "percentile_cont",
    "pi",
    "position",
    "pow",
    "power",
    "radians",
    "random",
    "rank",
    "regexp_count",
    "regexp_like",
    "regexp_match",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "reverse",
    "right",
    "round",
    "row_number",
    "rtrim",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "signum",
    "sin",
    "sinh",
    "split_part",
    "sqrt",
    "starts_with",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "strpos",
    "substr",
    "substring",
    "sum",
    "tan",
    "tanh",
    "to_char",
    "to_date",
    "to_hex",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_nanos",
    "to_timestamp_seconds",
    "to_unixtime",
    "trim",
    "trunc",
    "upper",
    "uuid",
    "var",
    "var_pop",
    "var_samp",
];

/// The request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    /// One SQL `SELECT` (DataFusion's dialect).
    sql: String,
    /// Row limit, at most 10,000 (the default).
    #[serde(default)]
    limit: Option<usize>,
}

fn timestamp_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        true,
    )
}

fn table(schema: Schema, columns: Vec<ArrayRef>) -> Result<Arc<MemTable>, ApiError> {
    let schema = Arc::new(schema);
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(ApiError::internal)?;
    MemTable::try_new(schema, vec![vec![batch]])
        .map(Arc::new)
        .map_err(ApiError::internal)
}

fn strings(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn opt_strings(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

/// Whether `sql` mentions `name` as a word (tables are built only when used).
fn mentions(sql: &str, name: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.match_indices(name).any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + name.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
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

/// A table's name and its schema.
type TableSchema = (&'static str, fn() -> Schema);

/// Each table and the endpoint that shows the same rows: a statement naming a table needs
/// the access that endpoint needs (role `user` reads no action audit through SQL either).
const TABLE_ROUTES: [(&str, &str); 5] = [
    ("samples", "/api/v1/ingest/series"),
    ("series", "/api/v1/ingest/series"),
    ("logs", "/api/v1/ingest/streams"),
    ("predictions", "/api/v1/metrics/predictions"),
    ("actions", "/audit/logs"),
];

/// Every table a statement may name, with its schema.
const TABLES: [TableSchema; 5] = [
    ("samples", samples_schema),
    ("series", series_schema),
    ("logs", logs_schema),
    ("predictions", predictions_schema),
    ("actions", actions_schema),
];

fn samples_table(state: &AppState) -> Result<Arc<MemTable>, ApiError> {
    let (mut ns, mut wl, mut metric, mut ts, mut val) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if let Some(h) = state.healing() {
        h.for_each_sample(|e, m, t, v| {
            ns.push(e.namespace.clone());
            wl.push(e.workload.clone());
            metric.push(m.to_owned());
            ts.push(t);
            val.push(v);
        });
    }
    table(
        samples_schema(),
        vec![
            strings(ns),
            strings(wl),
            strings(metric),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(val)),
        ],
    )
}

fn labels_json(labels: &[(Arc<str>, Arc<str>)]) -> (String, String) {
    let mut map = Map::new();
    let mut name = String::new();
    for (k, v) in labels {
        if &**k == "__name__" {
            name = v.to_string();
        }
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    (name, Value::Object(map).to_string())
}

fn series_table(state: &AppState) -> Result<Arc<MemTable>, ApiError> {
    let (mut ids, mut names, mut labels, mut ts, mut val) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if let Some(ingest) = state.ingest() {
        let latest = state
            .latest_samples()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let registry = ingest.registry().lock().unwrap_or_else(|p| p.into_inner());
        for id in 0..registry.len() as u32 {
            let Some(l) = registry.labels(id) else {
                continue;
            };
            let (name, text) = labels_json(l);
            let last = latest.get(id);
            ids.push(id);
            names.push(name);
            labels.push(text);
            ts.push(last.map(|(t, _)| t));
            val.push(last.map(|(_, v)| v));
        }
    }
    table(
        series_schema(),
        vec![
            Arc::new(UInt32Array::from(ids)),
            strings(names),
            strings(labels),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(val)),
        ],
    )
}

fn logs_table(state: &AppState) -> Result<Arc<MemTable>, ApiError> {
    let (mut ts, mut stream, mut ns, mut wl, mut level, mut line) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    if let (Some(h), Some(ingest)) = (state.healing(), state.ingest()) {
        let streams = ingest.streams().lock().unwrap_or_else(|p| p.into_inner());
        h.for_each_log(|id, t_ns, l, lv| {
            let labels = streams.labels(id).unwrap_or(&[]);
            let owned: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let entity = aegis_engine::resolve_entity(&owned);
            ts.push(t_ns / 1_000_000);
            stream.push(labels_json(labels).1);
            ns.push(entity.as_ref().map(|e| e.namespace.clone()));
            wl.push(entity.map(|e| e.workload));
            level.push(lv.map(str::to_owned));
            line.push(l.to_owned());
        });
    }
    table(
        logs_schema(),
        vec![
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            strings(stream),
            opt_strings(ns),
            opt_strings(wl),
            opt_strings(level),
            strings(line),
        ],
    )
}

async fn predictions_table(state: &AppState) -> Result<Arc<MemTable>, ApiError> {
    let rows = state
        .store()
        .predictions(&PredictionQuery {
            limit: HISTORY_ROWS,
            ..PredictionQuery::default()
        })
        .await?;
    table(
        predictions_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.created_at.timestamp_millis()),
                )
                .with_timezone("UTC"),
            ),
            strings(rows.iter().map(|r| r.detector.clone()).collect()),
            strings(rows.iter().map(|r| r.entity.clone()).collect()),
            strings(rows.iter().map(|r| r.model_version.clone()).collect()),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.score))),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.is_anomaly)),
            )),
            opt_strings(rows.iter().map(|r| r.severity.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.failure_type.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.recommended_action.clone()).collect()),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.confidence))),
        ],
    )
}

async fn actions_table(state: &AppState) -> Result<Arc<MemTable>, ApiError> {
    let rows = state
        .store()
        .list_action_audit(&ActionAuditQuery {
            limit: HISTORY_ROWS,
            ..ActionAuditQuery::default()
        })
        .await?;
    table(
        actions_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.created_at.timestamp_millis()),
                )
                .with_timezone("UTC"),
            ),
            strings(rows.iter().map(|r| r.action_id.clone()).collect()),
            strings(rows.iter().map(|r| r.phase.clone()).collect()),
            strings(rows.iter().map(|r| r.action.clone()).collect()),
            strings(rows.iter().map(|r| r.namespace.clone()).collect()),
            strings(rows.iter().map(|r| r.target.clone()).collect()),
            strings(rows.iter().map(|r| r.status.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.actor.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.reason.clone()).collect()),
        ],
    )
}

/// One cell as JSON: numbers, booleans and strings as themselves, timestamps in RFC 3339,
/// anything else as Arrow displays it.
fn cell(array: &ArrayRef, formatter: &ArrayFormatter<'_>, row: usize) -> Value {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes as t;
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Int8 => json!(array.as_primitive::<t::Int8Type>().value(row)),
        DataType::Int16 => json!(array.as_primitive::<t::Int16Type>().value(row)),
        DataType::Int32 => json!(array.as_primitive::<t::Int32Type>().value(row)),
        DataType::Int64 => json!(array.as_primitive::<t::Int64Type>().value(row)),
        DataType::UInt8 => json!(array.as_primitive::<t::UInt8Type>().value(row)),
        DataType::UInt16 => json!(array.as_primitive::<t::UInt16Type>().value(row)),
        DataType::UInt32 => json!(array.as_primitive::<t::UInt32Type>().value(row)),
        DataType::UInt64 => json!(array.as_primitive::<t::UInt64Type>().value(row)),
        DataType::Float32 => json!(array.as_primitive::<t::Float32Type>().value(row)),
        DataType::Float64 => {
            let v = array.as_primitive::<t::Float64Type>().value(row);
            if v.is_finite() {
                json!(v)
            } else {
                json!(v.to_string())
            }
        }
        DataType::Utf8 => json!(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => json!(array.as_string::<i64>().value(row)),
        DataType::Utf8View => json!(array.as_string_view().value(row)),
        _ => json!(formatter.value(row).to_string()),
    }
}

fn to_json(batches: &[RecordBatch], schema: &Schema) -> Result<Vec<Value>, ApiError> {
    let options = FormatOptions::default()
        .with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.3fZ"))
        .with_timestamp_format(Some("%Y-%m-%dT%H:%M:%S%.3f"));
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::internal)?;
        for r in 0..batch.num_rows() {
            let mut row = Map::new();
            for (i, field) in schema.fields().iter().enumerate() {
                row.insert(
                    field.name().clone(),
                    cell(batch.column(i), &formatters[i], r),
                );
            }
            rows.push(Value::Object(row));
        }
    }
    Ok(rows)
}

/// Refuses a dotted name of more than [`MAX_NAME_PARTS`] parts. DataFusion 52's planner
/// panics on one of six or more parts that names no field (an `unwrap` on "Incorrect number
/// of identifiers" in `sql_compound_identifier_to_expr`; found by the `sql_request` fuzz
/// target), and no table here has nested fields for such a name to reach. Checked on the
/// tokens, so every place a name can stand (select list, `COPY (...)`, defaults) is covered.
fn check_names(tokens: &[Token]) -> Result<(), ApiError> {
    let (mut parts, mut after_period) = (0usize, false);
    for token in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        match token {
            Token::Word(_) if after_period => {
                parts += 1;
                after_period = false;
            }
            Token::Word(_) => parts = 1,
            Token::Period if parts > 0 && !after_period => after_period = true,
            _ => (parts, after_period) = (0, false),
        }
        if parts > MAX_NAME_PARTS {
            return Err(ApiError::bad_request(format!(
                "sql: a dotted name has more than {MAX_NAME_PARTS} parts; names are at most \
                 catalog.schema.table.column.field"
            )));
        }
    }
    Ok(())
}

/// A 400 naming `what` when its `count` of operators is over `limit`.
fn over_limit(what: &'static str, count: usize, limit: usize) -> Result<(), ApiError> {
    if count <= limit {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "sql: {what} has {count} operators or function calls; at most {limit} are accepted \
         (split the work into simpler expressions)"
    )))
}

/// Refuses a statement of more than [`MAX_STATEMENT_OPERATORS`] operators, counted on the
/// tokens before anything is parsed. DataFusion 52's planner spends time growing with the
/// fourth power of an expression's size on one it cannot fold (hashing every sub-expression
/// while it works out equivalences and orderings; 47 s for one `GROUP BY` key of 256
/// operators, found by the `sql_request` fuzz target), and neither planning nor a
/// statement's parse tree (an operator chain is as deep as it is long, and the checks below
/// walk it recursively) can be interrupted by the query timeout. This bound keeps both
/// small; [`check_expressions`] then bounds each expression.
fn check_operator_tokens(tokens: &[Token]) -> Result<(), ApiError> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    let operators = tokens
        .iter()
        .filter(|token| match token {
            Token::Word(w) => matches!(
                w.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::XOR
                    | Keyword::NOT
                    | Keyword::IS
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::SIMILAR
                    | Keyword::BETWEEN
                    | Keyword::IN
                    | Keyword::COLLATE
                    | Keyword::AT
            ),
            // Everything else that is not a name, a literal or punctuation is an operator.
            Token::EOF
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Whitespace(_)
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::SemiColon
            | Token::LBracket
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_) => false,
            _ => true,
        })
        .count();
    over_limit("the statement", operators, MAX_STATEMENT_OPERATORS)
}

/// Counts, for every expression, the operators and function calls in it and in what it
/// holds; stops at the first over [`MAX_EXPRESSION_OPERATORS`]. Names, literals and
/// parentheses are free.
#[derive(Default)]
struct ExpressionSize {
    /// One count per expression being walked, innermost last.
    open: Vec<usize>,
}

impl datafusion::sql::sqlparser::ast::Visitor for ExpressionSize {
    type Break = usize;

    fn pre_visit_expr(
        &mut self,
        _expr: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<usize> {
        self.open.push(0);
        std::ops::ControlFlow::Continue(())
    }

    fn post_visit_expr(
        &mut self,
        expr: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<usize> {
        use datafusion::sql::sqlparser::ast::Expr;
        let inner = self.open.pop().unwrap_or(0);
        let own = usize::from(!matches!(
            expr,
            Expr::Identifier(_)
                | Expr::CompoundIdentifier(_)
                | Expr::Value(_)
                | Expr::TypedString(_)
                | Expr::Nested(_)
                | Expr::Wildcard(_)
                | Expr::QualifiedWildcard(..)
        ));
        let size = inner + own;
        if size > MAX_EXPRESSION_OPERATORS {
            return std::ops::ControlFlow::Break(size);
        }
        if let Some(outer) = self.open.last_mut() {
            *outer += size;
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Refuses an expression of more than [`MAX_EXPRESSION_OPERATORS`] operators and function
/// calls (why: [`check_operator_tokens`]; that check has run, so the walk is shallow).
fn check_expressions(
    statement: &datafusion::sql::sqlparser::ast::Statement,
) -> Result<(), ApiError> {
    use datafusion::sql::sqlparser::ast::Visit;
    match statement.visit(&mut ExpressionSize::default()) {
        std::ops::ControlFlow::Break(size) => {
            over_limit("an expression", size, MAX_EXPRESSION_OPERATORS)
        }
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

/// Parses `sql` into its one statement, refusing what is not a query (`EXPLAIN` included:
/// its plan cannot be cut to a row limit), nesting deeper than [`MAX_NESTING`], an
/// expression over [`MAX_EXPRESSION_OPERATORS`], and a typed literal whose value is not a
/// string. DataFusion 52 plans a statement before it refuses DDL or DML, and its planner
/// panics on a typed literal such as `DATE 5` or `TIMESTAMP :x` (an `unwrap` of the value as
/// a string in `sql_expr_to_logical_expr`; found by the `sql_request` fuzz target).
fn parse_query(sql: &str) -> Result<DfStatement, ApiError> {
    use datafusion::error::DataFusionError;
    use datafusion::sql::parser::DFParserBuilder;
    use datafusion::sql::sqlparser::ast::{Expr, Statement, visit_expressions};
    use datafusion::sql::sqlparser::parser::ParserError;
    use std::ops::ControlFlow;
    // sqlparser's parser has a recursion limit but no stack guard, and takes ~85 KiB of
    // stack per level in a debug build: at DataFusion's own limit (50), 23 nested `NOT`s
    // overflowed a 2 MiB thread stack. Hence the lower limit, and the caller's own stack.
    let parsed = DFParserBuilder::new(sql)
        .with_recursion_limit(MAX_NESTING)
        .build()
        .and_then(|mut parser| parser.parse_statements());
    let mut statements = match parsed {
        Ok(statements) => statements,
        Err(DataFusionError::SQL(e, _)) if matches!(*e, ParserError::RecursionLimitExceeded) => {
            return Err(ApiError::bad_request(format!(
                "sql: the statement is nested too deeply (subqueries, parentheses, calls, \
                 CASE, NOT); at most {MAX_NESTING} levels are accepted"
            )));
        }
        Err(e) => return Err(ApiError::bad_request(format!("sql: {e}"))),
    };
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => statement,
        (None, _) => return Err(ApiError::bad_request("sql: no statement")),
        (Some(_), false) => {
            return Err(ApiError::bad_request(
                "sql: one statement per request; this has more",
            ));
        }
    };
    let query = match &statement {
        DfStatement::Statement(inner) if matches!(**inner, Statement::Query(_)) => inner,
        _ => {
            return Err(ApiError::bad_request(
                "sql: only queries are accepted (SELECT, WITH, VALUES); this endpoint is read-only",
            ));
        }
    };
    let typed = visit_expressions(&**query, |expr| match expr {
        Expr::TypedString(t) if t.value.clone().into_string().is_none() => {
            ControlFlow::Break(t.data_type.to_string())
        }
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(data_type) = typed {
        return Err(ApiError::bad_request(format!(
            "sql: a {data_type} literal takes a quoted string, as in {data_type} '...'"
        )));
    }
    check_expressions(query)?;
    check_functions(query)?;
    Ok(statement)
}

/// Finds a table function in a statement: a relation with arguments, `LATERAL f(...)` or
/// `TABLE(...)`.
struct TableFunctions;

impl datafusion::sql::sqlparser::ast::Visitor for TableFunctions {
    type Break = String;

    fn pre_visit_table_factor(
        &mut self,
        factor: &datafusion::sql::sqlparser::ast::TableFactor,
    ) -> std::ops::ControlFlow<String> {
        use datafusion::sql::sqlparser::ast::TableFactor;
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => std::ops::ControlFlow::Break(name.to_string()),
            TableFactor::TableFunction { .. } => std::ops::ControlFlow::Break("TABLE".into()),
            _ => std::ops::ControlFlow::Continue(()),
        }
    }
}

/// Refuses a call of a function outside [`ALLOWED_FUNCTIONS`], and any table function
/// (`FROM range(...)`): see there why.
fn check_functions(statement: &datafusion::sql::sqlparser::ast::Statement) -> Result<(), ApiError> {
    use datafusion::sql::sqlparser::ast::{Expr, visit_expressions};
    use std::ops::ControlFlow;
    let called = visit_expressions(statement, |expr| match expr {
        Expr::Function(f) => {
            let name = f
                .name
                .0
                .last()
                .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
                .unwrap_or_default();
            if ALLOWED_FUNCTIONS.binary_search(&name.as_str()).is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(name)
            }
        }
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(name) = called {
        return Err(ApiError::bad_request(format!(
            "sql: `{name}` is not one of the functions this endpoint offers (aggregates, window \
             functions and scalar functions whose result cannot outgrow their arguments)"
        )));
    }
    // `FROM range(10)` parses as a relation with arguments.
    if let ControlFlow::Break(name) =
        datafusion::sql::sqlparser::ast::Visit::visit(statement, &mut TableFunctions)
    {
        return Err(ApiError::bad_request(format!(
            "sql: table functions such as `{name}(...)` are not offered; query the tables"
        )));
    }
    Ok(())
}

/// Plans `sql` read-only on `ctx`, cut at `limit + 1` rows (one more than asked tells
/// whether the answer is cut).
async fn plan(
    ctx: &SessionContext,
    sql: &str,
    limit: usize,
) -> Result<datafusion::dataframe::DataFrame, ApiError> {
    // Tokenized once for both token checks. What does not tokenize, the parser refuses
    // with its own syntax error.
    if let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() {
        check_names(&tokens)?;
        check_operator_tokens(&tokens)?;
    }
    // Parsed here, once, on a fresh stack big enough for any statement the limits let
    // through, whatever thread this runs on; DataFusion's planner guards its own recursion
    // (`recursive_protection`).
    let statement = stacker::grow(PARSE_STACK, || parse_query(sql))?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let sql_error =
        |e: datafusion::error::DataFusionError| ApiError::bad_request(format!("sql: {e}"));
    let plan = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(sql_error)?;
    options.verify_plan(&plan).map_err(sql_error)?;
    let df = ctx.execute_logical_plan(plan).await.map_err(sql_error)?;
    df.limit(0, Some(limit + 1)).map_err(sql_error)
}

/// The request's own checks; the row limit it asks for.
fn check(req: &QueryRequest) -> Result<usize, ApiError> {
    if req.sql.trim().is_empty() {
        return Err(ApiError::bad_request("`sql` is empty"));
    }
    if req.sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::bad_request(format!(
            "`sql` is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            req.sql.len()
        )));
    }
    let limit = req.limit.unwrap_or(MAX_ROWS);
    if limit == 0 || limit > MAX_ROWS {
        return Err(ApiError::bad_request(format!(
            "`limit` must be 1 to {MAX_ROWS}"
        )));
    }
    Ok(limit)
}

/// Everything the endpoint does to a request body before reading any data: JSON, the
/// checks, and a read-only plan (logical and physical) over empty tables of the real
/// schemas. The SQL fuzz target's entry; `Ok` or a 4xx [`ApiError`], never a panic.
pub async fn plan_request(body: &[u8]) -> Result<(), ApiError> {
    let req: QueryRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let limit = check(&req)?;
    let df = plan(planning_context()?, &req.sql, limit).await?;
    df.create_physical_plan()
        .await
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("sql: {e}")))
}

/// One context with every table registered empty, built once: planning never changes it
/// (DDL, DML and statements are refused), and building a context per request would make
/// the fuzz target spend its time on set-up rather than on SQL.
fn planning_context() -> Result<&'static SessionContext, ApiError> {
    static CTX: std::sync::OnceLock<SessionContext> = std::sync::OnceLock::new();
    if let Some(ctx) = CTX.get() {
        return Ok(ctx);
    }
    let ctx = SessionContext::new();
    without_table_functions(&ctx);
    for (name, schema) in TABLES {
        let schema = Arc::new(schema());
        let empty =
            MemTable::try_new(Arc::clone(&schema), vec![vec![]]).map_err(ApiError::internal)?;
        ctx.register_table(name, Arc::new(empty))
            .map_err(ApiError::internal)?;
    }
    Ok(CTX.get_or_init(|| ctx))
}

/// Runs `sql` over the tables it names; at most `limit` rows (plus whether more existed).
async fn run(
    state: &AppState,
    sql: &str,
    limit: usize,
) -> Result<(Arc<Schema>, Vec<RecordBatch>, bool), ApiError> {
    let ctx = query_context(state.query_memory_bytes())?;
    let register = |name: &str, t: Arc<MemTable>| {
        ctx.register_table(name, t)
            .map(|_| ())
            .map_err(ApiError::internal)
    };
    if mentions(sql, "samples") {
        register("samples", samples_table(state)?)?;
    }
    if mentions(sql, "series") {
        register("series", series_table(state)?)?;
    }
    if mentions(sql, "logs") {
        register("logs", logs_table(state)?)?;
    }
    if mentions(sql, "predictions") {
        register("predictions", predictions_table(state).await?)?;
    }
    if mentions(sql, "actions") {
        register("actions", actions_table(state).await?)?;
    }
    let df = plan(&ctx, sql, limit).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let memory = state.query_memory_bytes();
    let failed = |e: datafusion::error::DataFusionError| match e.find_root() {
        datafusion::error::DataFusionError::ResourcesExhausted(_) => {
            ApiError::bad_request(format!(
                "sql: the query needs more than its {} MiB of memory (query_memory_mib); narrow it (WHERE, fewer columns, LIMIT before ORDER BY)",
                memory >> 20
            ))
        }
        _ => ApiError::bad_request(format!("sql: {e}")),
    };
    // Batch by batch, so an answer over its byte budget stops where it crosses it.
    let mut stream = df.execute_stream().await.map_err(failed)?;
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = futures_util::StreamExt::next(&mut stream).await {
        let batch = batch.map_err(failed)?;
        bytes += batch.get_array_memory_size();
        if bytes > MAX_ANSWER_BYTES {
            return Err(ApiError::bad_request(format!(
                "sql: the answer is over {} MiB; select fewer rows or narrower columns",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        batches.push(batch);
    }
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let truncated = total > limit;
    if truncated {
        let mut left = limit;
        batches = batches
            .into_iter()
            .filter_map(|b| {
                let take = b.num_rows().min(left);
                left -= take;
                (take > 0).then(|| b.slice(0, take))
            })
            .collect();
    }
    Ok((schema, batches, truncated))
}

/// A context for one query: its own memory pool of `memory` bytes (sorts, joins and
/// aggregates that need more fail with "resources exhausted" instead of growing the
/// process), no spilling to disk, no table functions.
fn query_context(memory: usize) -> Result<SessionContext, ApiError> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(ApiError::internal)?;
    let ctx =
        SessionContext::new_with_config_rt(datafusion::prelude::SessionConfig::new(), runtime);
    without_table_functions(&ctx);
    Ok(ctx)
}

/// Deregisters every table function (`range`, `generate_series`, ...): they make rows from
/// nothing. The statement check refuses them first; this holds if a new one appears.
fn without_table_functions(ctx: &SessionContext) {
    let names: Vec<String> = ctx.state().table_functions().keys().cloned().collect();
    for name in names {
        ctx.deregister_udtf(&name);
    }
}

/// Runs `sql` on a blocking thread, answering by `timeout` whatever the thread is doing.
/// DataFusion plans synchronously inside its future: on a runtime worker a slow plan would
/// hold that worker, and the timeout could not fire until the plan was done. On a blocking
/// thread the timeout answers on time; the thread stops at the same deadline once execution
/// yields (or finishes its plan first), and the permit it holds until then bounds how many
/// such threads there are: one over [`super::MAX_RUNNING_QUERIES`] is a 503.
pub(crate) async fn run_within<T: Send + 'static>(
    state: &AppState,
    sql: String,
    limit: usize,
    timeout: Duration,
    encode: impl FnOnce(Arc<Schema>, Vec<RecordBatch>, bool) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = Arc::clone(state.running_queries())
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::unavailable(
                format!(
                    "{} queries are running; retry shortly",
                    super::MAX_RUNNING_QUERIES
                ),
                1,
            )
        })?;
    let timed_out = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            crate::ErrorCode::Timeout,
            format!(
                "the query ran longer than {} s; narrow it (WHERE, LIMIT)",
                timeout.as_secs_f64()
            ),
        )
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let runtime = tokio::runtime::Handle::current();
    let state = state.clone();
    // Encoding the answer is work too: it runs under the same permit and deadline.
    let worker = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        runtime.block_on(tokio::time::timeout_at(deadline, async {
            let (schema, batches, truncated) = run(&state, &sql, limit).await?;
            encode(schema, batches, truncated)
        }))
    });
    tokio::time::timeout_at(deadline, worker)
        .await
        .map_err(|_| timed_out())?
        .map_err(ApiError::internal)?
        .map_err(|_| timed_out())?
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
    let limit = check(&req)?;
    let caller = caller.ok_or_else(|| ApiError::unauthenticated("a bearer token is needed"))?;
    for (table, route) in TABLE_ROUTES {
        if mentions(&req.sql, table) {
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
    if let Ok(tokens) = Tokenizer::new(&GenericDialect {}, &req.sql).tokenize() {
        check_names(&tokens)?;
        check_operator_tokens(&tokens)?;
    }
    let sql = req.sql.clone();
    stacker::grow(PARSE_STACK, || parse_query(&sql))?;
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
                let mut buf = Vec::new();
                {
                    let mut writer =
                        datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema)
                            .map_err(ApiError::internal)?;
                    for b in &batches {
                        writer.write(b).map_err(ApiError::internal)?;
                    }
                    writer.finish().map_err(ApiError::internal)?;
                }
                return Ok(Answer::Arrow(buf, truncated));
            }
            let rows = to_json(&batches, &schema)?;
            let columns: Vec<Value> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            let body = serde_json::to_vec(&json!({
                "columns": columns,
                "row_count": rows.len(),
                "rows": rows,
                "truncated": truncated,
                "elapsed_ms": started.elapsed().as_millis() as u64,
            }))
            .map_err(ApiError::internal)?;
            Ok(Answer::Json(body))
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
