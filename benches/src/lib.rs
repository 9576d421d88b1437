//! Shared helpers for the Aegis benchmarks.
