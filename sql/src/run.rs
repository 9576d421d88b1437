//! Planning read-only and running a statement under a permit, a deadline and a memory
//! pool of its own; encoding the answer.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SQLOptions, SessionContext};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::check::check_text;
use crate::{Error, MAX_ANSWER_BYTES, MAX_ROWS, MAX_RUNNING_QUERIES, MAX_SQL_BYTES, Source, Table};

/// The request.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One SQL `SELECT` (DataFusion's dialect).
    pub sql: String,
    /// Row limit, at most 10,000 (the default).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl QueryRequest {
    /// The request's own checks; the row limit it asks for.
    pub fn check(&self) -> Result<usize, Error> {
        if self.sql.trim().is_empty() {
            return Err(Error::invalid("`sql` is empty"));
        }
        if self.sql.len() > MAX_SQL_BYTES {
            return Err(Error::invalid(format!(
                "`sql` is {} bytes; at most {MAX_SQL_BYTES} are accepted",
                self.sql.len()
            )));
        }
        let limit = self.limit.unwrap_or(MAX_ROWS);
        if limit == 0 || limit > MAX_ROWS {
            return Err(Error::invalid(format!("`limit` must be 1 to {MAX_ROWS}")));
        }
        Ok(limit)
    }
}

/// Plans `sql` read-only on `ctx`, cut at `limit + 1` rows (one more than asked tells
/// whether the answer is cut).
async fn plan(
    ctx: &SessionContext,
    sql: &str,
    limit: usize,
) -> Result<datafusion::dataframe::DataFrame, Error> {
    let statement = check_text(sql)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let sql_error = |e: datafusion::error::DataFusionError| Error::invalid(format!("sql: {e}"));
    let plan = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(sql_error)?;
    options.verify_plan(&plan).map_err(sql_error)?;
    let df = ctx.execute_logical_plan(plan).await.map_err(sql_error)?;
    df.limit(0, Some(limit + 1)).map_err(sql_error)
}

/// Everything the endpoint does to a request body before reading any data: JSON, the
/// checks, and a read-only plan (logical and physical) over empty tables of the real
/// schemas. The SQL fuzz target's entry; `Ok` or an [`Error`], never a panic.
pub async fn plan_request(body: &[u8]) -> Result<(), Error> {
    let req: QueryRequest =
        serde_json::from_slice(body).map_err(|e| Error::invalid(format!("request body: {e}")))?;
    let limit = req.check()?;
    let df = plan(planning_context()?, &req.sql, limit).await?;
    df.create_physical_plan()
        .await
        .map(|_| ())
        .map_err(|e| Error::invalid(format!("sql: {e}")))
}

/// One context with every table registered empty, built once: planning never changes it
/// (DDL, DML and statements are refused), and building a context per request would make
/// the fuzz target spend its time on set-up rather than on SQL.
fn planning_context() -> Result<&'static SessionContext, Error> {
    static CTX: std::sync::OnceLock<SessionContext> = std::sync::OnceLock::new();
    if let Some(ctx) = CTX.get() {
        return Ok(ctx);
    }
    let ctx = SessionContext::new();
    without_table_functions(&ctx);
    for table in Table::ALL {
        let (name, schema) = (table.name(), Arc::new(table.schema()));
        let empty =
            MemTable::try_new(Arc::clone(&schema), vec![vec![]]).map_err(Error::internal)?;
        ctx.register_table(name, Arc::new(empty))
            .map_err(Error::internal)?;
    }
    Ok(CTX.get_or_init(|| ctx))
}

/// Rows per batch a table is handed to DataFusion in (its default batch size).
const BATCH_ROWS: usize = 8192;

/// `batch` as slices of at most [`BATCH_ROWS`] rows (no copy: they share its buffers).
fn split(batch: &RecordBatch) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    if rows == 0 {
        return vec![batch.clone()];
    }
    (0..rows)
        .step_by(BATCH_ROWS)
        .map(|start| batch.slice(start, BATCH_ROWS.min(rows - start)))
        .collect()
}

/// Runs `sql` over the tables it names, filled by `source`; at most `limit` rows (plus
/// whether more existed).
async fn run(
    source: &dyn Source,
    memory: usize,
    sql: &str,
    limit: usize,
) -> Result<(Arc<Schema>, Vec<RecordBatch>, bool), Error> {
    let ctx = query_context(memory)?;
    for table in Table::named_in(sql) {
        let batch = source.batch(table).await?;
        // In DataFusion's batch size, not as one batch: a whole table in one batch made a
        // top-k or a filtered count over 500,000 samples need more than 256 MiB (operators
        // account and hold the batch they take rows from) and left the scan on one core.
        let provider =
            MemTable::try_new(batch.schema(), vec![split(&batch)]).map_err(Error::internal)?;
        ctx.register_table(table.name(), Arc::new(provider))
            .map_err(Error::internal)?;
    }
    let df = plan(&ctx, sql, limit).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let failed = |e: datafusion::error::DataFusionError| match e.find_root() {
        datafusion::error::DataFusionError::ResourcesExhausted(_) => Error::invalid(format!(
            "sql: the query needs more than its {} MiB of memory (query_memory_mib); narrow it (WHERE, fewer columns, LIMIT before ORDER BY)",
            memory >> 20
        )),
        _ => Error::invalid(format!("sql: {e}")),
    };
    // Batch by batch, so an answer over its byte budget stops where it crosses it.
    let mut stream = df.execute_stream().await.map_err(failed)?;
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = futures_util::StreamExt::next(&mut stream).await {
        let batch = batch.map_err(failed)?;
        bytes += batch.get_array_memory_size();
        if bytes > MAX_ANSWER_BYTES {
            return Err(Error::invalid(format!(
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
fn query_context(memory: usize) -> Result<SessionContext, Error> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(Error::internal)?;
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
/// such threads there are: with every one of `permits` (at most [`MAX_RUNNING_QUERIES`]) taken,
/// [`Error::Busy`]. `memory` is
/// the query's own pool in bytes; `encode` turns the rows into the answer under the same
/// permit and deadline.
pub async fn run_within<T: Send + 'static>(
    source: Arc<dyn Source>,
    permits: &Arc<tokio::sync::Semaphore>,
    memory: usize,
    sql: String,
    limit: usize,
    timeout: Duration,
    encode: impl FnOnce(Arc<Schema>, Vec<RecordBatch>, bool) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let permit = Arc::clone(permits).try_acquire_owned().map_err(|_| {
        Error::Busy(format!(
            "{MAX_RUNNING_QUERIES} queries are running; retry shortly"
        ))
    })?;
    let timed_out = || {
        Error::Timeout(format!(
            "the query ran longer than {} s; narrow it (WHERE, LIMIT)",
            timeout.as_secs_f64()
        ))
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let runtime = tokio::runtime::Handle::current();
    // Encoding the answer is work too: it runs under the same permit and deadline.
    let worker = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        runtime.block_on(tokio::time::timeout_at(deadline, async {
            let (schema, batches, truncated) = run(source.as_ref(), memory, &sql, limit).await?;
            encode(schema, batches, truncated)
        }))
    });
    tokio::time::timeout_at(deadline, worker)
        .await
        .map_err(|_| timed_out())?
        .map_err(Error::internal)?
        .map_err(|_| timed_out())?
}

/// An answer as an Arrow IPC stream.
pub fn arrow_stream(schema: &Schema, batches: &[RecordBatch]) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    {
        let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)
            .map_err(Error::internal)?;
        for b in batches {
            writer.write(b).map_err(Error::internal)?;
        }
        writer.finish().map_err(Error::internal)?;
    }
    Ok(buf)
}

/// An answer as the JSON document `{columns, row_count, rows, truncated, elapsed_ms}`.
pub fn json_answer(
    schema: &Schema,
    batches: &[RecordBatch],
    truncated: bool,
    elapsed_ms: u64,
) -> Result<Vec<u8>, Error> {
    let rows = to_json(batches, schema)?;
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    serde_json::to_vec(&json!({
        "columns": columns,
        "row_count": rows.len(),
        "rows": rows,
        "truncated": truncated,
        "elapsed_ms": elapsed_ms,
    }))
    .map_err(Error::internal)
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

fn to_json(batches: &[RecordBatch], schema: &Schema) -> Result<Vec<Value>, Error> {
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
            .map_err(Error::internal)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SamplesOnly, samples};

    /// Everyday queries over a large window ran out of the default 256 MiB when the table
    /// was handed over as one batch (a release build from 500,000 samples; this debug build
    /// from about two million, which is why the test uses two million); in DataFusion's
    /// batch size they fit.
    #[test]
    fn everyday_queries_over_two_million_samples_fit_the_default_budget() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let source: Arc<dyn Source> = Arc::new(SamplesOnly(samples(400).unwrap()));
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING_QUERIES));
        for (sql, rows) in [
            (
                "SELECT workload, timestamp, value FROM samples \
                 WHERE metric = 'cpu_usage' AND value > 0.9 ORDER BY value DESC LIMIT 100",
                100,
            ),
            (
                "SELECT metric, count(*) FROM samples \
                 WHERE workload LIKE 'api-1%' AND namespace = 'production' GROUP BY metric",
                5,
            ),
            (
                "SELECT namespace, workload, metric, avg(value) AS a FROM samples \
                 GROUP BY 1, 2, 3 ORDER BY a DESC LIMIT 20",
                20,
            ),
        ] {
            let answer = runtime.block_on(run_within(
                Arc::clone(&source),
                &permits,
                256 << 20,
                sql.to_owned(),
                MAX_ROWS,
                Duration::from_secs(120),
                |_, batches, _| Ok(batches.iter().map(RecordBatch::num_rows).sum::<usize>()),
            ));
            assert_eq!(answer, Ok(rows), "{sql}");
        }
    }

    #[test]
    fn a_table_is_split_without_losing_or_repeating_rows() {
        let batch = samples(4).unwrap();
        let parts = split(&batch);
        assert_eq!(
            parts.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
            [8192, 8192, 3616]
        );
        let joined = datafusion::arrow::compute::concat_batches(&batch.schema(), &parts).unwrap();
        assert_eq!(joined, batch);
        assert_eq!(split(&samples(0).unwrap()).len(), 1);
    }
}
