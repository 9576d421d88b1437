//! The actions against the Kubernetes API, reproducing what kubectl sends.
//!
//! Long because each action is written out as the exact requests kubectl sends, with the
//! reasons for each field beside it; the three actions share the request helpers.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::{Value, json};

use crate::request::{Action, ActionRequest, TargetKind};

/// Bounds on `scale_deployment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleLimits {
    /// Fewest replicas a scale may leave.
    pub min_replicas: i32,
    /// Most replicas a scale may ask for.
    pub max_replicas: i32,
    /// Largest change in one action.
    pub max_step: i32,
}

impl Default for ScaleLimits {
    fn default() -> Self {
        Self {
            min_replicas: 1,
            max_replicas: 50,
            max_step: 10,
        }
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The API accepted the change (or there was nothing to change).
    Succeeded,
    /// Dry-run: every guard passed, nothing was sent.
    DryRun,
    /// Refused before anything was changed (paused deployment, bounds, unowned pod).
    Denied,
    /// The API refused or failed.
    Failed,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::DryRun => "dry_run",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// What an action did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// In words.
    pub message: String,
    /// The facts: replicas before/after, revisions, the API's answer.
    pub details: Value,
}

impl Outcome {
    fn new(status: Status, message: impl Into<String>, details: Value) -> Self {
        Self {
            status,
            message: message.into(),
            details,
        }
    }
}

/// Where actions go.
#[derive(Clone)]
pub enum Executor {
    /// Nothing is sent; the outcome says what would have been done.
    DryRun,
    /// The Kubernetes API.
    Kubernetes(kube::Client),
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DryRun => "Executor::DryRun",
            Self::Kubernetes(_) => "Executor::Kubernetes",
        })
    }
}

/// The API's error as an outcome: Kubernetes `Status` message and code kept, and how many
/// attempts were made.
fn api_failure(what: &str, error: kube::Error, attempts: u32) -> Outcome {
    match error {
        kube::Error::Api(status) => Outcome::new(
            Status::Failed,
            format!(
                "{what}: {} ({} {})",
                status.message, status.code, status.reason
            ),
            json!({"code": status.code, "reason": status.reason, "message": status.message,
                   "attempts": attempts}),
        ),
        other => Outcome::new(
            Status::Failed,
            format!("{what}: {other}"),
            json!({"error": other.to_string(), "attempts": attempts}),
        ),
    }
}

/// Which failures of a call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read: retried after a 429/5xx answer or a transport failure (timeouts included).
    Read,
    /// A write whose body is fixed before the first attempt (a merge or strategic patch to
    /// a stated value): applying it twice leaves what applying it once does, so it is
    /// retried after a 429/5xx *answer*. Not after a transport failure or timeout: the API
    /// server may still be working on it, and an overloaded one needs relief.
    IdempotentWrite,
    /// Never retried (a pod delete: a second one could hit what replaced it).
    Never,
}

/// Longest wait for a connection to the API server.
pub const API_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait for the API server's answer to one call.
pub const API_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Attempts per call, at most.
const ATTEMPTS: u32 = 3;
/// Pause before the second and third attempts.
const BACKOFF: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(600),
];

fn retryable(error: &kube::Error, retry: Retry) -> bool {
    let answered_transient =
        matches!(error, kube::Error::Api(s) if s.code == 429 || (500..=599).contains(&s.code));
    match retry {
        Retry::Read => answered_transient || !matches!(error, kube::Error::Api(_)),
        Retry::IdempotentWrite => answered_transient,
        Retry::Never => false,
    }
}

/// Runs one API call under `retry`; the failure as the action's outcome.
async fn call<T, F, Fut>(what: &str, retry: Retry, mut f: F) -> Result<T, Outcome>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(error) if attempt < ATTEMPTS && retryable(&error, retry) => {
                tracing::warn!(what, attempt, %error, "kubernetes API call failed; retrying");
                tokio::time::sleep(BACKOFF[attempt as usize - 1]).await;
                attempt += 1;
            }
            Err(error) => return Err(api_failure(what, error, attempt)),
        }
    }
}

/// Returns early with the outcome of a failed API call.
macro_rules! api {
    ($what:expr, $retry:expr, $call:expr) => {
        // The call is made inside the block so its temporaries (params, patch) live
        // as long as its future.
        match call($what, $retry, || async { $call.await }).await {
            Ok(v) => v,
            Err(outcome) => return outcome,
        }
    };
}

impl Executor {
    /// Performs `req` (already authorised by every guard).
    pub async fn execute(&self, req: &ActionRequest, limits: ScaleLimits) -> Outcome {
        let client = match self {
            Self::DryRun => return dry_run(req, limits),
            Self::Kubernetes(client) => client.clone(),
        };
        let (kind, name) = req.target_parts();
        match (req.action, kind) {
            (Action::RestartPod, TargetKind::Pod) => {
                delete_owned_pod(client, &req.namespace, name).await
            }
            (Action::RestartPod, TargetKind::Deployment) => {
                rollout_restart(client, &req.namespace, name).await
            }
            (Action::ScaleDeployment, _) => {
                let to = match req.params.scale_by {
                    Some(by) => ScaleTo::By(by),
                    None => ScaleTo::Exactly(req.params.replicas.unwrap_or(0)),
                };
                scale(client, &req.namespace, name, to, limits).await
            }
            (Action::RollbackDeployment, _) => {
                rollout_undo(client, &req.namespace, name, req.params.revision).await
            }
        }
    }
}

fn dry_run(req: &ActionRequest, limits: ScaleLimits) -> Outcome {
    let (kind, name) = req.target_parts();
    let would = match (req.action, kind) {
        (Action::RestartPod, TargetKind::Pod) => format!(
            "delete pod {}/{name} (when a controller owns it)",
            req.namespace
        ),
        (Action::RestartPod, TargetKind::Deployment) => format!(
            "kubectl rollout restart deployment/{name} -n {}",
            req.namespace
        ),
        (Action::ScaleDeployment, _) if req.params.scale_by.is_some() => {
            let by = req.params.scale_by.unwrap_or(0);
            if by.abs() > limits.max_step {
                return Outcome::new(
                    Status::Denied,
                    format!(
                        "scaling by {by} changes more than {} replicas in one action",
                        limits.max_step
                    ),
                    json!({"scale_by": by}),
                );
            }
            format!(
                "kubectl scale deployment/{name} -n {} --replicas=<current {by:+}> (within {}..={})",
                req.namespace, limits.min_replicas, limits.max_replicas
            )
        }
        (Action::ScaleDeployment, _) => {
            let replicas = req.params.replicas.unwrap_or(0);
            if replicas < limits.min_replicas || replicas > limits.max_replicas {
                return Outcome::new(
                    Status::Denied,
                    format!(
                        "replicas {replicas} is outside the allowed {}..={}",
                        limits.min_replicas, limits.max_replicas
                    ),
                    json!({"replicas": replicas}),
                );
            }
            format!(
                "kubectl scale deployment/{name} -n {} --replicas={replicas}",
                req.namespace
            )
        }
        (Action::RollbackDeployment, _) => match req.params.revision {
            Some(r) => format!(
                "kubectl rollout undo deployment/{name} -n {} --to-revision={r}",
                req.namespace
            ),
            None => format!(
                "kubectl rollout undo deployment/{name} -n {}",
                req.namespace
            ),
        },
    };
    Outcome::new(
        Status::DryRun,
        format!("dry run: would {would}"),
        json!({"would": would}),
    )
}

/// `kubectl rollout restart`: a strategic-merge patch of the pod template's `restartedAt`.
/// `kubectl rollout restart` names itself as the field manager of the annotation it
/// writes (tests/kubectl_referee.rs holds us to it), so server-side apply users see the
/// same owner whichever of the two restarted the deployment.
fn restart_params() -> PatchParams {
    PatchParams {
        field_manager: Some("kubectl-rollout".to_owned()),
        ..PatchParams::default()
    }
}

async fn rollout_restart(client: kube::Client, namespace: &str, name: &str) -> Outcome {
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let deployment = api!("reading the deployment", Retry::Read, api.get(name));
    if deployment
        .spec
        .as_ref()
        .and_then(|s| s.paused)
        .unwrap_or(false)
    {
        return Outcome::new(
            Status::Denied,
            format!(
                "deployment {namespace}/{name} is paused; kubectl refuses to restart a paused deployment (resume it first)"
            ),
            json!({"paused": true}),
        );
    }
    let at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}});
    api!(
        "patching the deployment",
        Retry::IdempotentWrite,
        api.patch(name, &restart_params(), &Patch::Strategic(&patch))
    );
    Outcome::new(
        Status::Succeeded,
        format!("deployment {namespace}/{name} restarted"),
        json!({"restartedAt": at}),
    )
}

/// Deletes a pod, but only one a controller owns (so it comes back).
async fn delete_owned_pod(client: kube::Client, namespace: &str, name: &str) -> Outcome {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let pod = api!("reading the pod", Retry::Read, api.get(name));
    let owner = pod
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.controller == Some(true));
    let Some(owner) = owner else {
        return Outcome::new(
            Status::Denied,
            format!(
                "pod {namespace}/{name} has no controller; deleting it would not bring it back"
            ),
            json!({"controlled": false}),
        );
    };
    api!(
        "deleting the pod",
        Retry::Never,
        api.delete(name, &DeleteParams::default())
    );
    Outcome::new(
        Status::Succeeded,
        format!(
            "pod {namespace}/{name} deleted; its {} {} recreates it",
            owner.kind, owner.name
        ),
        json!({"owner": {"kind": owner.kind, "name": owner.name}}),
    )
}

/// The replica count a scale asks for.
#[derive(Debug, Clone, Copy)]
enum ScaleTo {
    Exactly(i32),
    By(i32),
}

/// `kubectl scale` through the scale subresource, within `limits`.
async fn scale(
    client: kube::Client,
    namespace: &str,
    name: &str,
    to: ScaleTo,
    limits: ScaleLimits,
) -> Outcome {
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let current = api!("reading the scale", Retry::Read, api.get_scale(name));
    let from = current.spec.and_then(|s| s.replicas).unwrap_or(0);
    let replicas = match to {
        ScaleTo::Exactly(r) => r,
        // Relative: clamped to the bounds, so "one more" at the maximum is a no-op below.
        ScaleTo::By(by) => from.saturating_add(by).clamp(
            limits.min_replicas,
            limits.max_replicas.max(limits.min_replicas),
        ),
    };
    let refuse =
        |why: String| Outcome::new(Status::Denied, why, json!({"from": from, "to": replicas}));
    if replicas < limits.min_replicas || replicas > limits.max_replicas {
        return refuse(format!(
            "replicas {replicas} is outside the allowed {}..={}",
            limits.min_replicas, limits.max_replicas
        ));
    }
    if (replicas - from).abs() > limits.max_step {
        return refuse(format!(
            "scaling {namespace}/{name} from {from} to {replicas} changes more than {} replicas in one action",
            limits.max_step
        ));
    }
    if replicas == from {
        return Outcome::new(
            Status::Succeeded,
            format!("deployment {namespace}/{name} already has {from} replicas"),
            json!({"from": from, "to": replicas}),
        );
    }
    let patch = json!({"spec": {"replicas": replicas}});
    api!(
        "patching the scale",
        Retry::IdempotentWrite,
        api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
    );
    Outcome::new(
        Status::Succeeded,
        format!("deployment {namespace}/{name} scaled from {from} to {replicas}"),
        json!({"from": from, "to": replicas}),
    )
}

/// Annotations kubectl keeps from the deployment instead of taking them from the revision.
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];
const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(REVISION)?
        .parse()
        .ok()
}

fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    t
}

/// `kubectl rollout undo`: find the deployment's ReplicaSets (selector + controller owner),
/// pick the revision, and JSON-patch its template (without `pod-template-hash`) and
/// annotations into the deployment; nothing when it is already current.
async fn rollout_undo(
    client: kube::Client,
    namespace: &str,
    name: &str,
    to_revision: Option<i64>,
) -> Outcome {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = api!("reading the deployment", Retry::Read, deployments.get(name));
    let spec = deployment.spec.clone().unwrap_or_default();
    if spec.paused.unwrap_or(false) {
        return Outcome::new(
            Status::Denied,
            format!(
                "deployment {namespace}/{name} is paused; kubectl refuses to roll back a paused deployment (resume it first)"
            ),
            json!({"paused": true}),
        );
    }
    let selector = spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client, namespace);
    let list = api!(
        "listing replica sets",
        Retry::Read,
        replica_sets.list(&ListParams::default().labels(&selector))
    );
    let mut owned: Vec<(i64, ReplicaSet)> = list
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata.owner_references.as_ref().is_some_and(|owners| {
                owners
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            })
        })
        .filter_map(|rs| revision_of(&rs).map(|r| (r, rs)))
        .collect();
    owned.sort_by_key(|(r, _)| *r);
    let chosen = match to_revision {
        Some(want) => owned.iter().find(|(r, _)| *r == want),
        // The previous revision: the highest below the newest.
        None => owned.len().checked_sub(2).and_then(|i| owned.get(i)),
    };
    let Some((revision, rs)) = chosen else {
        let why = match to_revision {
            Some(r) => format!("unable to find revision {r} of deployment {namespace}/{name}"),
            None => {
                format!("deployment {namespace}/{name} has no previous revision to roll back to")
            }
        };
        let known: Vec<i64> = owned.iter().map(|(r, _)| *r).collect();
        return Outcome::new(Status::Failed, why, json!({"revisions": known}));
    };
    let Some(template) = rs.spec.as_ref().and_then(|s| s.template.clone()) else {
        return Outcome::new(
            Status::Failed,
            format!("revision {revision} has no pod template"),
            json!({}),
        );
    };
    let template = without_hash(&template);
    if template == without_hash(&spec.template) {
        return Outcome::new(
            Status::Succeeded,
            format!(
                "skipped rollback: deployment {namespace}/{name} already runs revision {revision}'s template"
            ),
            json!({"revision": revision, "skipped": true}),
        );
    }
    let current = deployment.metadata.annotations.clone().unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(v) = current.get(key) {
            annotations.insert(key.to_owned(), v.clone());
        }
    }
    for (k, v) in rs.metadata.annotations.clone().unwrap_or_default() {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            annotations.insert(k, v);
        }
    }
    let ops = json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    let patch: json_patch::Patch = match serde_json::from_value(ops) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::new(
                Status::Failed,
                format!("building the patch: {e}"),
                json!({}),
            );
        }
    };
    api!(
        "patching the deployment",
        Retry::IdempotentWrite,
        deployments.patch(
            name,
            &PatchParams::default(),
            &Patch::<()>::Json(patch.clone())
        )
    );
    Outcome::new(
        Status::Succeeded,
        format!("deployment {namespace}/{name} rolled back to revision {revision}"),
        json!({"revision": revision}),
    )
}

impl Executor {
    /// A client for the cluster of `kubeconfig`, or the in-cluster service account (and the
    /// usual kubeconfig lookup) when `None`.
    pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Self, crate::Error> {
        let config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    crate::Error::Connect(format!(
                        "cannot read kubeconfig `{}`: {e}",
                        path.display()
                    ))
                })?;
                kube::Config::from_custom_kubeconfig(
                    file,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| {
                    crate::Error::Connect(format!("kubeconfig `{}`: {e}", path.display()))
                })?
            }
            None => kube::Config::infer().await.map_err(|e| {
                crate::Error::Connect(format!(
                    "no kubeconfig and no in-cluster service account: {e}"
                ))
            })?,
        };
        Self::with_timeouts(config)
    }

    /// A client for `config` with bounded calls: [`API_CONNECT_TIMEOUT`] to connect and
    /// [`API_READ_TIMEOUT`] for an answer (kube's defaults wait almost five minutes, which
    /// would hold an action, its target and the engine's decision that long).
    pub fn with_timeouts(mut config: kube::Config) -> Result<Self, crate::Error> {
        config.connect_timeout = Some(API_CONNECT_TIMEOUT);
        config.read_timeout = Some(API_READ_TIMEOUT);
        config.write_timeout = Some(API_READ_TIMEOUT);
        kube::Client::try_from(config)
            .map(Self::Kubernetes)
            .map_err(|e| crate::Error::Connect(format!("kubernetes client: {e}")))
    }
}
