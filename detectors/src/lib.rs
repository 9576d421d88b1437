//! Aegis detectors: the isolation forest, the random-forest failure classifier, Drain log templates, severity and recommended actions.
//!
//! This crate is part of the promised workspace layout; its contents arrive with
//! the detectors issue. It depends only on `aegis-core`, so the crate graph stays one-way.
