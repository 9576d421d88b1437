//! The body of `POST /executor/execute`, parsed and checked without trusting anything in it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The remediations Aegis performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `kubectl rollout restart deployment/NAME`, or delete a controller-owned pod.
    RestartPod,
    /// `kubectl scale deployment/NAME --replicas=N`, within bounds.
    ScaleDeployment,
    /// `kubectl rollout undo deployment/NAME [--to-revision=N]`.
    RollbackDeployment,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestartPod => "restart_pod",
            Self::ScaleDeployment => "scale_deployment",
            Self::RollbackDeployment => "rollback_deployment",
        }
    }
}

/// Action parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Desired replicas for `scale_deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replicas to add (or, negative, remove) relative to the current count, for
    /// `scale_deployment` instead of `replicas`: the self-healing loop scales up without
    /// reading the count first, and the executor resolves it at the moment of the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_by: Option<i32>,
    /// Revision for `rollback_deployment`; the previous one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// What `target` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A Deployment (`NAME` or `deployment/NAME`).
    Deployment,
    /// A Pod (`pod/NAME`; `restart_pod` only).
    Pod,
}

/// A signed remediation request (CONTRACT.md "Execute").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// What to do.
    pub action: Action,
    /// Where: an exact namespace name.
    pub namespace: String,
    /// `NAME`, `deployment/NAME` or `pod/NAME`.
    pub target: String,
    /// Parameters of the action.
    #[serde(default)]
    pub params: Params,
    /// Why, for the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the request was signed (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// Unique per request; a reused nonce is a replay.
    pub nonce: String,
    /// Retries of one logical request share this key and get the first answer back.
    #[serde(default, alias = "idempotencyKey")]
    pub idempotency_key: Option<String>,
}

/// Why a request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// A Kubernetes object name (RFC 1123 subdomain, at most 253) or namespace (label, at most
/// 63): lowercase letters, digits, `-` (and `.` for names), alphanumeric at both ends.
fn is_dns_name(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

impl ActionRequest {
    /// Parses the exact body bytes (after the signature was checked over them).
    pub fn parse(body: &[u8]) -> Result<Self, InvalidRequest> {
        let req: Self = serde_json::from_slice(body)
            .map_err(|e| InvalidRequest(format!("invalid body: {e}")))?;
        req.validate()?;
        Ok(req)
    }

    /// The checks [`parse`](Self::parse) applies, for requests built in-process.
    pub fn check(&self) -> Result<(), InvalidRequest> {
        self.validate()
    }

    fn validate(&self) -> Result<(), InvalidRequest> {
        // The namespace is not judged here: the exact allowlist refuses anything it does not
        // name (403), spelling games included, and its entries are valid names.
        if self.namespace.is_empty() || self.namespace.len() > 253 {
            return Err(InvalidRequest("`namespace` must be 1 to 253 bytes".into()));
        }
        let (kind, name) = self.target_parts();
        if !is_dns_name(name, 253, true) {
            return Err(InvalidRequest(format!(
                "`target` `{}` is not a Kubernetes object name",
                self.target
            )));
        }
        if kind == TargetKind::Pod && self.action != Action::RestartPod {
            return Err(InvalidRequest(format!(
                "`{}` acts on deployments, not pods",
                self.action.as_str()
            )));
        }
        match self.action {
            Action::ScaleDeployment
                if self.params.replicas.is_some() == self.params.scale_by.is_some() =>
            {
                return Err(InvalidRequest(
                    "`scale_deployment` needs exactly one of `params.replicas` and `params.scale_by`"
                        .into(),
                ));
            }
            Action::ScaleDeployment if self.params.scale_by == Some(0) => {
                return Err(InvalidRequest("`params.scale_by` must not be 0".into()));
            }
            Action::ScaleDeployment if self.params.replicas.is_some_and(|r| r < 0) => {
                return Err(InvalidRequest(
                    "`params.replicas` must not be negative".into(),
                ));
            }
            Action::RollbackDeployment if self.params.revision.is_some_and(|r| r < 1) => {
                return Err(InvalidRequest("`params.revision` must be 1 or more".into()));
            }
            _ => {}
        }
        if self.nonce.is_empty() || self.nonce.len() > 128 {
            return Err(InvalidRequest("`nonce` must be 1 to 128 characters".into()));
        }
        if self
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 128)
        {
            return Err(InvalidRequest(
                "`idempotency_key` must be 1 to 128 characters".into(),
            ));
        }
        if self.reason.as_ref().is_some_and(|r| r.len() > 2_000) {
            return Err(InvalidRequest("`reason` may be at most 2,000 bytes".into()));
        }
        Ok(())
    }

    /// The target's kind and name.
    pub fn target_parts(&self) -> (TargetKind, &str) {
        if let Some(name) = self.target.strip_prefix("pod/") {
            (TargetKind::Pod, name)
        } else if let Some(name) = self.target.strip_prefix("deployment/") {
            (TargetKind::Deployment, name)
        } else {
            (TargetKind::Deployment, self.target.as_str())
        }
    }
}

/// True when `namespace` is exactly one of `allowed` (no globbing, no case folding, no
/// trimming: `Production` and `production ` are other names).
pub fn namespace_allowed(namespace: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a == namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: &str) -> String {
        format!(
            r#"{{"action": "scale_deployment", "namespace": "production", "target": "api",
                "params": {{"replicas": 4}}, "timestamp": "2026-11-24T14:00:00Z", "nonce": "n1"{extra}}}"#
        )
    }

    #[test]
    fn parses_and_validates() {
        let r = ActionRequest::parse(body("").as_bytes()).unwrap();
        assert_eq!(
            (r.action, r.params.replicas),
            (Action::ScaleDeployment, Some(4))
        );
        assert!(ActionRequest::parse(body(r#", "extra": 1"#).as_bytes()).is_err());
        let odd_ns = body("").replace("\"production\"", "\"Production\"");
        assert!(
            ActionRequest::parse(odd_ns.as_bytes()).is_ok(),
            "left to the allowlist"
        );
        let bad_target = body("").replace("\"api\"", "\"API\"");
        assert!(
            ActionRequest::parse(bad_target.as_bytes())
                .unwrap_err()
                .0
                .contains("target")
        );
        let pod_scale = body("").replace("\"api\"", "\"pod/api-1\"");
        assert!(ActionRequest::parse(pod_scale.as_bytes()).is_err());
        assert!(ActionRequest::parse(b"{").is_err());
    }

    #[test]
    fn allowlist_is_exact() {
        let allowed = vec!["default".to_owned(), "production".to_owned()];
        assert!(namespace_allowed("production", &allowed));
        for ns in [
            "Production",
            "production ",
            "kube-system",
            "prod*",
            "",
            "production\n",
        ] {
            assert!(!namespace_allowed(ns, &allowed), "{ns:?}");
        }
    }
}
