//! Policies with versions, and reading the policy decision audit.
//!
//! Every create, update, delete and restore writes a row to `policy_versions` with the full
//! body, in the same transaction as the change, so a policy's history is complete and any
//! version can be restored. Deletes are soft (`deleted_at`), so history outlives the policy.

mod repo;
#[cfg(test)]
mod tests;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;

/// A policy as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyRecord {
    /// The policy's id (a UUID).
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// `self_healing` or `api_access`.
    pub policy_type: String,
    /// `allow` or `deny`.
    pub effect: String,
    /// Its priority.
    pub priority: i32,
    /// Whether it is in force.
    pub enabled: bool,
    /// The whole policy document.
    pub body: serde_json::Value,
    /// Current version, from 1.
    pub version: i64,
    /// `api`, `default` or another writer's name.
    pub source: String,
    /// First version's time.
    pub created_at: DateTime<Utc>,
    /// Latest version's time.
    pub updated_at: DateTime<Utc>,
}

/// The fields a write sets (the domain crate validates them first).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyWrite {
    /// Unique name.
    pub name: String,
    /// `self_healing` or `api_access`.
    pub policy_type: String,
    /// `allow` or `deny`.
    pub effect: String,
    /// Priority.
    pub priority: i32,
    /// Whether it is in force.
    pub enabled: bool,
    /// The whole policy document.
    pub body: serde_json::Value,
}

/// One entry of a policy's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyVersion {
    /// The policy.
    pub policy_id: String,
    /// The version this change created.
    pub version: i64,
    /// `create`, `update`, `delete` or `restore`.
    pub change: String,
    /// The body after the change (the last body for a delete).
    pub body: Option<serde_json::Value>,
    /// Who made the change.
    pub changed_by: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Filters for reading policy decisions, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyAuditQuery {
    /// `ALLOW` or `DENY`.
    pub decision: Option<String>,
    /// `self_healing` or `api_access`.
    pub policy_type: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Decisions at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Decisions before this time.
    pub to: Option<DateTime<Utc>>,
    /// Cursor: only rows with a smaller id (the last id of the previous page).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// A recorded policy decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyAuditRow {
    /// Position in the chain.
    pub id: i64,
    /// When the decision was made.
    pub created_at: DateTime<Utc>,
    /// The HTTP request that asked, if any.
    pub request_id: Option<String>,
    /// `self_healing` or `api_access`.
    pub policy_type: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// Who asked.
    pub user_id: Option<String>,
    /// The caller's role.
    pub role: Option<String>,
    /// `ALLOW` or `DENY`.
    pub decision: String,
    /// The deciding policy.
    pub policy_id: Option<String>,
    /// The deciding policy's name.
    pub policy_name: Option<String>,
    /// Why.
    pub reason: String,
    /// The evaluation context.
    pub context: serde_json::Value,
    /// Evaluation time in microseconds.
    pub evaluated_in_us: i64,
    /// The row's chain hash.
    pub hash: String,
}

/// Storing policies and reading decisions.
pub trait PolicyStore {
    /// Live (not deleted) policies, by name.
    fn list_policies(&self) -> impl Future<Output = Result<Vec<PolicyRecord>>> + Send;

    /// One live policy.
    fn get_policy(&self, id: &str) -> impl Future<Output = Result<Option<PolicyRecord>>> + Send;

    /// Creates a policy at version 1. A live policy with the same name is a conflict.
    fn create_policy(
        &self,
        write: &PolicyWrite,
        source: &str,
        changed_by: Option<&str>,
    ) -> impl Future<Output = Result<PolicyRecord>> + Send;

    /// Replaces a live policy as a new version; `None` when there is none. With
    /// `expected_version`, a policy changed meanwhile is a conflict.
    fn update_policy(
        &self,
        id: &str,
        write: &PolicyWrite,
        expected_version: Option<i64>,
        changed_by: Option<&str>,
    ) -> impl Future<Output = Result<Option<PolicyRecord>>> + Send;

    /// Deletes a live policy as a new version; returns that version, `None` when there is none.
    fn delete_policy(
        &self,
        id: &str,
        changed_by: Option<&str>,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Every version of a policy (deleted ones too), oldest first; empty when unknown.
    fn policy_history(&self, id: &str) -> impl Future<Output = Result<Vec<PolicyVersion>>> + Send;

    /// Makes an old version's body current again, as a new version (undeleting if needed).
    /// `None` when the policy or version does not exist or that version has no body.
    fn restore_policy_version(
        &self,
        id: &str,
        version: i64,
        changed_by: Option<&str>,
    ) -> impl Future<Output = Result<Option<PolicyRecord>>> + Send;

    /// A value that changes whenever any policy changes (count and sum of versions: versions
    /// only grow, deletes included), so replicas notice each other's edits cheaply.
    fn policies_fingerprint(&self) -> impl Future<Output = Result<(i64, i64)>> + Send;

    /// How many policies were ever created (deleted ones included).
    fn policies_ever_created(&self) -> impl Future<Output = Result<i64>> + Send;

    /// Policy decisions matching `query`, newest first.
    fn list_policy_audit(
        &self,
        query: &PolicyAuditQuery,
    ) -> impl Future<Output = Result<Vec<PolicyAuditRow>>> + Send;

    /// How many policy decisions are recorded.
    fn count_policy_audit(&self) -> impl Future<Output = Result<i64>> + Send;
}
