//! Aegis executor: guarded (signature, allowlist, rate limit, cooldown, idempotency), audited Kubernetes remediation in dry-run or live mode.
//!
//! This crate is part of the promised workspace layout; its contents arrive with
//! the executor and audit issue. It depends only on `aegis-core`, so the crate graph stays one-way.
