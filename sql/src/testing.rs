//! A synthetic samples table for tests and the `query_speed` example: the shape the
//! engine's windows give SQL, at any size.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};

use crate::{Error, Source, Table};

/// A [`Source`] whose `samples` table is one batch; the other tables are empty.
pub struct SamplesOnly(pub RecordBatch);

impl Source for SamplesOnly {
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

/// `workloads` workloads (one in four in `production`, the rest in `default`), five
/// metrics each, 1,000 points per series 15 s apart, values uniform in [0, 1): 5,000 rows
/// per workload, workload by workload, as the windows are read.
pub fn samples(workloads: usize) -> Result<RecordBatch, Error> {
    let metrics = [
        "cpu_usage",
        "memory_usage",
        "latency_p99_ms",
        "error_rate",
        "restarts",
    ];
    let (mut ns, mut wl, mut me, mut ts, mut va) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // A fixed linear congruential sequence: the same table on every run.
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
