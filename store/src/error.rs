//! Storage errors.

/// The storage result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL cannot be used (the user's configuration).
    #[error("invalid database url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with any password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL with any password redacted.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed at run time.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Creating the folder of an SQLite database failed.
    #[error("cannot create `{path}`: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A value the caller passed is not acceptable (an unknown role).
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with the stored state (a duplicate name, a stale version).
    #[error("{0}")]
    Conflict(String),
    /// The operation does not exist for this backend.
    #[error("{0}")]
    Unsupported(String),
    /// Object storage (a folder or S3) could not be opened, read or written.
    #[error("{0}")]
    ObjectStore(String),
    /// An audit key is malformed or the key set is inconsistent (the user's configuration).
    #[error("{0}")]
    AuditKey(String),
    /// Loki did not take the outbox's rows (unreachable, or it answered with an error).
    #[error("{0}")]
    Delivery(String),
    /// Stored data does not have the shape Aegis wrote (a bug or tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl Error {
    /// True when the database refused a statement because of what a row holds (a value it
    /// cannot store, such as a NUL character in PostgreSQL text, or one out of range): the
    /// same rows will be refused again, whereas other rows would go through.
    pub fn is_refusal(&self) -> bool {
        let Self::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Encode(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                // PostgreSQL: class 22, data exception (invalid byte sequence 22021,
                // unsupported Unicode escape 22P05, string too long 22001, ...). SQLite:
                // a string or blob too big (18), a datatype mismatch (20).
                code.starts_with("22") || code == "18" || code == "20"
            }
            _ => false,
        }
    }

    /// True when the database could not be reached or did not answer (a connection refused
    /// or reset, a pool with no connection to give in time): a retry later may succeed.
    /// Errors the database itself returned are not.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
            ),
            _ => false,
        }
    }
}

/// Equal when of the same kind with the same message: driver errors do not compare, and
/// results are compared in tests.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}
