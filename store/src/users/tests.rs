//! User and token storage tests, each on SQLite and PostgreSQL.

use chrono::{Duration, Utc};

use super::*;
use crate::Error;
use crate::testing::TestDb;

fn new_user(email: &str, roles: &[&str]) -> NewUser {
    NewUser {
        email: email.into(),
        name: Some("Ada".into()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn token(id: &str, user: &str, family: &str, hash: &str) -> NewRefreshToken {
    NewRefreshToken {
        id: id.into(),
        user_id: user.into(),
        family_id: family.into(),
        token_hash: hash.into(),
        expires_at: Utc::now() + Duration::days(7),
    }
}

#[tokio::test]
async fn users_roles_and_conflicts() {
    for db in TestDb::both().await {
        let s = &db.store;
        let ada = s
            .create_user(&new_user("ada@example.com", &["user", "auditor"]), None)
            .await
            .unwrap();
        assert_eq!(ada.roles, ["user", "auditor"], "{}", db.name());
        let dup = s
            .create_user(&new_user("ada@example.com", &["user"]), None)
            .await
            .unwrap_err();
        assert!(matches!(dup, Error::Conflict(_)), "{dup}");
        let bad = s
            .create_user(&new_user("bob@example.com", &["root"]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(bad, Error::Invalid(ref m) if m.contains("`root`")),
            "{bad}"
        );
        assert!(
            s.user_by_email("bob@example.com").await.unwrap().is_none(),
            "nothing half-created"
        );

        let admin = s
            .set_roles(&ada.id, &["admin".to_owned()], Some("root"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admin.roles, ["admin"]);
        let patched = s
            .update_user(
                &ada.id,
                &UserPatch {
                    name: Some(None),
                    is_active: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((patched.name, patched.is_active), (None, false));
        assert!(
            s.update_user("nope", &UserPatch::default())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(s.list_users(None, 10).await.unwrap().len(), 1);
        assert!(s.delete_user(&ada.id).await.unwrap());
        assert!(!s.delete_user(&ada.id).await.unwrap());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn refresh_rotation_and_reuse_detection() {
    for db in TestDb::both().await {
        let s = &db.store;
        let u = s
            .create_user(&new_user("ada@example.com", &["user"]), None)
            .await
            .unwrap();
        s.insert_refresh_token(&token("t1", &u.id, "t1", "h1"))
            .await
            .unwrap();
        let r = s
            .rotate_refresh_token("h1", &token("t2", &u.id, "ignored", "h2"))
            .await
            .unwrap();
        assert_eq!(
            r,
            RotateOutcome::Rotated {
                user_id: u.id.clone(),
                family_id: "t1".into()
            },
            "{}",
            db.name()
        );
        assert!(
            s.session_is_live(&u.id, "t1").await.unwrap(),
            "{}",
            db.name()
        );
        assert!(!s.session_is_live("someone-else", "t1").await.unwrap());
        assert!(!s.session_is_live(&u.id, "no-such-family").await.unwrap());
        let r = s
            .rotate_refresh_token("h2", &token("t3", &u.id, "ignored", "h3"))
            .await
            .unwrap();
        assert_eq!(
            r,
            RotateOutcome::Rotated {
                user_id: u.id.clone(),
                family_id: "t1".into()
            }
        );
        // h1 was used: presenting it again revokes the family, including the live h3.
        let r = s
            .rotate_refresh_token("h1", &token("t4", &u.id, "ignored", "h4"))
            .await
            .unwrap();
        assert_eq!(
            r,
            RotateOutcome::Reused {
                user_id: u.id.clone(),
                family_id: "t1".into()
            }
        );
        let r = s
            .rotate_refresh_token("h3", &token("t5", &u.id, "ignored", "h5"))
            .await
            .unwrap();
        assert_eq!(r, RotateOutcome::Invalid);
        assert_eq!(
            s.rotate_refresh_token("unknown", &token("t6", &u.id, "x", "h6"))
                .await
                .unwrap(),
            RotateOutcome::Invalid
        );

        // Logout revokes a family; expired tokens do not rotate.
        s.insert_refresh_token(&token("f1", &u.id, "f1", "g1"))
            .await
            .unwrap();
        assert!(s.session_is_live(&u.id, "f1").await.unwrap());
        assert!(s.revoke_refresh_family("g1").await.unwrap());
        // Logout ends the session: access tokens of that family stop working.
        assert!(
            !s.session_is_live(&u.id, "f1").await.unwrap(),
            "{}",
            db.name()
        );
        assert_eq!(
            s.rotate_refresh_token("g1", &token("f2", &u.id, "x", "g2"))
                .await
                .unwrap(),
            RotateOutcome::Invalid
        );
        let mut old = token("e1", &u.id, "e1", "old");
        old.expires_at = Utc::now() - Duration::seconds(1);
        s.insert_refresh_token(&old).await.unwrap();
        assert_eq!(
            s.rotate_refresh_token("old", &token("e2", &u.id, "x", "e2h"))
                .await
                .unwrap(),
            RotateOutcome::Invalid
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn service_tokens_work_until_revoked_or_expired() {
    for db in TestDb::both().await {
        let s = &db.store;
        let t = s
            .create_service_token("prometheus", "sh1", "service", Some("admin"), None)
            .await
            .unwrap();
        assert_eq!(
            s.use_service_token("sh1").await.unwrap().unwrap().id,
            t.id,
            "{}",
            db.name()
        );
        assert!(s.use_service_token("other").await.unwrap().is_none());
        assert!(s.revoke_service_token(&t.id).await.unwrap());
        assert!(!s.revoke_service_token(&t.id).await.unwrap());
        assert!(s.use_service_token("sh1").await.unwrap().is_none());
        s.create_service_token(
            "old",
            "sh2",
            "service",
            None,
            Some(Utc::now() - Duration::seconds(1)),
        )
        .await
        .unwrap();
        assert!(s.use_service_token("sh2").await.unwrap().is_none());
        assert_eq!(s.list_service_tokens().await.unwrap().len(), 2);
        assert!(
            s.create_service_token("x", "sh3", "god", None, None)
                .await
                .is_err()
        );
        db.cleanup().await;
    }
}
