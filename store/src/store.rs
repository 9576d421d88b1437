//! Connecting, migrating and checking the database.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{Error, Result};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An SQLite file (or memory), the embedded default.
    Sqlite,
    /// A PostgreSQL server, for production and several replicas.
    Postgres,
}

impl Backend {
    /// The lowercase name used in `/health` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Pool settings; the defaults suit one `aegis serve` process.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The pool of one backend; every query matches on it once.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database behind Aegis: cheap to clone, shared by every component.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    url: Arc<str>,
    /// Serialises chain appends inside this process, one lock per audit table, so
    /// concurrent writers queue here instead of contending on the database lock; each
    /// holds the chain's tail as this process last saw it.
    pub(crate) chain_locks: Arc<[tokio::sync::Mutex<crate::audit::ChainTail>; 2]>,
    /// Whether action audit rows are also queued in `audit_outbox` for Loki.
    pub(crate) outbox: bool,
    /// The keys of the keyed audit chain, when configured.
    pub(crate) audit_keys: Option<Arc<crate::AuditKeys>>,
}

/// What `/health` reports about the database.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseHealth {
    /// `ok` or `down`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub backend: Backend,
    /// The newest applied migration, when reachable.
    pub schema_version: Option<i64>,
    /// Round-trip time of a trivial query, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why the database is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Store {
    /// Opens the database named by `url` (`sqlite://…`, `sqlite::memory:`, `postgres://…`)
    /// and applies the embedded migrations of its dialect.
    ///
    /// For SQLite the folder and the file are created when missing.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let redacted = redact_url(url);
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(connect_sqlite(url, &redacted, options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(connect_postgres(url, &redacted, options).await?)
        } else {
            return Err(Error::InvalidUrl {
                url: redacted,
                reason: "expected a `sqlite://` or `postgres://` url".into(),
            });
        };
        match &pool {
            Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(Self {
            pool,
            url: redacted.into(),
            outbox: false,
            audit_keys: None,
            chain_locks: Arc::new([tokio::sync::Mutex::new(None), tokio::sync::Mutex::new(None)]),
        })
    }

    /// Also queue every action audit row in `audit_outbox` (same transaction), for the Loki
    /// pusher.
    #[must_use]
    pub fn with_audit_outbox(mut self) -> Self {
        self.outbox = true;
        self
    }

    /// Sign new audit rows and archive records with `keys` (and verify with them).
    pub fn with_audit_keys(mut self, keys: crate::AuditKeys) -> Self {
        self.audit_keys = Some(Arc::new(keys));
        self
    }

    /// The audit keys, when configured.
    pub fn audit_keys(&self) -> Option<&crate::AuditKeys> {
        self.audit_keys.as_deref()
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The database URL with any password replaced by `***`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The version of the newest applied migration.
    pub async fn schema_version(&self) -> Result<i64> {
        const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
        let version: i64 = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(SQL).fetch_one(p).await?,
            Pool::Postgres(p) => sqlx::query_scalar(SQL).fetch_one(p).await?,
        };
        Ok(version)
    }

    /// Checks that the database answers and reports the schema version.
    pub async fn health(&self) -> DatabaseHealth {
        let started = Instant::now();
        let result = self.schema_version().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(version) => DatabaseHealth {
                status: "ok",
                backend: self.backend(),
                schema_version: Some(version),
                latency_ms: Some(latency_ms),
                error: None,
            },
            Err(error) => DatabaseHealth {
                status: "down",
                backend: self.backend(),
                schema_version: None,
                latency_ms: None,
                error: Some(error.to_string()),
            },
        }
    }

    /// Waits for in-flight queries and closes every connection (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

async fn connect_sqlite(url: &str, redacted: &str, options: &StoreOptions) -> Result<SqlitePool> {
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::InvalidUrl {
            url: redacted.to_owned(),
            reason: e.to_string(),
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let file = connect.get_filename().to_owned();
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    // An in-memory database lives as long as its one connection.
    let (max, min) = if in_memory {
        (1, 1)
    } else {
        (options.max_connections.max(1), 0)
    };
    SqlitePoolOptions::new()
        .max_connections(max)
        .min_connections(min)
        .idle_timeout(if in_memory {
            None
        } else {
            Some(Duration::from_secs(600))
        })
        .max_lifetime(if in_memory {
            None
        } else {
            Some(Duration::from_secs(1800))
        })
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(|source| Error::Connect {
            url: redacted.to_owned(),
            source,
        })
}

async fn connect_postgres(url: &str, redacted: &str, options: &StoreOptions) -> Result<PgPool> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| Error::InvalidUrl {
            url: redacted.to_owned(),
            reason: e.to_string(),
        })?
        .application_name("aegis");
    PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(|source| Error::Connect {
            url: redacted.to_owned(),
            source,
        })
}

/// Replaces the password of a URL (`postgres://user:secret@host/db`) with `***`, for logs,
/// `/health` and `aegis config print`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let mut changed = false;
    // Setting a password only fails for URLs that cannot carry one.
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_ok() {
        changed = true;
    }
    if parsed.query_pairs().any(|(k, _)| secret_param(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_param(&k) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// Query parameters that carry a secret (libpq's `password`, `sslpassword`; tokens and
/// keys some drivers take).
fn secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_key",
    ]
    .iter()
    .any(|s| n.ends_with(s))
}

/// A PostgreSQL URL without its password (from the user part or a `password` query
/// parameter), and the password: for `pg_dump` and `pg_restore`, which then take it from
/// `PGPASSWORD` instead of a command line every user of the machine can read in `ps`.
pub fn split_password(url: &str) -> (String, Option<String>) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (url.to_owned(), None);
    };
    let mut password = parsed.password().map(|p| {
        url::form_urlencoded::parse(format!("p={p}").as_bytes())
            .next()
            .map_or_else(|| p.to_owned(), |(_, v)| v.into_owned())
    });
    if password.is_some() {
        let _ = parsed.set_password(None);
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let mut rest = Vec::new();
        for (k, v) in parsed.query_pairs() {
            if k == "password" {
                password = Some(v.into_owned());
            } else {
                rest.push((k.into_owned(), v.into_owned()));
            }
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
    }
    (parsed.to_string(), password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_query_parameters_are_redacted_and_split_off() {
        assert_eq!(
            redact_url("postgres://app@db/aegis?sslmode=require&password=s3cret"),
            "postgres://app@db/aegis?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://app:pw@db/aegis?sslpassword=k3y"),
            "postgres://app:***@db/aegis?sslpassword=***"
        );
        assert_eq!(
            split_password("postgres://app@db/aegis?sslmode=require&password=s%40cret"),
            (
                "postgres://app@db/aegis?sslmode=require".to_owned(),
                Some("s@cret".to_owned())
            )
        );
        assert_eq!(
            split_password("postgres://app:p%40ss@db:5432/aegis"),
            (
                "postgres://app@db:5432/aegis".to_owned(),
                Some("p@ss".to_owned())
            )
        );
        assert_eq!(
            split_password("postgres://postgres@127.0.0.1/test"),
            ("postgres://postgres@127.0.0.1/test".to_owned(), None)
        );
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/aegis"),
            "postgres://app:***@db:5432/aegis"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("sqlite://./aegis-data/aegis.db"),
            "sqlite://./aegis-data/aegis.db"
        );
        assert_eq!(
            redact_url("redis://:pw@localhost:6379"),
            "redis://:***@localhost:6379"
        );
    }

    #[tokio::test]
    async fn creates_sqlite_folder_and_file_on_first_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/aegis.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        assert!(path.exists());
        assert_eq!(store.backend(), Backend::Sqlite);
        assert!(store.schema_version().await.unwrap() >= 1);
        store.close().await;
    }

    #[tokio::test]
    async fn rejects_unknown_scheme() {
        let err = Store::connect("mysql://localhost/db", &StoreOptions::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a `sqlite://` or `postgres://` url"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unreachable_postgres_is_a_connect_error_with_redacted_url() {
        let options = StoreOptions {
            acquire_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        let err = Store::connect("postgres://u:pw@127.0.0.1:1/db", &options)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Connect { .. }), "{text}");
        assert!(
            text.contains("u:***@127.0.0.1:1") && !text.contains("pw"),
            "{text}"
        );
    }
}
