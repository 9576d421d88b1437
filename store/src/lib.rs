//! Aegis storage: one place for everything Aegis keeps in a database.
//!
//! - [`Store`]: a connection pool to SQLite (the embedded default) or PostgreSQL, chosen by
//!   the URL, with the embedded migrations of both dialects applied at connect time.
//! - [`AuditLog`]: the append-only, hash-chained audit tables (`policy_audit_logs`,
//!   `action_audit_logs`): [`Store::append_policy_audit`], [`Store::append_action_audit`] and
//!   [`Store::verify_audit`], which recomputes a chain and names the first broken row.
//! - [`Error`]: what can go wrong, with the user's mistakes (a bad URL) apart from runtime
//!   faults (an unreachable database).
//! - [`objects::Objects`]: object storage (a folder or S3) for models and archives.
//! - [`loki_outbox::LokiPusher`]: delivers the action audit outbox to Loki.
//!
//! Both backends are covered by the same tests; `testing` (feature `testing`) gives other
//! crates a fresh SQLite file and a fresh PostgreSQL schema per test.

/// Runs `$body` with `$pool` bound to whichever pool the store has.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

mod approvals;
mod audit;
mod backup;
mod breakers;
mod decision_records;
mod detections;
mod error;
mod executor;
pub mod leader;
pub mod loki_outbox;
mod notifications;
pub mod objects;
mod outbox;
mod page;
mod policies;
mod shadow;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod users;

pub use approvals::{Approval, NewApproval};
pub use audit::{
    AuditArchive, AuditKey, AuditKeys, AuditKind, AuditLog, AuditReceipt, AuditRecord, AuditTable,
    AuditValue, AuditWriterHealth, AuditWriterOptions, AuditWriterStats, BrokenRow,
    MIN_AUDIT_KEY_BYTES, NewActionAudit, NewPolicyAudit, PolicyAuditSender, PolicyAuditWriter,
    VerifyReport, WriterClosed, audit_columns, record_link, verify_records,
};
pub use backup::{COUNTED_TABLES, PgSnapshot, TableCounts, postgres_has_aegis_tables, sqlite_path};
pub use breakers::Breaker;
pub use decision_records::DecisionRecord;
pub use detections::{
    DetectionStats, DetectionStore, ModelMetricRow, ModelRow, NewPrediction, PredictionQuery,
    PredictionRow, TrainingRow,
};
pub use error::{Error, Result};
pub use executor::{ActionAuditQuery, ActionAuditRow, ExecutorStore, PendingIntent};
pub use notifications::{NewNotification, NotificationRow, NotificationStore, PolicyTailRow};
pub use outbox::{Outbox, OutboxRow};
pub use policies::{
    PolicyAuditQuery, PolicyAuditRow, PolicyRecord, PolicyStore, PolicyVersion, PolicyWrite,
};
pub use shadow::{NewShadowDecision, ShadowDecision};
pub use store::{Backend, DatabaseHealth, Store, StoreOptions, redact_url, split_password};
pub use users::{
    NewRefreshToken, NewUser, ROLES, RotateOutcome, ServiceTokenRecord, UserPatch, UserRecord,
    UserStore,
};
