//! The SQL behind [`UserStore`], one body for both backends.

use chrono::{DateTime, Utc};

use super::{
    NewRefreshToken, NewUser, ROLES, RotateOutcome, ServiceTokenRecord, UserPatch, UserRecord,
    UserStore,
};
use crate::store::Store;
use crate::{Error, Result};

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: Option<String>,
    password_hash: String,
    is_active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ServiceTokenRow {
    id: String,
    name: String,
    role: String,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ServiceTokenRow> for ServiceTokenRecord {
    fn from(r: ServiceTokenRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            role: r.role,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

const USER_COLUMNS: &str = "id, email, name, password_hash, is_active, created_at, updated_at";
const TOKEN_COLUMNS: &str = "id, name, role, created_by, created_at, expires_at, revoked_at";

fn now() -> DateTime<Utc> {
    let at = Utc::now();
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

fn role_id(role: &str) -> Result<i32> {
    ROLES
        .iter()
        .position(|r| *r == role)
        .map(|i| i as i32 + 1)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "unknown role `{role}`; roles are {}",
                ROLES.join(", ")
            ))
        })
}

impl Store {
    async fn roles_of(&self, user_id: &str) -> Result<Vec<String>> {
        let sql = "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
                   WHERE ur.user_id = $1 ORDER BY r.id";
        let roles: Vec<String> =
            with_pool!(self, pool => sqlx::query_scalar(sql).bind(user_id).fetch_all(pool).await?);
        Ok(roles)
    }

    async fn with_roles(&self, row: Option<UserRow>) -> Result<Option<UserRecord>> {
        let Some(r) = row else { return Ok(None) };
        let roles = self.roles_of(&r.id).await?;
        Ok(Some(UserRecord {
            id: r.id,
            email: r.email,
            name: r.name,
            password_hash: r.password_hash,
            is_active: r.is_active,
            roles,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }))
    }
}

impl UserStore for Store {
    async fn create_user(&self, user: &NewUser, granted_by: Option<&str>) -> Result<UserRecord> {
        let role_ids = user
            .roles
            .iter()
            .map(|r| role_id(r))
            .collect::<Result<Vec<_>>>()?;
        let id = uuid::Uuid::now_v7().to_string();
        let at = now();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.write_begin()).await?;
            sqlx::query(
                "INSERT INTO users (id, email, name, password_hash, is_active, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, TRUE, $5, $5)",
            )
            .bind(&id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_unique_violation() => {
                    Error::Conflict("an account with this email already exists".to_owned())
                }
                _ => Error::Database(e),
            })?;
            for role in &role_ids {
                sqlx::query(
                    "INSERT INTO user_roles (user_id, role_id, granted_at, granted_by) VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(role)
                .bind(at)
                .bind(granted_by)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        self.user_by_id(&id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("user `{id}` vanished after insert")))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let row: Option<UserRow> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(email).fetch_optional(pool).await?);
        self.with_roles(row).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row: Option<UserRow> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        self.with_roles(row).await
    }

    async fn list_users(&self, after_id: Option<&str>, limit: i64) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        let rows: Vec<UserRow> = with_pool!(self, pool => sqlx::query_as(&sql)
            .bind(after_id.unwrap_or(""))
            .bind(limit.max(0))
            .fetch_all(pool)
            .await?);
        let mut users = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(user) = self.with_roles(Some(row)).await? {
                users.push(user);
            }
        }
        Ok(users)
    }

    async fn update_user(&self, id: &str, patch: &UserPatch) -> Result<Option<UserRecord>> {
        let at = now();
        let changed = with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.write_begin()).await?;
            let mut changed = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
                .bind(id).bind(at).execute(&mut *tx).await?.rows_affected();
            if let Some(name) = &patch.name {
                changed += sqlx::query("UPDATE users SET name = $2 WHERE id = $1")
                    .bind(id).bind(name).execute(&mut *tx).await?.rows_affected();
            }
            if let Some(hash) = &patch.password_hash {
                changed += sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                    .bind(id).bind(hash).execute(&mut *tx).await?.rows_affected();
            }
            if let Some(active) = patch.is_active {
                changed += sqlx::query("UPDATE users SET is_active = $2 WHERE id = $1")
                    .bind(id).bind(active).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            changed
        });
        if changed == 0 {
            return Ok(None);
        }
        self.user_by_id(id).await
    }

    async fn set_roles(
        &self,
        id: &str,
        roles: &[String],
        granted_by: Option<&str>,
    ) -> Result<Option<UserRecord>> {
        let role_ids = roles
            .iter()
            .map(|r| role_id(r))
            .collect::<Result<Vec<_>>>()?;
        let at = now();
        let exists = with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.write_begin()).await?;
            let touched = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
                .bind(id).bind(at).execute(&mut *tx).await?.rows_affected();
            if touched == 0 {
                return Ok(None);
            }
            sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
                .bind(id).execute(&mut *tx).await?;
            for role in &role_ids {
                sqlx::query(
                    "INSERT INTO user_roles (user_id, role_id, granted_at, granted_by) VALUES ($1, $2, $3, $4)",
                )
                .bind(id).bind(role).bind(at).bind(granted_by)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            true
        });
        if !exists {
            return Ok(None);
        }
        self.user_by_id(id).await
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        let n = with_pool!(self, pool => sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    async fn insert_refresh_token(&self, t: &NewRefreshToken) -> Result<()> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id).bind(&t.user_id).bind(&t.family_id).bind(&t.token_hash).bind(now()).bind(t.expires_at)
        .execute(pool).await?.rows_affected());
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next: &NewRefreshToken,
    ) -> Result<RotateOutcome> {
        let at = now();
        let lock = if self.backend() == crate::Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let select = format!(
            "SELECT user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens \
             WHERE token_hash = $1{lock}"
        );
        let outcome = with_pool!(self, pool => {
            // One transaction, the row locked: two refreshes racing with the same token cannot
            // both rotate it; the loser sees it used and revokes the family.
            let mut tx = pool.begin_with(self.write_begin()).await?;
            type Row = (String, String, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
            let row: Option<Row> = sqlx::query_as(&select).bind(token_hash).fetch_optional(&mut *tx).await?;
            let outcome = match row {
                None => RotateOutcome::Invalid,
                Some((_, _, _, _, Some(_))) => RotateOutcome::Invalid,
                Some((user_id, family_id, _, Some(_), None)) => {
                    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                        .bind(&family_id).bind(at).execute(&mut *tx).await?;
                    RotateOutcome::Reused { user_id, family_id }
                }
                Some((_, _, expires_at, None, None)) if expires_at <= at => RotateOutcome::Invalid,
                Some((user_id, family_id, _, None, None)) => {
                    sqlx::query("UPDATE refresh_tokens SET used_at = $2, replaced_by = $3 WHERE token_hash = $1")
                        .bind(token_hash).bind(at).bind(&next.id).execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, issued_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&next.id).bind(&user_id).bind(&family_id).bind(&next.token_hash).bind(at).bind(next.expires_at)
                    .execute(&mut *tx).await?;
                    RotateOutcome::Rotated { user_id, family_id }
                }
            };
            tx.commit().await?;
            outcome
        });
        Ok(outcome)
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<bool> {
        let family: Option<String> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash).fetch_optional(pool).await?);
        let Some(family) = family else {
            return Ok(false);
        };
        with_pool!(self, pool => sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
            .bind(&family).bind(now()).execute(pool).await?.rows_affected());
        Ok(true)
    }

    async fn session_is_live(&self, user_id: &str, family_id: &str) -> Result<bool> {
        // `u.is_active` is a boolean on PostgreSQL and 0/1 on SQLite; `= $3` binds both.
        let live: Option<i32> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT 1 FROM refresh_tokens r JOIN users u ON u.id = r.user_id \
             WHERE r.family_id = $1 AND r.user_id = $2 AND r.revoked_at IS NULL AND u.is_active = $3 LIMIT 1")
            .bind(family_id).bind(user_id).bind(true).fetch_optional(pool).await?);
        Ok(live.is_some())
    }

    async fn revoke_user_refresh_tokens(&self, user_id: &str) -> Result<u64> {
        let n = with_pool!(self, pool => sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id).bind(now()).execute(pool).await?.rows_affected());
        Ok(n)
    }

    async fn create_service_token(
        &self,
        name: &str,
        token_hash: &str,
        role: &str,
        created_by: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<ServiceTokenRecord> {
        role_id(role)?;
        let id = uuid::Uuid::now_v7().to_string();
        let at = now();
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO service_tokens (id, name, token_hash, role, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id).bind(name).bind(token_hash).bind(role).bind(created_by).bind(at).bind(expires_at)
            .execute(pool).await?.rows_affected());
        Ok(ServiceTokenRecord {
            id,
            name: name.to_owned(),
            role: role.to_owned(),
            created_by: created_by.map(str::to_owned),
            created_at: at,
            expires_at,
            revoked_at: None,
        })
    }

    async fn use_service_token(&self, token_hash: &str) -> Result<Option<ServiceTokenRecord>> {
        let at = now();
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM service_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)"
        );
        let row: Option<ServiceTokenRow> = with_pool!(self, pool =>
            sqlx::query_as(&sql).bind(token_hash).bind(at).fetch_optional(pool).await?);
        Ok(row.map(ServiceTokenRecord::from))
    }

    async fn list_service_tokens(&self) -> Result<Vec<ServiceTokenRecord>> {
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM service_tokens ORDER BY created_at DESC, id DESC");
        let rows: Vec<ServiceTokenRow> =
            with_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows.into_iter().map(ServiceTokenRecord::from).collect())
    }

    async fn revoke_service_token(&self, id: &str) -> Result<bool> {
        let n = with_pool!(self, pool => sqlx::query(
            "UPDATE service_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id).bind(now()).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }
}
