//! Aegis policy engine: compiled, immutable policy snapshots evaluated without locks or I/O; DENY overrides ALLOW, no match is DENY.
//!
//! This crate is part of the promised workspace layout; its contents arrive with
//! the policy engine issue. It depends only on `aegis-core`, so the crate graph stays one-way.
