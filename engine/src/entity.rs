//! Which workload a series or log stream describes, from its labels, so one feature row
//! describes one workload.
//!
//! In order: an explicit `deployment` (or `statefulset`, `daemonset`) label; a
//! kube-state-metrics owner (`owner_kind="ReplicaSet"`, `owner_name="api-7d4b9c8f6a"`,
//! whose pod-template hash is dropped); a `pod` name in Deployment form
//! (`api-7d4b9c8f6a-x2kqp` → `api`); then `app.kubernetes.io/name`/`app` labels.
//! The namespace comes from `namespace` (or `kubernetes_namespace`, `k8s_namespace_name`).

use std::fmt;

/// A workload: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entity {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Deployment (or other controller) name.
    pub workload: String,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.workload)
    }
}

fn label<'a>(labels: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| {
        labels
            .iter()
            .find(|(k, v)| k == n && !v.is_empty())
            .map(|(_, v)| v.as_str())
    })
}

/// Whether `s` looks like a pod-template hash (ReplicaSet suffix): 5-10 lowercase
/// alphanumerics from Kubernetes' safe alphabet, with at least one digit.
fn is_template_hash(s: &str) -> bool {
    (5..=10).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        && s.bytes().any(|b| b.is_ascii_digit())
}

/// `api-7d4b9c8f6a` → `api` (a ReplicaSet named by its Deployment).
fn strip_template_hash(name: &str) -> Option<&str> {
    let (base, hash) = name.rsplit_once('-')?;
    (is_template_hash(hash) && !base.is_empty()).then_some(base)
}

/// `api-7d4b9c8f6a-x2kqp` → `api` (a pod of a ReplicaSet of a Deployment).
fn deployment_of_pod(pod: &str) -> Option<&str> {
    let (rs, random) = pod.rsplit_once('-')?;
    if random.len() != 5 || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    strip_template_hash(rs)
}

/// The entity of a series or stream, when its labels name one.
pub fn resolve(labels: &[(String, String)]) -> Option<Entity> {
    let namespace = label(
        labels,
        &[
            "namespace",
            "kubernetes_namespace",
            "k8s_namespace_name",
            "exported_namespace",
        ],
    )?;
    let workload = label(
        labels,
        &[
            "deployment",
            "statefulset",
            "daemonset",
            "k8s_deployment_name",
        ],
    )
    .map(str::to_string)
    .or_else(|| {
        let kind = label(labels, &["owner_kind", "created_by_kind"])?;
        let name = label(labels, &["owner_name", "created_by_name"])?;
        match kind {
            "ReplicaSet" => Some(strip_template_hash(name).unwrap_or(name).to_string()),
            "StatefulSet" | "DaemonSet" | "Deployment" | "Job" => Some(name.to_string()),
            _ => None,
        }
    })
    .or_else(|| {
        label(labels, &["pod", "kubernetes_pod_name", "k8s_pod_name"])
            .and_then(deployment_of_pod)
            .map(str::to_string)
    })
    .or_else(|| {
        label(
            labels,
            &["app_kubernetes_io_name", "app.kubernetes.io/name", "app"],
        )
        .map(str::to_string)
    })?;
    Some(Entity {
        namespace: namespace.to_string(),
        workload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn workloads_from_the_usual_label_sets() {
        let e = |pairs: &[(&str, &str)]| resolve(&l(pairs)).map(|e| e.to_string());
        assert_eq!(
            e(&[("namespace", "production"), ("deployment", "api")]).as_deref(),
            Some("production/api")
        );
        // cAdvisor / kubelet: a pod of a Deployment.
        assert_eq!(
            e(&[
                ("namespace", "production"),
                ("pod", "api-7d4b9c8f6a-x2kqp"),
                ("container", "api")
            ])
            .as_deref(),
            Some("production/api")
        );
        assert_eq!(
            e(&[
                ("namespace", "shop"),
                ("pod", "checkout-v2-5c9b7d6f4-abcde")
            ])
            .as_deref(),
            Some("shop/checkout-v2")
        );
        // kube-state-metrics kube_pod_owner.
        assert_eq!(
            e(&[
                ("namespace", "production"),
                ("pod", "x"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "api-7d4b9c8f6a")
            ])
            .as_deref(),
            Some("production/api")
        );
        assert_eq!(
            e(&[
                ("namespace", "db"),
                ("pod", "pg-0"),
                ("owner_kind", "StatefulSet"),
                ("owner_name", "pg")
            ])
            .as_deref(),
            Some("db/pg")
        );
        // Loki streams from promtail.
        assert_eq!(
            e(&[
                ("namespace", "production"),
                ("app", "api"),
                ("stream", "stderr")
            ])
            .as_deref(),
            Some("production/api")
        );
        // A StatefulSet pod name is not mistaken for a Deployment pod; no namespace, no entity.
        assert_eq!(e(&[("namespace", "db"), ("pod", "pg-0")]), None);
        assert_eq!(e(&[("deployment", "api")]), None);
    }
}
