//! The runtime's errors: a [`Refusal`] when a guard or a rule says no (the caller can act on
//! its reason), and [`Error`] for everything a call can end with.

/// What kind of "no" a refusal is; the API answers each with its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is malformed or a value is invalid.
    Invalid,
    /// Missing or wrong credentials (a signature, a timestamp out of range).
    Unauthenticated,
    /// Not allowed: a namespace outside the allowlist, a policy, four-eyes.
    Forbidden,
    /// No such thing.
    NotFound,
    /// Conflicts with the current state: a replayed nonce, an open breaker, a decided approval.
    Conflict,
    /// A budget is spent: rate, cooldown, blast radius; `retry_after` says when to come back.
    RateLimited,
    /// Cannot be done right now (the audit trail cannot take the decision yet, shutting down).
    Unavailable,
}

impl RefusalKind {
    /// The HTTP status the API answers with; also kept in the `denied` audit row of a
    /// refused action, so operators read the same number in both places.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Invalid => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
        }
    }

    /// The machine-readable code of CONTRACT.md's error envelope.
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A guard or rule said no: why, and when trying again could help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// In words, for the caller and the audit trail.
    pub reason: String,
    /// Seconds after which the same request may pass.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal of `kind` with no retry hint.
    pub fn new(kind: RefusalKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Adds when to retry (at least one second).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
}

/// What a runtime call can end with besides its answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A guard or rule refused; see [`Refusal`].
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed (the store tells an outage from a fault).
    #[error(transparent)]
    Store(#[from] aegis_store::Error),
    /// A policy source could not be read or proved: a file, the database, the shadow set.
    #[error("{0}")]
    Policy(String),
    /// A model could not be fitted, loaded or saved.
    #[error("{0}")]
    Model(String),
    /// A dependency the runtime is set up with could not be reached (Redis).
    #[error("{0}")]
    Setup(String),
    /// A fault on our side (a stored record that does not parse, say); logged by the caller.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A fault from anything displayable.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    /// The refusal, when this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// Equal when of the same kind with the same message (the store's errors carry driver
/// errors that do not compare), so results can be compared in tests and callers.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}
