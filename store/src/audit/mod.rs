//! The append-only, hash-chained audit tables.
//!
//! Every row carries `prev_hash` (the previous row's `hash`, or [`aegis_core::GENESIS_HASH`]
//! for the first) and `hash` = SHA-256 over `prev_hash` and the canonical encoding of the row
//! (table name, id and every column, see [`aegis_core::Canonical`]); with `audit_key`
//! configured ([`AuditKeys`]) `hash` is an HMAC-SHA256 under the signing key instead and
//! `key_id` names the key, so rewriting rows needs the key, not only the database. Ids are assigned by the
//! writer as previous id + 1 under a lock, so a removed row shows as a gap. Database triggers
//! refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL); [`AuditLog::verify_audit`] catches
//! whoever disables them.

mod chain;
mod keys;
#[cfg(test)]
mod tests;
mod writer;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;

pub(crate) use chain::ChainTail;
pub use chain::{
    AuditArchive, AuditKind, AuditRecord, AuditValue, audit_columns, record_link, verify_records,
};
pub use keys::{AuditKey, AuditKeys, MIN_AUDIT_KEY_BYTES};
pub use writer::{
    AuditWriterHealth, AuditWriterOptions, AuditWriterStats, PolicyAuditSender, PolicyAuditWriter,
    WriterClosed,
};

/// One of the two audit chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditTable {
    /// `policy_audit_logs`: every policy decision.
    Policy,
    /// `action_audit_logs`: every executor intent and result.
    Action,
}

impl AuditTable {
    /// Both chains, in the order `audit verify` walks them.
    pub const ALL: [AuditTable; 2] = [AuditTable::Policy, AuditTable::Action];

    /// The table's name in the database.
    pub fn table_name(self) -> &'static str {
        match self {
            Self::Policy => "policy_audit_logs",
            Self::Action => "action_audit_logs",
        }
    }
}

/// A policy decision to record in `policy_audit_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NewPolicyAudit {
    /// When the decision was made; now when absent. Stored at microsecond precision.
    pub created_at: Option<DateTime<Utc>>,
    /// The HTTP request that asked, when there was one.
    pub request_id: Option<String>,
    /// `self_healing` or `api_access`.
    pub policy_type: String,
    /// The action evaluated, e.g. `scale_up`.
    pub action: String,
    /// The resource evaluated, e.g. `cluster:production`.
    pub resource: String,
    /// Who asked.
    pub user_id: Option<String>,
    /// The caller's role.
    pub role: Option<String>,
    /// `ALLOW` or `DENY`.
    pub decision: String,
    /// The deciding policy, if any matched.
    pub policy_id: Option<String>,
    /// The deciding policy's name.
    pub policy_name: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// The evaluation context (metadata, time) as JSON.
    pub context: serde_json::Value,
    /// Evaluation time in microseconds.
    pub evaluated_in_us: i64,
}

/// An executor event to record in `action_audit_logs`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActionAudit {
    /// When it happened; now when absent. Stored at microsecond precision.
    pub created_at: Option<DateTime<Utc>>,
    /// Groups the `intent` and `result` rows of one action.
    pub action_id: String,
    /// `intent` (before the call) or `result` (after it).
    pub phase: String,
    /// `restart_pod`, `scale_deployment` or `rollback_deployment`.
    pub action: String,
    /// The target's namespace.
    pub namespace: String,
    /// The target workload or pod.
    pub target: String,
    /// `pending`, `succeeded`, `failed`, `dry_run`, `denied` or `unknown`.
    pub status: String,
    /// Who asked: a user id or `ai-engine`.
    pub actor: Option<String>,
    /// The reason given with the request, or why it was refused.
    pub reason: Option<String>,
    /// Parameters, guard state, evidence and the API's answer, as JSON.
    pub details: serde_json::Value,
}

/// Where an appended row landed in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReceipt {
    /// The row's id (its position in the chain).
    pub id: i64,
    /// The row's hash.
    pub hash: String,
}

/// The first row at which a chain no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenRow {
    /// The row's id.
    pub id: i64,
    /// What does not hold.
    pub reason: String,
}

/// The outcome of walking one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The chain walked.
    pub table: AuditTable,
    /// Rows checked before the walk ended.
    pub rows_checked: u64,
    /// Of those, rows linked by plain SHA-256 (written before `audit_key` was set).
    pub unkeyed_rows: u64,
    /// The first broken row, or `None` when the whole chain holds.
    pub broken: Option<BrokenRow>,
}

/// Appending to and verifying the audit chains.
pub trait AuditLog {
    /// Appends policy decisions in one transaction, in order; returns each row's place.
    fn append_policy_audit(
        &self,
        entries: &[NewPolicyAudit],
    ) -> impl Future<Output = Result<Vec<AuditReceipt>>> + Send;

    /// Appends executor events in one transaction, in order; returns each row's place.
    fn append_action_audit(
        &self,
        entries: &[NewActionAudit],
    ) -> impl Future<Output = Result<Vec<AuditReceipt>>> + Send;

    /// Recomputes a chain from its first row and names the first row that does not hold.
    fn verify_audit(&self, table: AuditTable) -> impl Future<Output = Result<VerifyReport>> + Send;
}
