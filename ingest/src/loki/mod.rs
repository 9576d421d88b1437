//! Loki push: `logproto.PushRequest` (protobuf, snappy) and the JSON form, optionally gzip,
//! into Arrow batches of log lines (`stream_id`, `timestamp_ns`, `line`, `level`).

mod decode;
mod labels;
#[cfg(test)]
mod tests;

pub(crate) use decode::push_line_pub;
pub use decode::{
    LineRules, LogLines, PushStats, decode_json, decode_proto, encode_proto, gunzip, log_schema,
    logs_to_batch,
};
pub use labels::parse_labels;
