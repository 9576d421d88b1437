//! The three actions against the fake API server: every call's method, path, content type
//! and body, as kubectl would send them.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use aegis_executor::testing as fake_kube;

use aegis_executor::{ActionRequest, Executor, ScaleLimits, Status};
use serde_json::json;

fn request(action: &str, target: &str, params: serde_json::Value) -> ActionRequest {
    ActionRequest::parse(
        json!({"action": action, "namespace": "production", "target": target, "params": params,
               "timestamp": chrono::Utc::now(), "nonce": "n"})
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn calls(shared: &fake_kube::Shared) -> Vec<(String, String, Option<String>)> {
    shared
        .lock()
        .unwrap()
        .calls
        .iter()
        .map(|c| (c.method.clone(), c.path.clone(), c.content_type.clone()))
        .collect()
}

#[tokio::test]
async fn restart_a_deployment_like_kubectl_rollout_restart() {
    let (url, shared) = fake_kube::start(fake_kube::cluster_with_api()).await;
    let ex = Executor::Kubernetes(fake_kube::client(&url));
    let out = ex
        .execute(
            &request("restart_pod", "api", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    let recorded = shared.lock().unwrap().calls.clone();
    assert_eq!(
        calls(&shared),
        [
            (
                "GET".into(),
                "/apis/apps/v1/namespaces/production/deployments/api".into(),
                None
            ),
            (
                "PATCH".into(),
                "/apis/apps/v1/namespaces/production/deployments/api?&fieldManager=kubectl-rollout"
                    .into(),
                Some("application/strategic-merge-patch+json".into())
            ),
        ]
    );
    let body = recorded[1].body.clone().unwrap();
    let at =
        body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "only the annotation is patched: {body}"
    );
    // The template changed: the cluster made revision 2.
    let c = shared.lock().unwrap();
    assert_eq!(
        c.deployments["api"]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
}

#[tokio::test]
async fn a_paused_deployment_is_not_restarted() {
    let mut cluster = fake_kube::cluster_with_api();
    cluster.deployments.get_mut("api").unwrap()["spec"]["paused"] = json!(true);
    let (url, shared) = fake_kube::start(cluster).await;
    let out = Executor::Kubernetes(fake_kube::client(&url))
        .execute(
            &request("restart_pod", "deployment/api", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Denied);
    assert!(out.message.contains("paused"), "{}", out.message);
    assert!(
        calls(&shared).iter().all(|(m, _, _)| m == "GET"),
        "nothing was written"
    );
}

#[tokio::test]
async fn restart_a_pod_only_when_a_controller_owns_it() {
    let (url, shared) = fake_kube::start(fake_kube::cluster_with_api()).await;
    let ex = Executor::Kubernetes(fake_kube::client(&url));
    let out = ex
        .execute(
            &request("restart_pod", "pod/api-1", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    let out = ex
        .execute(
            &request("restart_pod", "pod/lonely", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Denied, "{out:?}");
    let out = ex
        .execute(
            &request("restart_pod", "pod/ghost", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Failed);
    assert!(out.message.contains("404"), "{}", out.message);
    let recorded = calls(&shared);
    assert_eq!(
        recorded[0],
        (
            "GET".into(),
            "/api/v1/namespaces/production/pods/api-1".into(),
            None
        )
    );
    assert_eq!(recorded[1].0, "DELETE");
    assert!(
        recorded[1]
            .1
            .starts_with("/api/v1/namespaces/production/pods/api-1"),
        "{recorded:?}"
    );
    assert_eq!(
        recorded[2],
        (
            "GET".into(),
            "/api/v1/namespaces/production/pods/lonely".into(),
            None
        )
    );
    assert_eq!(
        recorded.len(),
        4,
        "no DELETE for the unowned or missing pod: {recorded:?}"
    );
    let c = shared.lock().unwrap();
    assert!(!c.pods.contains_key("api-1") && c.pods.contains_key("lonely"));
}

#[tokio::test]
async fn scale_through_the_scale_subresource_within_bounds() {
    let (url, shared) = fake_kube::start(fake_kube::cluster_with_api()).await;
    let ex = Executor::Kubernetes(fake_kube::client(&url));
    let limits = ScaleLimits {
        min_replicas: 1,
        max_replicas: 10,
        max_step: 3,
    };
    let out = ex
        .execute(
            &request("scale_deployment", "api", json!({"replicas": 5})),
            limits,
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    assert_eq!(out.details, json!({"from": 3, "to": 5}));
    let recorded = shared.lock().unwrap().calls.clone();
    assert_eq!(
        (recorded[0].method.as_str(), recorded[0].path.as_str()),
        (
            "GET",
            "/apis/apps/v1/namespaces/production/deployments/api/scale"
        )
    );
    assert_eq!(
        (recorded[1].method.as_str(), recorded[1].path.as_str()),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/production/deployments/api/scale?"
        )
    );
    assert_eq!(
        recorded[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(recorded[1].body, Some(json!({"spec": {"replicas": 5}})));

    for (replicas, why) in [(11, "outside"), (9, "more than 3"), (0, "outside")] {
        let out = ex
            .execute(
                &request("scale_deployment", "api", json!({"replicas": replicas})),
                limits,
            )
            .await;
        assert_eq!(out.status, Status::Denied, "{replicas}");
        assert!(out.message.contains(why), "{}", out.message);
    }
    assert_eq!(
        shared
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == "PATCH")
            .count(),
        1
    );
    assert_eq!(
        shared.lock().unwrap().deployments["api"]["spec"]["replicas"],
        5
    );
}

#[tokio::test]
async fn rollback_like_kubectl_rollout_undo() {
    let (url, shared) = fake_kube::start(fake_kube::cluster_with_api()).await;
    let client = fake_kube::client(&url);
    // Release 2.0 the way a deploy pipeline does: patch the image; the fake controller makes
    // revision 2. The applied-configuration annotation must survive the rollback.
    shared.lock().unwrap().deployments.get_mut("api").unwrap()["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("{}");
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), "production");
    deployments
        .patch(
            "api",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "api", "image": "registry.example.com/api:2.0"}]}}}})),
        )
        .await
        .unwrap();
    shared.lock().unwrap().calls.clear();

    let ex = Executor::Kubernetes(client);
    let out = ex
        .execute(
            &request("rollback_deployment", "api", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    assert_eq!(out.details["revision"], 1);
    let recorded = shared.lock().unwrap().calls.clone();
    assert_eq!(
        (recorded[0].method.as_str(), recorded[0].path.as_str()),
        ("GET", "/apis/apps/v1/namespaces/production/deployments/api")
    );
    assert_eq!(
        (recorded[1].method.as_str(), recorded[1].path.as_str()),
        (
            "GET",
            "/apis/apps/v1/namespaces/production/replicasets?&labelSelector=app%3Dapi"
        )
    );
    assert_eq!(
        (recorded[2].method.as_str(), recorded[2].path.as_str()),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/production/deployments/api?"
        )
    );
    assert_eq!(
        recorded[2].content_type.as_deref(),
        Some("application/json-patch+json")
    );
    let ops = recorded[2].body.clone().unwrap();
    assert_eq!(ops[0]["op"], "replace");
    assert_eq!(ops[0]["path"], "/spec/template");
    assert_eq!(
        ops[0]["value"]["spec"]["containers"][0]["image"],
        "registry.example.com/api:1.0"
    );
    assert!(
        ops[0]["value"]["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none(),
        "{ops}"
    );
    assert_eq!(ops[1]["path"], "/metadata/annotations");
    assert_eq!(
        ops[1]["value"]["kubectl.kubernetes.io/last-applied-configuration"], "{}",
        "kept from the deployment"
    );

    // The template now equals revision 1's, which the fake controller renumbered to 3.
    shared.lock().unwrap().calls.clear();
    let out = ex
        .execute(
            &request("rollback_deployment", "api", json!({"revision": 3})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.details["skipped"], true, "{out:?}");
    assert!(
        shared
            .lock()
            .unwrap()
            .calls
            .iter()
            .all(|c| c.method == "GET")
    );
    let out = ex
        .execute(
            &request("rollback_deployment", "api", json!({"revision": 42})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Failed);
    assert!(out.message.contains("revision 42"), "{}", out.message);
}

#[tokio::test]
async fn api_errors_keep_the_kubernetes_status() {
    // 409 and 422 are answers about the request: never retried.
    for code in [409u16, 422] {
        let mut cluster = fake_kube::cluster_with_api();
        cluster.fail_writes.insert("api".into(), code);
        let (url, _) = fake_kube::start(cluster).await;
        let out = Executor::Kubernetes(fake_kube::client(&url))
            .execute(
                &request("restart_pod", "api", json!({})),
                ScaleLimits::default(),
            )
            .await;
        assert_eq!(out.status, Status::Failed);
        assert_eq!(out.details["code"], code, "{out:?}");
        assert!(
            out.message.contains(&format!("injected {code}")),
            "{}",
            out.message
        );
    }
    let (url, _) = fake_kube::start(fake_kube::cluster_with_api()).await;
    let out = Executor::Kubernetes(fake_kube::client(&url))
        .execute(
            &request("scale_deployment", "missing", json!({"replicas": 2})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(
        (out.status, out.details["code"].as_u64()),
        (Status::Failed, Some(404))
    );
}

fn count(shared: &fake_kube::Shared, method: &str) -> usize {
    shared
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.method == method)
        .count()
}

#[tokio::test]
async fn a_transient_500_is_retried_when_the_call_is_idempotent() {
    // A read, then an idempotent write (the restart's patch body is fixed before the first
    // attempt), each failing once.
    let mut cluster = fake_kube::cluster_with_api();
    cluster.fail_next.push_back(503);
    cluster.fail_writes.insert("api".into(), 500);
    let (url, shared) = fake_kube::start(cluster).await;
    let out = Executor::Kubernetes(fake_kube::client(&url))
        .execute(
            &request("restart_pod", "api", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    assert_eq!((count(&shared, "GET"), count(&shared, "PATCH")), (2, 2));
    let bodies: Vec<_> = shared
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.method == "PATCH")
        .map(|c| c.body.clone())
        .collect();
    assert_eq!(bodies[0], bodies[1], "the retry sends the same patch");
}

#[tokio::test]
async fn an_api_that_keeps_failing_is_given_up_after_three_attempts() {
    let mut cluster = fake_kube::cluster_with_api();
    cluster.fail_method.insert("PATCH".into(), 500);
    let (url, shared) = fake_kube::start(cluster).await;
    let started = std::time::Instant::now();
    let out = Executor::Kubernetes(fake_kube::client(&url))
        .execute(
            &request("scale_deployment", "api", json!({"replicas": 4})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Failed, "{out:?}");
    assert_eq!(
        (
            out.details["code"].as_u64(),
            out.details["attempts"].as_u64()
        ),
        (Some(500), Some(3))
    );
    assert_eq!(count(&shared, "PATCH"), 3);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn a_pod_delete_is_never_retried() {
    let mut cluster = fake_kube::cluster_with_api();
    cluster.fail_method.insert("DELETE".into(), 500);
    let (url, shared) = fake_kube::start(cluster).await;
    let out = Executor::Kubernetes(fake_kube::client(&url))
        .execute(
            &request("restart_pod", "pod/api-1", json!({})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Failed, "{out:?}");
    assert_eq!(out.details["attempts"].as_u64(), Some(1));
    assert_eq!(count(&shared, "DELETE"), 1);
}

#[tokio::test]
async fn a_hung_api_times_out_and_the_write_is_not_sent_again() {
    let mut cluster = fake_kube::cluster_with_api();
    cluster.hang_writes = true;
    let (url, shared) = fake_kube::start(cluster).await;
    let started = std::time::Instant::now();
    let out = fake_kube::executor_with_timeout(&url, std::time::Duration::from_millis(500))
        .execute(
            &request("scale_deployment", "api", json!({"replicas": 4})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::Failed, "{out:?}");
    assert_eq!(out.details["attempts"].as_u64(), Some(1), "{out:?}");
    assert_eq!(count(&shared, "PATCH"), 1);
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(500) && took < std::time::Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn dry_run_sends_nothing() {
    let out = Executor::DryRun
        .execute(
            &request("scale_deployment", "api", json!({"replicas": 4})),
            ScaleLimits::default(),
        )
        .await;
    assert_eq!(out.status, Status::DryRun);
    assert!(
        out.message
            .contains("kubectl scale deployment/api -n production --replicas=4"),
        "{}",
        out.message
    );
}
