//! Backups: a consistent online copy of SQLite (`VACUUM INTO`), a consistent snapshot of
//! PostgreSQL for `pg_dump --snapshot`, row counts and integrity checks to verify either.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use crate::store::{Pool, Store};
use crate::{Error, Result};

/// The tables a backup is checked by, in a stable order.
pub const COUNTED_TABLES: [&str; 9] = [
    "users",
    "policies",
    "policy_versions",
    "policy_audit_logs",
    "action_audit_logs",
    "prediction_history",
    "model_metrics",
    "training_data",
    "models",
];

/// Row counts of [`COUNTED_TABLES`].
pub type TableCounts = Vec<(String, i64)>;

/// A PostgreSQL transaction holding an exported snapshot: `pg_dump --snapshot` sees
/// exactly what [`PgSnapshot::counts`] counts. Dropping it ends the snapshot.
pub struct PgSnapshot {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The snapshot id for `pg_dump --snapshot`.
    pub id: String,
}

impl PgSnapshot {
    /// Row counts as of the snapshot.
    pub async fn counts(&mut self) -> Result<TableCounts> {
        let mut out = Vec::new();
        for t in COUNTED_TABLES {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&mut *self.tx)
                .await?;
            out.push((t.to_string(), n));
        }
        Ok(out)
    }

    /// Ends the snapshot.
    pub async fn finish(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// The file of a `sqlite:` URL.
pub fn sqlite_path(url: &str) -> Result<PathBuf> {
    let options = SqliteConnectOptions::from_str(url).map_err(|e| Error::InvalidUrl {
        url: crate::redact_url(url),
        reason: e.to_string(),
    })?;
    Ok(options.get_filename().to_path_buf())
}

impl Store {
    /// SQLite: writes a consistent copy of the live database to `path` with `VACUUM INTO`
    /// (readers and writers carry on meanwhile); `path` must not exist.
    pub async fn sqlite_backup_into(&self, path: &Path) -> Result<()> {
        let Pool::Sqlite(pool) = self.pool() else {
            return Err(Error::Unsupported(
                "`VACUUM INTO` backups are for SQLite; use pg_dump for PostgreSQL".into(),
            ));
        };
        let target = path
            .to_str()
            .ok_or_else(|| Error::Unsupported("the backup path is not UTF-8".into()))?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// SQLite: `PRAGMA integrity_check` (`ok` when sound). PostgreSQL: `ok`.
    pub async fn integrity_check(&self) -> Result<String> {
        match self.pool() {
            Pool::Sqlite(pool) => {
                let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_all(pool)
                    .await?;
                Ok(rows.join("; "))
            }
            Pool::Postgres(_) => Ok("ok".into()),
        }
    }

    /// Row counts of [`COUNTED_TABLES`].
    pub async fn table_counts(&self) -> Result<TableCounts> {
        let mut out = Vec::new();
        for t in COUNTED_TABLES {
            let sql = format!("SELECT COUNT(*) FROM {t}");
            let n: i64 = with_pool!(self, pool => sqlx::query_scalar(&sql).fetch_one(pool).await?);
            out.push((t.to_string(), n));
        }
        Ok(out)
    }

    /// PostgreSQL: opens a repeatable-read transaction and exports its snapshot.
    pub async fn pg_snapshot(&self) -> Result<PgSnapshot> {
        let Pool::Postgres(pool) = self.pool() else {
            return Err(Error::Unsupported("snapshots are for PostgreSQL".into()));
        };
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *tx)
            .await?;
        Ok(PgSnapshot { tx, id })
    }
}

/// Whether the PostgreSQL database at `url` holds Aegis tables (a restore needs an empty
/// one); connects without migrating.
pub async fn postgres_has_aegis_tables(url: &str) -> Result<bool> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|source| Error::Connect {
            url: crate::redact_url(url),
            source,
        })?;
    let found: bool = sqlx::query_scalar("SELECT to_regclass('policy_audit_logs') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(found)
}
