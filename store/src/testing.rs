//! Test databases: a fresh SQLite file or a fresh PostgreSQL schema for each test, so every
//! storage test runs on both backends without tests seeing each other's rows.
//!
//! PostgreSQL is taken from `AEGIS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). It is not optional: a test that cannot reach it
//! fails, because a storage test that silently skips one backend proves nothing.

// Helpers for tests: failing set-up must fail the test loudly.
#![allow(clippy::panic, reason = "test helpers fail the test loudly")]

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Store, StoreOptions};

/// Environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_ENV: &str = "AEGIS_TEST_POSTGRES_URL";
/// The PostgreSQL server of the project machines.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A migrated, empty database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// The store connected to it.
    pub store: Store,
    /// A URL that reaches the same database (for a second process or connection).
    pub url: String,
    dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

/// The PostgreSQL server URL for tests.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        uuid::Uuid::new_v4().simple()
    )
}

impl TestDb {
    /// A new SQLite file in a temporary folder.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary folder: {e}"));
        let url = format!("sqlite://{}", dir.path().join("aegis.db").display());
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("sqlite test database: {e}"));
        Self {
            store,
            url,
            dir: Some(dir),
            schema: None,
        }
    }

    /// A new schema on the test PostgreSQL server, first on the connections' search path.
    pub async fn postgres() -> Self {
        let base = postgres_url();
        let schema = format!("aegis_test_{}", unique_suffix());
        let admin = sqlx::PgPool::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("postgres at {base} ({POSTGRES_URL_ENV}): {e}"));
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("create schema: {e}"));
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let options = StoreOptions {
            max_connections: 5,
            ..Default::default()
        };
        let store = Store::connect(&url, &options)
            .await
            .unwrap_or_else(|e| panic!("postgres test database: {e}"));
        Self {
            store,
            url,
            dir: None,
            schema: Some(schema),
        }
    }

    /// One of each backend: SQLite first, then PostgreSQL.
    pub async fn both() -> Vec<Self> {
        vec![Self::sqlite().await, Self::postgres().await]
    }

    /// The backend's name, for assertion messages.
    pub fn name(&self) -> &'static str {
        self.store.backend().as_str()
    }

    /// Closes the store and drops the PostgreSQL schema (the SQLite folder goes with `self`).
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some(schema) = &self.schema
            && let Ok(admin) = sqlx::PgPool::connect(&postgres_url()).await
        {
            let _ = sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .execute(&admin)
                .await;
            admin.close().await;
        }
        drop(self.dir);
    }
}
