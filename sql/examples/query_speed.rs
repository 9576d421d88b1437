//! How long everyday queries take over a samples table the size of a large installation's
//! windows: `cargo run --release -p aegis-sql --example query_speed [WORKLOADS]` (default
//! 200 workloads × 5 metrics × 1,000 points = 1,000,000 rows), each query twelve times
//! through [`aegis_sql::run_within`] with the default 256 MiB budget; prints the median and
//! the fastest. BENCHMARKS.md ("Cold release build") reports it for DataFusion compiled at
//! opt-level 1 and 3.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_sql::{Error, Source, Table};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};

/// The samples table; the other tables are empty.
struct Samples(RecordBatch);

impl Source for Samples {
    fn batch(
        &self,
        table: Table,
    ) -> Pin<Box<dyn Future<Output = Result<RecordBatch, Error>> + Send + '_>> {
        let answer = match table {
            Table::Samples => Ok(self.0.clone()),
            other => Ok(RecordBatch::new_empty(Arc::new(other.schema()))),
        };
        Box::pin(async move { answer })
    }
}

/// `workloads` workloads with five metrics of 1,000 points each, values uniform in [0, 1).
fn samples(workloads: usize) -> Result<RecordBatch, Error> {
    let metrics = [
        "cpu_usage",
        "memory_usage",
        "latency_p99_ms",
        "error_rate",
        "restarts",
    ];
    let (mut ns, mut wl, mut me, mut ts, mut va) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut x: u64 = 1;
    for w in 0..workloads {
        for m in metrics {
            for p in 0..1000i64 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ns.push(if w % 4 == 0 { "production" } else { "default" });
                wl.push(format!("api-{w}"));
                me.push(m);
                ts.push(1_700_000_000_000 + p * 15_000);
                va.push((x >> 11) as f64 / (1u64 << 53) as f64);
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ns)),
        Arc::new(StringArray::from(wl)),
        Arc::new(StringArray::from(me)),
        Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float64Array::from(va)),
    ];
    Table::Samples.batch(columns)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workloads = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 200,
    };
    let source: Arc<dyn Source> = Arc::new(Samples(samples(workloads)?));
    println!("{} rows", workloads * 5000);
    let queries = [
        (
            "group by series",
            "SELECT namespace, workload, metric, avg(value) AS a, max(value), count(*) \
             FROM samples GROUP BY 1, 2, 3 ORDER BY a DESC LIMIT 20",
        ),
        (
            "filter top-k",
            "SELECT workload, timestamp, value FROM samples \
             WHERE metric = 'cpu_usage' AND value > 0.9 ORDER BY value DESC LIMIT 100",
        ),
        (
            "per minute",
            "SELECT date_trunc('minute', timestamp) AS m, avg(value), \
             approx_percentile_cont(value, 0.99) FROM samples \
             WHERE metric = 'latency_p99_ms' GROUP BY m ORDER BY m",
        ),
        (
            "like + count",
            "SELECT metric, count(*) FROM samples \
             WHERE workload LIKE 'api-1%' AND namespace = 'production' GROUP BY metric",
        ),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(aegis_sql::MAX_RUNNING_QUERIES));
    for (name, sql) in queries {
        let mut times = Vec::new();
        for _ in 0..12 {
            let start = Instant::now();
            runtime.block_on(aegis_sql::run_within(
                Arc::clone(&source),
                &permits,
                256 << 20,
                sql.to_owned(),
                aegis_sql::MAX_ROWS,
                Duration::from_secs(60),
                |_, batches, _| Ok(batches.len()),
            ))?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:16} median {:7.2} ms  fastest {:7.2} ms",
            times[times.len() / 2],
            times[0]
        );
    }
    Ok(())
}
