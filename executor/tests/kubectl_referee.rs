//! kubectl as the referee: Debian's `kubectl` and Aegis's executor perform the same three
//! actions against two fresh copies of the fake API server, and must send the same write
//! requests (method, path, query, content type, body, with timestamps normalised) and leave
//! the same objects behind. "kubectl-exact" is then a fact about kubectl, not about our
//! reading of it.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use aegis_executor::testing as fake_kube;
use aegis_executor::{ActionRequest, Executor, ScaleLimits, Status};
use serde_json::{Value, json};

/// The kubectl binary (`AEGIS_TEST_KUBECTL`, else on the PATH), or one line naming the peer
/// and how to install it.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("AEGIS_TEST_KUBECTL") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("kubectl"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("peer missing: kubectl — install it with `apt-get install kubectl` (or run scripts/test, which does)")
        })
}

/// One write request, normalised: method, path, query pairs (sorted, empty ones dropped),
/// content type and body.
type Write = (String, String, Vec<(String, String)>, Option<String>, Value);

/// Timestamps normalised: `restartedAt` values become a placeholder and
/// `creationTimestamp` keys go (kubectl's typed round trip writes `null` for them).
fn normalise(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "creationTimestamp")
                .map(|(k, v)| {
                    let v = if k == "kubectl.kubernetes.io/restartedAt" {
                        json!("<time>")
                    } else {
                        normalise(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

fn writes(shared: &fake_kube::Shared) -> Vec<Write> {
    shared
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| {
            let (path, query) = c.path.split_once('?').unwrap_or((&c.path, ""));
            let mut pairs: Vec<(String, String)> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            pairs.sort();
            (
                c.method.clone(),
                path.to_owned(),
                pairs,
                c.content_type.clone(),
                c.body.as_ref().map(normalise).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The objects left behind, normalised: timestamps as above, and replica sets keyed by
/// revision with their pod-template-hash (which hashes the restart time) replaced.
fn end_state(shared: &fake_kube::Shared) -> Value {
    let c = shared.lock().unwrap();
    let mut replica_sets = BTreeMap::new();
    for (name, rs) in &c.replica_sets {
        let hash = rs["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap()
            .to_owned();
        let text = normalise(rs).to_string().replace(&hash, "<hash>");
        let revision = rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .unwrap()
            .to_owned();
        let rs: Value = serde_json::from_str(&text).unwrap();
        assert!(name.ends_with(&hash));
        replica_sets.insert(revision, rs);
    }
    json!({
        "deployments": normalise(&json!(c.deployments)),
        "replicasets": replica_sets,
        "pods": normalise(&json!(c.pods)),
    })
}

/// Runs `kubectl -n production ARGS` against a fresh copy of the cluster.
async fn by_kubectl(args: &[&str]) -> (Vec<Write>, Value) {
    let (url, shared) = fake_kube::start(fake_kube::cluster_as_served()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, fake_kube::kubeconfig(&url)).unwrap();
    let mut command = std::process::Command::new(kubectl());
    command
        .env("KUBECONFIG", &config)
        .env("HOME", dir.path())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["-n", "production"])
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (writes(&shared), end_state(&shared))
}

/// Runs the executor's `action` with `params` against a fresh copy of the cluster.
async fn by_aegis(action: &str, params: Value) -> (Vec<Write>, Value) {
    let (url, shared) = fake_kube::start(fake_kube::cluster_as_served()).await;
    let request = ActionRequest::parse(
        json!({"action": action, "namespace": "production", "target": "deployment/api",
               "params": params, "timestamp": chrono::Utc::now(), "nonce": "n"})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let out = Executor::Kubernetes(fake_kube::client(&url))
        .execute(&request, ScaleLimits::default())
        .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    (writes(&shared), end_state(&shared))
}

async fn same(kubectl_args: &[&str], action: &str, params: Value) -> Vec<Write> {
    let (kubectl_writes, kubectl_state) = by_kubectl(kubectl_args).await;
    let (aegis_writes, aegis_state) = by_aegis(action, params).await;
    assert!(!kubectl_writes.is_empty(), "kubectl wrote nothing");
    assert_eq!(
        aegis_writes, kubectl_writes,
        "write requests differ (left: Aegis, right: kubectl {kubectl_args:?})"
    );
    assert_eq!(
        aegis_state, kubectl_state,
        "objects left behind differ (left: Aegis, right: kubectl {kubectl_args:?})"
    );
    kubectl_writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_matches_kubectl() {
    let w = same(
        &["rollout", "restart", "deployment/api"],
        "restart_pod",
        json!({}),
    )
    .await;
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].3.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_matches_kubectl() {
    let w = same(
        &["scale", "deployment/api", "--replicas=5"],
        "scale_deployment",
        json!({"replicas": 5}),
    )
    .await;
    assert_eq!(w.len(), 1);
    assert!(w[0].1.ends_with("/deployments/api/scale"), "{w:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_undo_matches_kubectl() {
    let w = same(
        &["rollout", "undo", "deployment/api"],
        "rollback_deployment",
        json!({}),
    )
    .await;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].3.as_deref(), Some("application/json-patch+json"));
    assert_eq!(
        w[0].4[0]["value"]["spec"]["containers"][0]["image"],
        "registry.example.com/api:2.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_undo_to_a_revision_matches_kubectl() {
    let w = same(
        &["rollout", "undo", "deployment/api", "--to-revision=1"],
        "rollback_deployment",
        json!({"revision": 1}),
    )
    .await;
    assert_eq!(
        w[0].4[0]["value"]["spec"]["containers"][0]["image"],
        "registry.example.com/api:1.0"
    );
}
