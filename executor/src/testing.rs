//! A small Kubernetes API server for tests (feature `testing`): the real REST paths of deployments, their scale
//! subresource, replica sets and pods; state that changes like a cluster's (a template
//! change makes a new ReplicaSet revision); Kubernetes `Status` errors; and a record of every
//! call (method, path and query, content type, body).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    missing_docs,
    reason = "test fixture; fields are described on the types"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

#[derive(Default)]
pub struct Cluster {
    pub deployments: BTreeMap<String, Value>,
    pub replica_sets: BTreeMap<String, Value>,
    pub pods: BTreeMap<String, Value>,
    pub calls: Vec<Call>,
    /// Deployment names whose next write answers with this status code.
    pub fail_writes: BTreeMap<String, u16>,
    /// Writes never answer (a cluster that hangs mid-action).
    pub hang_writes: bool,
    /// Writes answer after this long (a slow API server; room for a crash mid-action).
    pub write_delay: Option<std::time::Duration>,
    /// The next calls, whatever they are, answer with these codes (one each, in order).
    pub fail_next: std::collections::VecDeque<u16>,
    /// Every call with this method answers with this code, for as long as it is set.
    pub fail_method: BTreeMap<String, u16>,
}

pub type Shared = Arc<Mutex<Cluster>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(404, "NotFound", &format!("{kind} \"{name}\" not found"))
}

fn record(c: &mut Cluster, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
    c.calls.push(Call {
        method: method.to_string(),
        path: uri.to_string(),
        content_type: headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: if body.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(body).unwrap())
        },
    });
}

/// Records a call; a PATCH then never answers when the cluster is set to hang.
async fn record_write(s: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
    let (hang, delay) = {
        let mut c = s.lock().unwrap();
        record(&mut c, method, uri, headers, body);
        (
            c.hang_writes && method == Method::PATCH,
            c.write_delay.filter(|_| method != Method::GET),
        )
    };
    if hang {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}

/// RFC 7386 merge (close enough to strategic merge for the maps these tests patch).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn template_hash(template: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut h);
    format!("{:x}", h.finish() & 0xffff_ffff)
}

/// After a template change: a ReplicaSet for the new template with the next revision, as
/// the deployment controller would make it (or the existing one for that template).
fn roll(c: &mut Cluster, ns: &str, name: &str) {
    let d = c.deployments.get(name).unwrap().clone();
    let template = d["spec"]["template"].clone();
    let max = c
        .replica_sets
        .values()
        .filter_map(|rs| {
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()?
                .parse::<i64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let existing = c
        .replica_sets
        .iter()
        .find(|(_, rs)| {
            let mut t = rs["spec"]["template"].clone();
            t["metadata"]["labels"]
                .as_object_mut()
                .map(|l| l.remove("pod-template-hash"));
            t == template
        })
        .map(|(k, _)| k.clone());
    let rs_name = match existing {
        Some(k) => k,
        None => {
            let hash = template_hash(&template);
            let mut t = template.clone();
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let rs_name = format!("{name}-{hash}");
            c.replica_sets.insert(rs_name.clone(), json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "uid": format!("uid-{rs_name}"),
                             "labels": t["metadata"]["labels"].clone(),
                             "annotations": {"deployment.kubernetes.io/revision": "0"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                  "uid": d["metadata"]["uid"].clone(), "controller": true}]},
                "spec": {"replicas": d["spec"]["replicas"].clone(), "selector": d["spec"]["selector"].clone(), "template": t}
            }));
            rs_name
        }
    };
    let revision = (max + 1).to_string();
    c.replica_sets.get_mut(&rs_name).unwrap()["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
        json!(revision);
    c.deployments.get_mut(name).unwrap()["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
        json!(revision);
}

async fn deployment(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    record_write(&s, &method, &uri, &headers, &body).await;
    let mut c = s.lock().unwrap();
    if !c.deployments.contains_key(&name) {
        return not_found("deployments.apps", &name);
    }
    if method == Method::PATCH {
        if let Some(code) = c.fail_writes.remove(&name) {
            let reason = match code {
                409 => "Conflict",
                422 => "Invalid",
                _ => "InternalError",
            };
            return status(code, reason, &format!("injected {code} for {name}"));
        }
        let before = c.deployments[&name]["spec"]["template"].clone();
        let patch: Value = serde_json::from_slice(&body).unwrap();
        let ct = headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let d = c.deployments.get_mut(&name).unwrap();
        match ct.as_str() {
            "application/strategic-merge-patch+json" | "application/merge-patch+json" => {
                merge(d, &patch)
            }
            "application/json-patch+json" => {
                let p: json_patch::Patch = serde_json::from_value(patch).unwrap();
                json_patch::patch(d, &p).unwrap();
            }
            other => return status(415, "UnsupportedMediaType", other),
        }
        // The API server decodes into Go types, where a null `creationTimestamp` (which
        // kubectl's typed round trip writes into every template) is no timestamp at all.
        if let Some(meta) = d["spec"]["template"]["metadata"].as_object_mut()
            && meta.get("creationTimestamp").is_some_and(Value::is_null)
        {
            meta.remove("creationTimestamp");
        }
        if c.deployments[&name]["spec"]["template"] != before {
            roll(&mut c, &ns, &name);
        }
    }
    axum::Json(c.deployments[&name].clone()).into_response()
}

async fn scale(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    record_write(&s, &method, &uri, &headers, &body).await;
    let mut c = s.lock().unwrap();
    let Some(d) = c.deployments.get_mut(&name) else {
        return not_found("deployments.apps", &name);
    };
    if method == Method::PATCH {
        let patch: Value = serde_json::from_slice(&body).unwrap();
        d["spec"]["replicas"] = patch["spec"]["replicas"].clone();
    }
    let replicas = d["spec"]["replicas"].clone();
    axum::Json(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": ns}, "spec": {"replicas": replicas}, "status": {"replicas": replicas}}))
    .into_response()
}

async fn replica_sets(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut c = s.lock().unwrap();
    record(&mut c, &method, &uri, &headers, &Bytes::new());
    let wanted: Vec<(String, String)> = q
        .get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let items: Vec<Value> = c
        .replica_sets
        .values()
        .filter(|rs| {
            wanted
                .iter()
                .all(|(k, v)| rs["metadata"]["labels"][k].as_str() == Some(v))
        })
        .cloned()
        .collect();
    axum::Json(
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": items}),
    )
    .into_response()
}

async fn pod(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((_ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut c = s.lock().unwrap();
    record(&mut c, &method, &uri, &headers, &body);
    let Some(p) = c.pods.get(&name).cloned() else {
        return not_found("pods", &name);
    };
    if method == Method::DELETE {
        c.pods.remove(&name);
    }
    axum::Json(p).into_response()
}

/// Answers with an injected status (recorded like any call) when the cluster says so.
async fn inject(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let code = {
        let mut c = s.lock().unwrap();
        let code = c
            .fail_next
            .pop_front()
            .or_else(|| c.fail_method.get(req.method().as_str()).copied());
        if code.is_some() {
            c.calls.push(Call {
                method: req.method().to_string(),
                path: req.uri().to_string(),
                content_type: None,
                body: None,
            });
        }
        code
    };
    match code {
        Some(code) => status(code, "InternalError", &format!("injected {code}")),
        None => next.run(req).await,
    }
}

/// API discovery, enough for kubectl to map `deployment` and `pod` to their paths (the
/// legacy documents: kubectl asks for aggregated discovery and accepts these).
async fn discovery(uri: Uri) -> Response {
    let body = match uri.path() {
        "/version" => json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake",
                              "platform": "linux/amd64"}),
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "apps",
            "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}),
        "/api/v1" => json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["delete", "get", "list"], "shortNames": ["po"]}]}),
        _ => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment",
             "verbs": ["get", "list", "patch", "update"], "shortNames": ["deploy"]},
            {"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling",
             "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
            {"name": "replicasets", "singularName": "replicaset", "namespaced": true, "kind": "ReplicaSet",
             "verbs": ["get", "list"], "shortNames": ["rs"]}]})
        }
    };
    axum::Json(body).into_response()
}

/// Starts the server; returns its URL and the shared state.
pub async fn start(cluster: Cluster) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(cluster));
    let app = Router::new()
        .route("/version", get(discovery))
        .route("/api", get(discovery))
        .route("/apis", get(discovery))
        .route("/api/v1", get(discovery))
        .route("/apis/apps/v1", get(discovery))
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            get(deployment).patch(deployment),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            get(scale).patch(scale),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/replicasets",
            get(replica_sets),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(pod).delete(pod))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), inject))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

/// A kube client for the fake server.
pub fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// An executor for the fake server whose calls give up after `read_timeout`.
pub fn executor_with_timeout(url: &str, read_timeout: std::time::Duration) -> crate::Executor {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.read_timeout = Some(read_timeout);
    crate::Executor::Kubernetes(kube::Client::try_from(config).unwrap())
}

/// Adds deployment `name` in `production` (revision 1, 3 replicas, its ReplicaSet).
pub fn add_deployment(c: &mut Cluster, name: &str) {
    let template = json!({"metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": name, "image": format!("registry.example.com/{name}:1.0")}]}});
    c.deployments.insert(name.into(), json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "production", "uid": format!("uid-{name}"), "annotations": {}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}}, "template": template}
    }));
    roll(c, "production", name);
}

/// A cluster with deployment `api` in `production` (revision 1, 3 replicas) and its pod.
pub fn cluster_with_api() -> Cluster {
    let mut c = Cluster::default();
    let template = json!({"metadata": {"labels": {"app": "api"}},
        "spec": {"containers": [{"name": "api", "image": "registry.example.com/api:1.0"}]}});
    c.deployments.insert("api".into(), json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "production", "uid": "uid-api", "annotations": {}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}}, "template": template}
    }));
    roll(&mut c, "production", "api");
    c.pods.insert("api-1".into(), json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-1", "namespace": "production",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-x", "uid": "u", "controller": true}]},
        "spec": {"containers": [{"name": "api", "image": "registry.example.com/api:1.0"}]}}));
    c.pods.insert(
        "lonely".into(),
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lonely", "namespace": "production"},
        "spec": {"containers": [{"name": "x", "image": "busybox"}]}}),
    );
    c
}

/// Deployment `api` in `production` as a real API server serves it: templates with the
/// fields the server defaults (`resources: {}`, termination message, pull policy, DNS and
/// restart policy…), three revisions (images 1.0, 2.0 and 3.0, the last current), a
/// replica set for each, and a pod of the current one.
pub fn cluster_as_served() -> Cluster {
    let mut c = Cluster::default();
    let template = |version: &str| {
        json!({"metadata": {"labels": {"app": "api", "tier": "web"}},
            "spec": {"containers": [{"name": "api", "image": format!("registry.example.com/api:{version}"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}], "resources": {},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"}],
             "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
             "securityContext": {}, "schedulerName": "default-scheduler"}})
    };
    c.deployments.insert("api".into(), json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "production", "uid": "uid-api", "generation": 3,
                     "labels": {"app": "api"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                 "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600, "template": template("1.0")}
    }));
    roll(&mut c, "production", "api");
    for version in ["2.0", "3.0"] {
        c.deployments.get_mut("api").unwrap()["spec"]["template"] = template(version);
        roll(&mut c, "production", "api");
    }
    let current = c.deployments["api"]["spec"]["template"]["spec"].clone();
    c.pods.insert("api-1".into(), json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-1", "namespace": "production", "labels": {"app": "api"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-x", "uid": "u", "controller": true}]},
        "spec": current}));
    c
}

/// A kubeconfig file content that points at the fake server `url`.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}
