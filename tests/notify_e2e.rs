//! Notifications out, through the generic webhook, with its receiver down for the first
//! 30 seconds: an alert asks for a rollback, a policy holds it for approval, the person on
//! call approves it with `aegis approvals approve ID`, the executor rolls back (the fake API
//! server). When the receiver comes back every notification arrives — approval requested
//! (with the dry run, the policy, the approval id and how to approve), its reminder,
//! approval decided, action carried out — each once, each with a valid signature.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    ADMIN_PASSWORD, KubeServe, Receiver, aegis, free_port, http, http_raw, login, terminate,
    wait_healthy,
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const INGEST_TOKEN: &str = "alertmanager-ingest-token-0123456789abcdef";
const SECRET: &str = "webhook-secret-webhook-secret-0123456789";

fn valid(headers: &BTreeMap<String, String>, body: &[u8]) -> bool {
    let (Some(sig), Some(ts)) = (
        headers.get("x-aegis-signature"),
        headers.get("x-aegis-timestamp"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    *sig == expected
}

#[test]
fn every_notification_arrives_once_after_the_receiver_comes_back() {
    let kube = KubeServe::new(aegis_executor::testing::cluster_as_served());
    let dir = &kube.dir;
    // The receiver's port, reserved but not listening yet: it is down.
    let hook_port = free_port();
    let port = free_port();
    let mut server = kube
        .command(port)
        .env("AEGIS_INGEST_TOKEN", INGEST_TOKEN)
        .env(
            "AEGIS_NOTIFY_WEBHOOK_URL",
            format!("http://127.0.0.1:{hook_port}/aegis"),
        )
        .env("AEGIS_NOTIFY_WEBHOOK_SECRET", SECRET)
        .env("AEGIS_NOTIFY_RESEND_SECS", "10")
        .spawn()
        .unwrap();
    assert_eq!(wait_healthy(&mut server, port).0, 200);
    let admin = login(port, "ops@example.com", ADMIN_PASSWORD);
    // Rollbacks wait for a person.
    let policy = json!({"name": "Rollbacks Need Approval", "type": "self_healing",
        "effect": "allow", "priority": 30, "actions": ["rollback_deployment"],
        "resources": ["cluster:*/deployment/*"], "conditions": {"roles": ["service"]},
        "require_approval": true});
    let (status, _, body) = http(
        port,
        "POST",
        "/api/v1/policies",
        Some(&admin),
        Some(&policy.to_string()),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();

    // An alert asking for a rollback.
    let payload = json!({"version": "4", "receiver": "aegis", "status": "firing", "alerts": [{
        "status": "firing", "fingerprint": "crash-1",
        "labels": {"alertname": "PodCrashLooping", "namespace": "production", "deployment": "api",
                   "severity": "critical", "aegis_action": "rollback_deployment"},
        "annotations": {"summary": "api restarts every minute since the 3.0 release"},
        "startsAt": "2026-12-05T03:00:00Z"}]});
    let auth = format!("Bearer {INGEST_TOKEN}");
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/v1/alerts",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        payload.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["alerts"][0]["event"]["action_status"], "awaiting_approval",
        "{answer}"
    );

    // The person on call: list and approve with the CLI, the token from the environment.
    let cli = |args: &[&str]| {
        let out = aegis(dir.path())
            .args(["approvals"])
            .args(args)
            .env("AEGIS_URL", format!("http://127.0.0.1:{port}"))
            .env("AEGIS_TOKEN", &admin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cli(&["list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let approval = listed["approvals"][0]["id"].as_str().unwrap().to_owned();
    assert!(cli(&["list"]).contains(&approval));
    // Wait past one reminder (every 10 s) before deciding.
    std::thread::sleep(Duration::from_secs(12));
    let out = cli(&["approve", &approval, "--reason", "the 3.0 release is bad"]);
    assert!(out.contains("approved"), "{out}");
    let rollbacks = || kube.patches().len();
    assert_eq!(rollbacks(), 1, "the approved rollback ran");

    // The receiver is down for 30 s in all; then it comes back on the same port.
    let down = Duration::from_secs(30);
    std::thread::sleep(down.saturating_sub(started.elapsed()));
    let receiver = Receiver::start(hook_port);
    let wanted = ["approval_requested", "approval_decided", "action_succeeded"];
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events: Vec<(BTreeMap<String, String>, Value, Vec<u8>)> = receiver
            .received()
            .into_iter()
            .map(|r| (r.headers, serde_json::from_slice(&r.body).unwrap(), r.body))
            .collect();
        if wanted
            .iter()
            .all(|w| events.iter().any(|(_, e, _)| e["event"] == *w))
        {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "not every notification arrived: {:?}",
            events
                .iter()
                .map(|(_, e, _)| e["event"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // A moment more: nothing arrives twice.
    std::thread::sleep(Duration::from_secs(3));
    let all = receiver.received();
    let mut ids: Vec<String> = all
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a notification arrived twice: {ids:?}");
    let mut deliveries: Vec<&String> = all.iter().map(|r| &r.headers["x-aegis-delivery"]).collect();
    deliveries.sort();
    deliveries.dedup();
    assert_eq!(deliveries.len(), n);
    for (headers, event, body) in &events {
        assert!(valid(headers, body), "bad signature on {event}");
        assert_eq!(headers["content-type"], "application/json");
    }
    let requested = events
        .iter()
        .map(|(_, e, _)| e)
        .find(|e| e["event"] == "approval_requested" && e["details"]["reminder"].is_null())
        .unwrap();
    assert_eq!(requested["action_id"], approval.as_str(), "{requested}");
    assert_eq!(
        requested["policy"], "Rollbacks Need Approval",
        "{requested}"
    );
    assert_eq!(requested["namespace"], "production");
    assert_eq!(requested["workload"], "api");
    assert!(
        requested["details"]["audit"]["dry_run"]["message"]
            .as_str()
            .unwrap()
            .contains("kubectl rollout undo"),
        "{requested}"
    );
    assert!(
        requested["details"]["how_to_approve"]
            .as_str()
            .unwrap()
            .contains(&format!("aegis approvals approve {approval}")),
        "{requested}"
    );
    assert!(
        events
            .iter()
            .any(|(_, e, _)| e["event"] == "approval_requested" && e["details"]["reminder"] == true),
        "a pending approval is announced again"
    );
    // And the order is the order things happened in.
    let order: Vec<&str> = events
        .iter()
        .filter(|(_, e, _)| e["details"]["reminder"].is_null())
        .map(|(_, e, _)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["approval_requested", "approval_decided", "action_succeeded"],
        "{order:?}"
    );

    let (_, out) = terminate(server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
