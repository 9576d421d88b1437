//! Aegis ingest: Prometheus remote write 1.0/2.0, Loki push, Kafka and pull mode, decoded into Arrow record batches behind a bounded queue.
//!
//! This crate is part of the promised workspace layout; its contents arrive with
//! the ingest issue. It depends only on `aegis-core`, so the crate graph stays one-way.
