//! Retention and the scheduled audit export, run hourly by `serve` and once by
//! `aegis retention run`.
//!
//! Order matters: export first (rows created before today that no verified archive holds),
//! then prune. Audit rows are deleted only up to the end of a verified archive — the
//! database's own triggers refuse any other delete — so nothing leaves the database before
//! it is archived and checked.

use aegis_store::objects::Objects;
use aegis_store::{AuditTable, Store};
use chrono::{Duration, Utc};

use crate::audit_export;
use crate::config::Config;

/// What one pass did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Archive files written.
    pub exported_files: Vec<String>,
    /// Prediction rows deleted.
    pub predictions_deleted: u64,
    /// Audit rows deleted per chain.
    pub audit_deleted: Vec<(&'static str, u64)>,
}

/// One pass of export and retention.
pub async fn run_once(config: &Config, store: &Store) -> anyhow::Result<Summary> {
    let now = Utc::now();
    let mut summary = Summary::default();
    if let Some(url) = &config.audit_export_url {
        let objects = Objects::open(url).map_err(anyhow::Error::msg)?;
        let today = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map_or(now, |t| t.and_utc());
        summary.exported_files = audit_export::export_pending(store, &objects, today).await?;
    }
    if config.retention_predictions_days > 0 {
        let cutoff = now - Duration::days(i64::from(config.retention_predictions_days));
        summary.predictions_deleted = store.prune_predictions(cutoff).await?;
    }
    if config.retention_audit_days > 0 {
        let cutoff = now - Duration::days(i64::from(config.retention_audit_days));
        for table in AuditTable::ALL {
            let n = store.prune_audit(table, cutoff).await?;
            summary.audit_deleted.push((table.table_name(), n));
        }
    }
    Ok(summary)
}

/// Runs [`run_once`] every hour until the process stops; failures are logged and retried.
pub async fn run_forever(config: Config, store: Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match run_once(&config, &store).await {
            Ok(s) => tracing::info!(
                exported_files = s.exported_files.len(),
                predictions_deleted = s.predictions_deleted,
                audit_deleted = ?s.audit_deleted,
                "retention pass done"
            ),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "retention pass failed; retried in an hour")
            }
        }
    }
}
