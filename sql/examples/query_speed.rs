//! How long everyday queries take over a samples table the size of a large installation's
//! windows: `cargo run --release -p aegis-sql --example query_speed [WORKLOADS]` (default
//! 200 workloads × 5 metrics × 1,000 points = 1,000,000 rows), each query twelve times
//! through [`aegis_sql::run_within`] with the default 256 MiB budget; prints the median and
//! the fastest. BENCHMARKS.md ("Cold release build") reports it for DataFusion compiled at
//! opt-level 1 and 3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_sql::Source;
use aegis_sql::testing::{SamplesOnly, samples};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workloads = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 200,
    };
    let source: Arc<dyn Source> = Arc::new(SamplesOnly(samples(workloads)?));
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
