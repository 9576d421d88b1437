//! Aegis engine: per-series windows, per-entity features, the tick loop that scores, decides and acts, and SQL over recent data.
//!
//! This crate is part of the promised workspace layout; its contents arrive with
//! the engine issue. It depends only on `aegis-core`, so the crate graph stays one-way.
