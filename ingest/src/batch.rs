//! Arrow record batches for the engine.

use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::remote_write::Samples;

/// The schema of sample batches: `series_id` (u32), `timestamp_ms` (i64), `value` (f64).
pub fn sample_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// Moves `samples` into a record batch (the column buffers are taken over, not copied).
pub fn samples_to_batch(samples: Samples, schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt32Array::from(samples.series_id)),
            Arc::new(Int64Array::from(samples.timestamp_ms)),
            Arc::new(Float64Array::from(samples.value)),
        ],
    )
}
