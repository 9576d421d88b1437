//! The SQL behind [`PolicyStore`], one body for both backends (only driver types differ).

use chrono::{DateTime, Utc};

use super::{
    PolicyAuditQuery, PolicyAuditRow, PolicyRecord, PolicyStore, PolicyVersion, PolicyWrite,
};
use crate::page::Page;
use crate::store::Store;
use crate::{Error, Result};

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: String,
    name: String,
    policy_type: String,
    effect: String,
    priority: i32,
    enabled: bool,
    body: String,
    version: i32,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn parse_json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::Corrupt(format!("stored JSON does not parse: {e}")))
}

impl TryFrom<PolicyRow> for PolicyRecord {
    type Error = Error;
    fn try_from(r: PolicyRow) -> Result<Self> {
        Ok(Self {
            body: parse_json(&r.body)?,
            id: r.id,
            name: r.name,
            policy_type: r.policy_type,
            effect: r.effect,
            priority: r.priority,
            enabled: r.enabled,
            version: i64::from(r.version),
            source: r.source,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    policy_id: String,
    version: i32,
    change: String,
    body: Option<String>,
    changed_by: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    created_at: DateTime<Utc>,
    request_id: Option<String>,
    policy_type: String,
    action: String,
    resource: String,
    user_id: Option<String>,
    role: Option<String>,
    decision: String,
    policy_id: Option<String>,
    policy_name: Option<String>,
    reason: String,
    context: String,
    evaluated_in_us: i64,
    hash: String,
}

const POLICY_COLUMNS: &str = "id, name, policy_type, effect, priority, enabled, body, version, \
                              source, created_at, updated_at";

fn body_text(write: &PolicyWrite) -> String {
    write.body.to_string()
}

/// A live policy with this name would break the unique index: say so in words.
fn conflict_on_unique(name: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("a policy named `{name}` already exists"))
        }
        _ => Error::Database(e),
    }
}

fn now() -> DateTime<Utc> {
    // Microseconds: what both databases keep, so a value read back equals the one written.
    let at = Utc::now();
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

impl PolicyStore for Store {
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>> {
        let sql =
            format!("SELECT {POLICY_COLUMNS} FROM policies WHERE deleted_at IS NULL ORDER BY name");
        let rows: Vec<PolicyRow> =
            with_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        rows.into_iter().map(PolicyRecord::try_from).collect()
    }

    async fn get_policy(&self, id: &str) -> Result<Option<PolicyRecord>> {
        let sql =
            format!("SELECT {POLICY_COLUMNS} FROM policies WHERE id = $1 AND deleted_at IS NULL");
        let row: Option<PolicyRow> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        row.map(PolicyRecord::try_from).transpose()
    }

    async fn create_policy(
        &self,
        write: &PolicyWrite,
        source: &str,
        changed_by: Option<&str>,
    ) -> Result<PolicyRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let at = now();
        let body = body_text(write);
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.write_begin()).await?;
            sqlx::query(
                "INSERT INTO policies (id, name, policy_type, effect, priority, enabled, body, \
                 version, source, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $9)",
            )
            .bind(&id)
            .bind(&write.name)
            .bind(&write.policy_type)
            .bind(&write.effect)
            .bind(write.priority)
            .bind(write.enabled)
            .bind(&body)
            .bind(source)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(conflict_on_unique(&write.name))?;
            sqlx::query(
                "INSERT INTO policy_versions (policy_id, version, change, body, changed_by, created_at) \
                 VALUES ($1, 1, 'create', $2, $3, $4)",
            )
            .bind(&id)
            .bind(&body)
            .bind(changed_by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(PolicyRecord {
            id,
            name: write.name.clone(),
            policy_type: write.policy_type.clone(),
            effect: write.effect.clone(),
            priority: write.priority,
            enabled: write.enabled,
            body: write.body.clone(),
            version: 1,
            source: source.to_owned(),
            created_at: at,
            updated_at: at,
        })
    }

    async fn update_policy(
        &self,
        id: &str,
        write: &PolicyWrite,
        expected_version: Option<i64>,
        changed_by: Option<&str>,
    ) -> Result<Option<PolicyRecord>> {
        self.write_version(
            id,
            Some(write),
            expected_version,
            "update",
            changed_by,
            false,
        )
        .await
    }

    async fn delete_policy(&self, id: &str, changed_by: Option<&str>) -> Result<Option<i64>> {
        Ok(self
            .write_version(id, None, None, "delete", changed_by, false)
            .await?
            .map(|r| r.version))
    }

    async fn policy_history(&self, id: &str) -> Result<Vec<PolicyVersion>> {
        let sql = "SELECT policy_id, version, change, body, changed_by, created_at \
                   FROM policy_versions WHERE policy_id = $1 ORDER BY version";
        let rows: Vec<VersionRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|r| {
                Ok(PolicyVersion {
                    body: r.body.as_deref().map(parse_json).transpose()?,
                    policy_id: r.policy_id,
                    version: i64::from(r.version),
                    change: r.change,
                    changed_by: r.changed_by,
                    created_at: r.created_at,
                })
            })
            .collect()
    }

    async fn restore_policy_version(
        &self,
        id: &str,
        version: i64,
        changed_by: Option<&str>,
    ) -> Result<Option<PolicyRecord>> {
        let history = self.policy_history(id).await?;
        let Some(old) = history.iter().find(|v| v.version == version) else {
            return Ok(None);
        };
        let Some(body) = old.body.clone() else {
            return Ok(None);
        };
        let field = |k: &str| body.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let write = PolicyWrite {
            name: field("name").as_str().unwrap_or_default().to_owned(),
            policy_type: field("type").as_str().unwrap_or_default().to_owned(),
            effect: field("effect").as_str().unwrap_or_default().to_owned(),
            priority: field("priority").as_i64().unwrap_or(0) as i32,
            enabled: field("enabled").as_bool().unwrap_or(true),
            body: body.clone(),
        };
        self.write_version(id, Some(&write), None, "restore", changed_by, true)
            .await
    }

    async fn policies_fingerprint(&self) -> Result<(i64, i64)> {
        // CAST keeps one result type on both backends (PostgreSQL's SUM of INTEGER is BIGINT,
        // SQLite's is INTEGER).
        let sql = "SELECT COUNT(*), CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM policies";
        let row: (i64, i64) = with_pool!(self, pool => sqlx::query_as(sql).fetch_one(pool).await?);
        Ok(row)
    }

    async fn policies_ever_created(&self) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM policies";
        let n: i64 = with_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await?);
        Ok(n)
    }

    async fn list_policy_audit(&self, q: &PolicyAuditQuery) -> Result<Vec<PolicyAuditRow>> {
        let page = Page::new(
            "SELECT id, created_at, request_id, policy_type, action, resource, user_id, role, \
             decision, policy_id, policy_name, reason, context, evaluated_in_us, hash \
             FROM policy_audit_logs",
        )
        .eq("decision", q.decision.as_ref())
        .eq("policy_type", q.policy_type.as_ref())
        .eq("action", q.action.as_ref())
        .window(q.from, q.to, q.before_id, q.limit);
        let rows: Vec<AuditRow> = self.fetch_page(&page).await?;
        rows.into_iter()
            .map(|r| {
                Ok(PolicyAuditRow {
                    context: parse_json(&r.context)?,
                    id: r.id,
                    created_at: r.created_at,
                    request_id: r.request_id,
                    policy_type: r.policy_type,
                    action: r.action,
                    resource: r.resource,
                    user_id: r.user_id,
                    role: r.role,
                    decision: r.decision,
                    policy_id: r.policy_id,
                    policy_name: r.policy_name,
                    reason: r.reason,
                    evaluated_in_us: r.evaluated_in_us,
                    hash: r.hash,
                })
            })
            .collect()
    }

    async fn count_policy_audit(&self) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM policy_audit_logs";
        let n: i64 = with_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await?);
        Ok(n)
    }
}

impl Store {
    /// How a write transaction starts. On SQLite, IMMEDIATE takes the write lock up front: a
    /// deferred transaction that reads and then writes fails at once (not after the busy
    /// timeout) when another connection, such as the audit writer, wrote in between.
    pub(crate) fn write_begin(&self) -> &'static str {
        match self.backend() {
            crate::Backend::Sqlite => "BEGIN IMMEDIATE",
            crate::Backend::Postgres => "BEGIN",
        }
    }

    /// Writes a new version of policy `id`: a replacement body (`Some`) or a delete (`None`).
    /// `include_deleted` lets a restore bring a deleted policy back.
    async fn write_version(
        &self,
        id: &str,
        write: Option<&PolicyWrite>,
        expected_version: Option<i64>,
        change: &str,
        changed_by: Option<&str>,
        include_deleted: bool,
    ) -> Result<Option<PolicyRecord>> {
        let at = now();
        let select = format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE id = $1{}{}",
            if include_deleted {
                ""
            } else {
                " AND deleted_at IS NULL"
            },
            // Concurrent writers of one policy queue up instead of both taking version n+1.
            if self.backend() == crate::Backend::Postgres {
                " FOR UPDATE"
            } else {
                ""
            }
        );
        let record = with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.write_begin()).await?;
            let current: Option<PolicyRow> =
                sqlx::query_as(&select).bind(id).fetch_optional(&mut *tx).await?;
            let Some(current) = current else {
                return Ok(None);
            };
            if let Some(expected) = expected_version
                && expected != i64::from(current.version)
            {
                return Err(Error::Conflict(format!(
                    "policy `{}` is at version {}, not {expected}; reload it and try again",
                    current.name, current.version
                )));
            }
            // Both schemas keep versions as 32-bit integers.
            let version: i32 = current.version.saturating_add(1);
            let mut record = PolicyRecord::try_from(current)?;
            record.version = i64::from(version);
            record.updated_at = at;
            match write {
                Some(w) => {
                    let body = body_text(w);
                    sqlx::query(
                        "UPDATE policies SET name = $2, policy_type = $3, effect = $4, \
                         priority = $5, enabled = $6, body = $7, version = $8, updated_at = $9, \
                         deleted_at = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(&w.name)
                    .bind(&w.policy_type)
                    .bind(&w.effect)
                    .bind(w.priority)
                    .bind(w.enabled)
                    .bind(&body)
                    .bind(version)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(conflict_on_unique(&w.name))?;
                    sqlx::query(
                        "INSERT INTO policy_versions (policy_id, version, change, body, changed_by, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(id)
                    .bind(version)
                    .bind(change)
                    .bind(&body)
                    .bind(changed_by)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    record.name = w.name.clone();
                    record.policy_type = w.policy_type.clone();
                    record.effect = w.effect.clone();
                    record.priority = w.priority;
                    record.enabled = w.enabled;
                    record.body = w.body.clone();
                }
                None => {
                    sqlx::query(
                        "UPDATE policies SET version = $2, updated_at = $3, deleted_at = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(version)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO policy_versions (policy_id, version, change, body, changed_by, created_at) \
                         VALUES ($1, $2, 'delete', $3, $4, $5)",
                    )
                    .bind(id)
                    .bind(version)
                    .bind(record.body.to_string())
                    .bind(changed_by)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            record
        });
        Ok(Some(record))
    }
}
