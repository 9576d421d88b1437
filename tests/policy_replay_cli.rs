//! `aegis policy replay`: a stricter candidate set over recorded history lists exactly the
//! actions it would have blocked (SQLite and PostgreSQL).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use aegis_policy::Request;
use aegis_runtime::PolicyService;
use aegis_store::{AuditWriterOptions, PolicyAuditWriter, Store, StoreOptions};
use serde_json::json;

/// Four decisions of the live (default) policies, recorded as the API records them.
async fn record_history(url: &str) -> Vec<String> {
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    let writer = PolicyAuditWriter::spawn(store.clone(), AuditWriterOptions::default());
    let live = PolicyService::new(store.clone()).with_audit(writer.sender());
    live.install_defaults_if_new().await.unwrap();
    live.reload_database().await.unwrap();
    let ask = |action: &str, resource: &str, severity: &str, time: &str| -> Request {
        serde_json::from_value(
            json!({"action": action, "resource": resource, "type": "self_healing",
            "context": {"user_id": "aegis-engine", "roles": ["service"],
                        "metadata": {"severity": severity}, "time": time}}),
        )
        .unwrap()
    };
    let requests = [
        // Saturday: allowed by Allow Auto-Scale.
        ask(
            "scale_up",
            "cluster:production/deployment/api",
            "high",
            "2026-11-28T12:00:00Z",
        ),
        // Tuesday 10:00 UTC: allowed by Allow Auto-Scale.
        ask(
            "scale_up",
            "cluster:production/deployment/web",
            "critical",
            "2026-11-24T10:00:00Z",
        ),
        // Tuesday 10:30 UTC: denied by the peak-hours rule.
        ask(
            "restart_pod",
            "cluster:production/deployment/db",
            "high",
            "2026-11-24T10:30:00Z",
        ),
        // Saturday: a rollback, allowed by Allow Service Remediation.
        ask(
            "rollback_deployment",
            "cluster:production/deployment/api",
            "high",
            "2026-11-28T12:05:00Z",
        ),
    ];
    let mut decisions = Vec::new();
    for req in &requests {
        let at = req.context.time.unwrap();
        let d = live.engine().evaluate_at(req, at);
        decisions.push(format!("{} {}", req.action, d.decision()));
        let engine = aegis_runtime::Asker {
            id: "aegis-engine",
            role: Some("service".to_owned()),
        };
        live.record_queued(req, &d, None, Some(engine)).await;
    }
    assert_eq!(writer.shutdown(Duration::from_secs(10)).await, 4);
    drop(live);
    store.close().await;
    decisions
}

fn candidate(dir: &std::path::Path) {
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/policies/default-policies.yaml"),
        dir.join("default-policies.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("stricter.yaml"),
        r#"policies:
  - name: No Weekday Scaling
    type: self_healing
    effect: deny
    priority: 500
    actions: [scale_up]
    conditions:
      time: {days: [mon, tue, wed, thu, fri], start: "00:00", end: "23:59", timezone: UTC}
  - name: No Automatic Rollbacks
    type: self_healing
    effect: deny
    priority: 500
    actions: [rollback_deployment]
"#,
    )
    .unwrap();
}

fn replay_lists_exactly_what_the_stricter_set_blocks(url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = rt.block_on(record_history(url));
    assert_eq!(
        live,
        [
            "scale_up ALLOW",
            "scale_up ALLOW",
            "restart_pod DENY",
            "rollback_deployment ALLOW"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("candidate");
    std::fs::create_dir(&policies).unwrap();
    candidate(&policies);
    let (code, out, err) = common::run(
        dir.path(),
        url,
        &[
            "policy",
            "replay",
            "--policies",
            policies.to_str().unwrap(),
            "--since",
            "30d",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let blocked: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("would block"))
        .collect();
    assert_eq!(blocked.len(), 2, "{out}");
    assert!(
        blocked[0].contains("scale_up cluster:production/deployment/web")
            && blocked[0].contains("live: ALLOW by Allow Auto-Scale")
            && blocked[0].contains("No Weekday Scaling"),
        "{out}"
    );
    assert!(
        blocked[1].contains("rollback_deployment cluster:production/deployment/api")
            && blocked[1].contains("No Automatic Rollbacks"),
        "{out}"
    );
    assert!(!out.contains("would allow"), "{out}");
    assert!(
        out.contains("2 would be blocked, 0 would be allowed that were denied, 2 unchanged"),
        "{out}"
    );
}

#[test]
fn replay_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aegis.db").display());
    replay_lists_exactly_what_the_stricter_set_blocks(&url);
    let (code, out, err) = common::run(
        dir.path(),
        &url,
        &[
            "policy",
            "replay",
            "--policies",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/policies/default-policies.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0 would be blocked, 0 would be allowed that were denied, 4 unchanged"),
        "{out}"
    );
    let (code, _, err) = common::run(
        dir.path(),
        &url,
        &["policy", "replay", "--policies", "x", "--since", "soon"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--since soon"), "{err}");
}

#[test]
fn replay_on_postgres() {
    let db = common::FreshDb::new("replay");
    replay_lists_exactly_what_the_stricter_set_blocks(&db.url);
}
