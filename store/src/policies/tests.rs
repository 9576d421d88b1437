//! Policy storage tests, each on SQLite and PostgreSQL.

use chrono::Duration;
use serde_json::json;

use super::*;
use crate::testing::TestDb;
use crate::{AuditLog, Error, NewPolicyAudit};

fn write(name: &str, priority: i32) -> PolicyWrite {
    PolicyWrite {
        name: name.into(),
        policy_type: "self_healing".into(),
        effect: "allow".into(),
        priority,
        enabled: true,
        body: json!({"name": name, "type": "self_healing", "effect": "allow",
                     "priority": priority, "actions": ["scale_up"]}),
    }
}

#[tokio::test]
async fn every_change_is_a_version_and_old_versions_restore() {
    for db in TestDb::both().await {
        let s = &db.store;
        assert_eq!(s.policies_ever_created().await.unwrap(), 0);
        let p = s
            .create_policy(&write("scale", 10), "api", Some("admin-1"))
            .await
            .unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(
            s.get_policy(&p.id).await.unwrap().unwrap(),
            p,
            "{}",
            db.name()
        );

        let dup = s
            .create_policy(&write("scale", 1), "api", None)
            .await
            .unwrap_err();
        assert!(
            matches!(dup, Error::Conflict(ref m) if m.contains("`scale`")),
            "{dup}"
        );

        let p2 = s
            .update_policy(&p.id, &write("scale", 20), Some(1), Some("admin-2"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p2.version, p2.priority), (2, 20));
        let stale = s
            .update_policy(&p.id, &write("scale", 30), Some(1), None)
            .await
            .unwrap_err();
        assert!(
            matches!(stale, Error::Conflict(ref m) if m.contains("version 2")),
            "{stale}"
        );

        assert_eq!(
            s.delete_policy(&p.id, Some("admin-1")).await.unwrap(),
            Some(3)
        );
        assert!(s.get_policy(&p.id).await.unwrap().is_none());
        assert!(s.list_policies().await.unwrap().is_empty());
        assert_eq!(s.delete_policy(&p.id, None).await.unwrap(), None);
        // The name is free again once the policy is deleted.
        let other = s
            .create_policy(&write("scale", 5), "api", None)
            .await
            .unwrap();

        let history = s.policy_history(&p.id).await.unwrap();
        let changes: Vec<(&str, i64)> = history
            .iter()
            .map(|v| (v.change.as_str(), v.version))
            .collect();
        assert_eq!(changes, [("create", 1), ("update", 2), ("delete", 3)]);
        assert_eq!(history[1].changed_by.as_deref(), Some("admin-2"));
        assert_eq!(history[0].body.as_ref().unwrap()["priority"], 10);

        // Restoring version 1 while another live policy holds the name is a conflict...
        let clash = s.restore_policy_version(&p.id, 1, None).await.unwrap_err();
        assert!(matches!(clash, Error::Conflict(_)), "{clash}");
        s.delete_policy(&other.id, None).await.unwrap();
        // ...and once the name is free it brings version 1 back as version 4.
        let back = s
            .restore_policy_version(&p.id, 1, Some("admin-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((back.version, back.priority), (4, 10));
        assert_eq!(s.list_policies().await.unwrap().len(), 1);
        assert_eq!(
            s.policy_history(&p.id)
                .await
                .unwrap()
                .last()
                .unwrap()
                .change,
            "restore"
        );
        assert!(
            s.restore_policy_version(&p.id, 99, None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.restore_policy_version("nope", 1, None)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(s.policies_ever_created().await.unwrap(), 2);
        db.cleanup().await;
    }
}

fn decision(n: i64, decision: &str, action: &str) -> NewPolicyAudit {
    NewPolicyAudit {
        created_at: Some(chrono::Utc::now() - Duration::minutes(100 - n)),
        request_id: None,
        policy_type: if n % 3 == 0 {
            "api_access"
        } else {
            "self_healing"
        }
        .into(),
        action: action.into(),
        resource: "cluster:production".into(),
        user_id: Some("ai-engine".into()),
        role: Some("service".into()),
        decision: decision.into(),
        policy_id: None,
        policy_name: None,
        reason: "test".into(),
        context: json!({"n": n}),
        evaluated_in_us: 1,
    }
}

#[tokio::test]
async fn decision_audit_filters_and_pages_with_a_cursor() {
    for db in TestDb::both().await {
        let s = &db.store;
        let rows: Vec<NewPolicyAudit> = (0..50)
            .map(|n| {
                decision(
                    n,
                    if n % 2 == 0 { "ALLOW" } else { "DENY" },
                    if n < 25 { "scale_up" } else { "restart_pod" },
                )
            })
            .collect();
        s.append_policy_audit(&rows).await.unwrap();

        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s
                .list_policy_audit(&PolicyAuditQuery {
                    decision: Some("DENY".into()),
                    before_id: cursor,
                    limit: 7,
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            cursor = page.last().map(|r| r.id);
            seen.extend(page.into_iter().map(|r| r.context["n"].as_i64().unwrap()));
        }
        let expected: Vec<i64> = (0..50).rev().filter(|n| n % 2 == 1).collect();
        assert_eq!(seen, expected, "{}", db.name());

        let q = PolicyAuditQuery {
            action: Some("scale_up".into()),
            policy_type: Some("api_access".into()),
            limit: 100,
            ..Default::default()
        };
        let found: Vec<i64> = s
            .list_policy_audit(&q)
            .await
            .unwrap()
            .iter()
            .map(|r| r.context["n"].as_i64().unwrap())
            .collect();
        assert_eq!(found, [24, 21, 18, 15, 12, 9, 6, 3, 0]);

        // Time range: rows 10..20 were made 90..80 minutes ago.
        let now = chrono::Utc::now();
        let q = PolicyAuditQuery {
            from: Some(now - Duration::minutes(90) - Duration::seconds(30)),
            to: Some(now - Duration::minutes(80) - Duration::seconds(30)),
            limit: 100,
            ..Default::default()
        };
        let found: Vec<i64> = s
            .list_policy_audit(&q)
            .await
            .unwrap()
            .iter()
            .map(|r| r.context["n"].as_i64().unwrap())
            .collect();
        assert_eq!(found, (10..20).rev().collect::<Vec<_>>(), "{}", db.name());
        db.cleanup().await;
    }
}
