//! Aegis contracts: the small, I/O-free vocabulary every stage shares.
//!
//! - [`audit`]: the tamper-evident hash chain ([`chain_hash`], [`GENESIS_HASH`]) and the
//!   canonical encoding of audit rows ([`Canonical`]).
//! - [`metric_names`]: every exported metric name, part of the interface.
//! - `http_client` (feature `http-client`): the one outgoing HTTP(S) client.
//! - [`Severity`] and [`ExecutorMode`]: enums that appear in configuration, detections and
//!   actions alike.
//!
//! The stage crates (ingest, detectors, policy, executor, store) depend on this one and
//! not on each other; the engine, the runtime and the API above them drive the stages, so
//! the crate graph stays one-way.

pub mod audit;
#[cfg(feature = "http-client")]
pub mod http_client;
pub mod metric_names;
mod types;

pub use audit::{Canonical, GENESIS_HASH, chain_hash, chain_mac, chain_mac_matches};
pub use types::{ExecutorMode, ParseEnumError, Severity};
