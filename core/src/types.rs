//! Small enums shared across stages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value did not name one of an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of {expected}")]
pub struct ParseEnumError {
    /// What was given.
    pub value: String,
    /// The accepted spellings, for the message.
    pub expected: &'static str,
}

/// How bad a detection is, from `low` to `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look, nothing to do.
    Low,
    /// Unusual; act only where policy says so.
    Medium,
    /// Clearly anomalous.
    High,
    /// Failing now.
    Critical,
}

impl Severity {
    /// The lowercase name used in JSON, policies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            _ => Err(ParseEnumError {
                value: s.to_owned(),
                expected: "low, medium, high, critical",
            }),
        }
    }
}

/// Whether the executor only records what it would do or talks to Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorMode {
    /// Every guard runs and every decision is audited, but nothing is sent to a cluster.
    #[default]
    DryRun,
    /// Actions go to the Kubernetes API.
    Kubernetes,
}

impl ExecutorMode {
    /// The spelling used in configuration and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DryRun => "dry-run",
            Self::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for ExecutorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutorMode {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dry-run" | "dry_run" | "dryrun" => Ok(Self::DryRun),
            "kubernetes" => Ok(Self::Kubernetes),
            _ => Err(ParseEnumError {
                value: s.to_owned(),
                expected: "dry-run, kubernetes",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_round_trips_and_orders() {
        for s in [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
        }
        assert!(Severity::Critical > Severity::High);
        assert!("urgent".parse::<Severity>().is_err());
    }

    #[test]
    fn executor_mode_parses_config_spellings() {
        assert_eq!("dry-run".parse::<ExecutorMode>(), Ok(ExecutorMode::DryRun));
        assert_eq!(
            "kubernetes".parse::<ExecutorMode>(),
            Ok(ExecutorMode::Kubernetes)
        );
        let err = "k8s".parse::<ExecutorMode>().err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("`k8s` is not one of dry-run, kubernetes")
        );
    }
}
