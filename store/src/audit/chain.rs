//! Column layouts, canonical encoding, and the append and verify paths for both backends.
//!
//! Long because the append and verify paths exist once per dialect (SQLite and PostgreSQL)
//! and must stay side by side to stay identical.

use aegis_core::{Canonical, GENESIS_HASH};
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row};

use super::keys::{AuditKey, AuditKeys, KeyWalk, link};
use super::{
    AuditLog, AuditReceipt, AuditTable, BrokenRow, NewActionAudit, NewPolicyAudit, VerifyReport,
};
use crate::Result;
use crate::store::{Pool, Store};

/// How a column is stored and hashed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    OptText,
    Int,
    Time,
}

/// One column value, in the layout's order.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Time(DateTime<Utc>),
}

/// The hashed columns of a chain table, besides `id`, `prev_hash` and `hash`.
struct Layout {
    table: AuditTable,
    columns: &'static [(&'static str, Kind)],
}

const POLICY: Layout = Layout {
    table: AuditTable::Policy,
    columns: &[
        ("created_at", Kind::Time),
        ("request_id", Kind::OptText),
        ("policy_type", Kind::Text),
        ("action", Kind::Text),
        ("resource", Kind::Text),
        ("user_id", Kind::OptText),
        ("role", Kind::OptText),
        ("decision", Kind::Text),
        ("policy_id", Kind::OptText),
        ("policy_name", Kind::OptText),
        ("reason", Kind::Text),
        ("context", Kind::Text),
        ("evaluated_in_us", Kind::Int),
    ],
};

const ACTION: Layout = Layout {
    table: AuditTable::Action,
    columns: &[
        ("created_at", Kind::Time),
        ("action_id", Kind::Text),
        ("phase", Kind::Text),
        ("action", Kind::Text),
        ("namespace", Kind::Text),
        ("target", Kind::Text),
        ("status", Kind::Text),
        ("actor", Kind::OptText),
        ("reason", Kind::OptText),
        ("details", Kind::Text),
    ],
};

impl Layout {
    fn of(table: AuditTable) -> &'static Layout {
        match table {
            AuditTable::Policy => &POLICY,
            AuditTable::Action => &ACTION,
        }
    }

    fn name(&self) -> &'static str {
        self.table.table_name()
    }

    /// Index into `Store::chain_locks` and key of the PostgreSQL advisory lock.
    fn lock_index(&self) -> usize {
        match self.table {
            AuditTable::Policy => 0,
            AuditTable::Action => 1,
        }
    }

    fn advisory_key(&self) -> i64 {
        // Arbitrary constants, unique to Aegis's audit chains.
        0x4145_4749_5300 + self.lock_index() as i64
    }

    fn canonical(&self, id: i64, values: &[Value]) -> Vec<u8> {
        let mut row = Canonical::new();
        row.str("table", self.name()).i64("id", id);
        for ((name, _), value) in self.columns.iter().zip(values) {
            match value {
                Value::Text(v) => row.str(name, v),
                Value::OptText(v) => row.opt_str(name, v.as_deref()),
                Value::Int(v) => row.i64(name, *v),
                Value::Time(v) => row.time(name, *v),
            };
        }
        row.finish()
    }

    /// The row as one JSON log line for Loki: every column, the id, the key and both hashes.
    fn line(
        &self,
        id: i64,
        values: &[Value],
        key_id: Option<&str>,
        prev_hash: &str,
        hash: &str,
    ) -> String {
        let mut row = serde_json::Map::new();
        row.insert("table".into(), self.name().into());
        row.insert("id".into(), id.into());
        for ((name, _), value) in self.columns.iter().zip(values) {
            let v = match value {
                Value::Text(v) => serde_json::Value::from(v.as_str()),
                Value::OptText(v) => v
                    .as_deref()
                    .map_or(serde_json::Value::Null, serde_json::Value::from),
                Value::Int(v) => serde_json::Value::from(*v),
                Value::Time(v) => serde_json::Value::from(v.to_rfc3339()),
            };
            row.insert((*name).into(), v);
        }
        if let Some(k) = key_id {
            row.insert("key_id".into(), k.into());
        }
        row.insert("prev_hash".into(), prev_hash.into());
        row.insert("hash".into(), hash.into());
        serde_json::Value::Object(row).to_string()
    }

    fn insert_sql(&self) -> String {
        let cols: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        format!(
            "INSERT INTO {} (id, {}, key_id, prev_hash, hash) ",
            self.name(),
            cols.join(", ")
        )
    }
}

/// Now, truncated to the microseconds both databases keep, so the hash survives storage.
fn stored_time(at: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let at = at.unwrap_or_else(Utc::now);
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

fn json_text(value: &serde_json::Value) -> String {
    // Serialising a `Value` cannot fail: its keys are strings.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn policy_values(e: &NewPolicyAudit) -> Vec<Value> {
    vec![
        Value::Time(stored_time(e.created_at)),
        Value::OptText(e.request_id.clone()),
        Value::Text(e.policy_type.clone()),
        Value::Text(e.action.clone()),
        Value::Text(e.resource.clone()),
        Value::OptText(e.user_id.clone()),
        Value::OptText(e.role.clone()),
        Value::Text(e.decision.clone()),
        Value::OptText(e.policy_id.clone()),
        Value::OptText(e.policy_name.clone()),
        Value::Text(e.reason.clone()),
        Value::Text(json_text(&e.context)),
        Value::Int(e.evaluated_in_us),
    ]
}

fn action_values(e: &NewActionAudit) -> Vec<Value> {
    vec![
        Value::Time(stored_time(e.created_at)),
        Value::Text(e.action_id.clone()),
        Value::Text(e.phase.clone()),
        Value::Text(e.action.clone()),
        Value::Text(e.namespace.clone()),
        Value::Text(e.target.clone()),
        Value::Text(e.status.clone()),
        Value::OptText(e.actor.clone()),
        Value::OptText(e.reason.clone()),
        Value::Text(json_text(&e.details)),
    ]
}

/// Rows per INSERT statement: well under SQLite's 32,766 and PostgreSQL's 65,535 bind
/// parameters for the widest layout.
const INSERT_CHUNK: usize = 1_000;
/// Rows per page when verifying.
const VERIFY_PAGE: i64 = 2_000;

/// A row with its place in the chain: id, values, signing key id, previous hash, own hash.
type Chained<'a> = (i64, &'a [Value], Option<String>, String, String);

/// Links `rows` after the row `id` whose hash is `prev` (under `key` when one is
/// configured); the receipts go to `receipts`.
fn chain_after<'a>(
    layout: &Layout,
    id: &mut i64,
    prev: &mut String,
    rows: &'a [Vec<Value>],
    key: Option<&AuditKey>,
    receipts: &mut Vec<AuditReceipt>,
) -> Vec<Chained<'a>> {
    let mut chained = Vec::with_capacity(rows.len());
    let key_id = key.map(|k| k.id().to_owned());
    for values in rows {
        *id += 1;
        let hash = link(key, prev, &layout.canonical(*id, values));
        let prev_hash = std::mem::replace(prev, hash.clone());
        chained.push((
            *id,
            values.as_slice(),
            key_id.clone(),
            prev_hash,
            hash.clone(),
        ));
        receipts.push(AuditReceipt { id: *id, hash });
    }
    chained
}

/// One multi-row `INSERT` of chained rows into `$layout`'s table, for backend `$db`.
macro_rules! insert_query {
    ($layout:expr, $chained:expr, $db:ty) => {{
        let mut insert = QueryBuilder::<$db>::new($layout.insert_sql());
        insert.push_values(
            $chained.iter(),
            |mut b, (row_id, values, key_id, prev_hash, hash)| {
                b.push_bind(*row_id);
                for value in values.iter() {
                    match value {
                        Value::Text(v) => b.push_bind(v.clone()),
                        Value::OptText(v) => b.push_bind(v.clone()),
                        Value::Int(v) => b.push_bind(*v),
                        Value::Time(v) => b.push_bind(*v),
                    };
                }
                b.push_bind(key_id.clone());
                b.push_bind(prev_hash.clone());
                b.push_bind(hash.clone());
            },
        );
        insert
    }};
}

/// Chains `rows` after the table's last row and inserts them on `$tx`. One body for both
/// backends: the SQL is the same, only the driver types differ.
macro_rules! append_on {
    ($tx:expr, $layout:expr, $rows:expr, $db:ty, $outbox:expr, $key:expr) => {{
        let layout: &Layout = $layout;
        let last: Option<(i64, String)> = sqlx::query_as(&format!(
            "SELECT id, hash FROM {} ORDER BY id DESC LIMIT 1",
            layout.name()
        ))
        .fetch_optional(&mut *$tx)
        .await?;
        let (mut id, mut prev) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
        let mut receipts = Vec::with_capacity($rows.len());
        for chunk in $rows.chunks(INSERT_CHUNK) {
            let chained = chain_after(layout, &mut id, &mut prev, chunk, $key, &mut receipts);
            insert_query!(layout, chained, $db).build().execute(&mut *$tx).await?;
            if $outbox {
                // Same transaction as the audit rows: an outbox row exists exactly when its
                // audit row does.
                let now = Utc::now();
                let mut queue = QueryBuilder::<$db>::new(
                    "INSERT INTO audit_outbox (audit_table, audit_id, line, created_at, attempts, next_attempt_at) ",
                );
                queue.push_values(chained.iter(), |mut b, (row_id, values, key_id, prev_hash, hash)| {
                    b.push_bind(layout.name());
                    b.push_bind(*row_id);
                    b.push_bind(layout.line(*row_id, values, key_id.as_deref(), prev_hash, hash));
                    b.push_bind(now);
                    b.push_bind(0_i32);
                    b.push_bind(now);
                });
                queue.build().execute(&mut *$tx).await?;
            }
        }
        receipts
    }};
}

/// Walks the chain of `$layout` on `$pool` page by page.
macro_rules! verify_on {
    ($pool:expr, $layout:expr, $keys:expr) => {{
        let layout: &Layout = $layout;
        let keys: Option<&AuditKeys> = $keys;
        let mut walk = KeyWalk::default();
        let sql = format!(
            "SELECT * FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
            layout.name()
        );
        let mut expected_id = 1_i64;
        let mut prev = GENESIS_HASH.to_owned();
        let mut checked = 0_u64;
        let mut broken = None;
        // Rows pruned by retention: the chain resumes after a verified archive, whose
        // recorded last hash is the anchor.
        let first: Option<i64> = sqlx::query_scalar(&format!("SELECT MIN(id) FROM {}", layout.name()))
            .fetch_one($pool)
            .await?;
        if let Some(first) = first.filter(|f| *f > 1) {
            let anchors: Vec<AuditArchive> = sqlx::query_as(
                "SELECT audit_table, first_id, last_id, prev_hash, last_hash, location, sha256, verified_at, key_id, mac \
                 FROM audit_archives WHERE audit_table = $1 AND last_id = $2 ORDER BY id DESC",
            )
            .bind(layout.name())
            .bind(first - 1)
            .fetch_all($pool)
            .await?;
            // With keys, only a signed archive record anchors the chain (anyone can insert
            // an unsigned one), or an unsigned one before the first keyed row.
            let first_unkeyed = {
                let k: Option<Option<String>> = sqlx::query_scalar(&format!("SELECT key_id FROM {} WHERE id = $1", layout.name()))
                    .bind(first)
                    .fetch_optional($pool)
                    .await?;
                matches!(k, Some(None))
            };
            let anchor = anchors.into_iter().find(|a| a.trusted(keys, first_unkeyed));
            match anchor {
                Some(a) => {
                    expected_id = first;
                    prev = a.last_hash;
                }
                None => {
                    broken = Some(BrokenRow {
                        id: first,
                        reason: format!("rows 1..{} are missing and no verified{} archive ends at row {}", first - 1, if keys.is_some() { " and signed" } else { "" }, first - 1),
                    })
                }
            }
        }
        'pages: loop {
            if broken.is_some() {
                break;
            }
            let rows = sqlx::query(&sql)
                .bind(expected_id - 1)
                .bind(VERIFY_PAGE)
                .fetch_all($pool)
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                let mut values = Vec::with_capacity(layout.columns.len());
                for (name, kind) in layout.columns {
                    values.push(match kind {
                        Kind::Text => Value::Text(row.try_get(*name)?),
                        Kind::OptText => Value::OptText(row.try_get(*name)?),
                        Kind::Int => Value::Int(row.try_get(*name)?),
                        Kind::Time => Value::Time(row.try_get(*name)?),
                    });
                }
                let key_id: Option<String> = row.try_get("key_id")?;
                let prev_hash: String = row.try_get("prev_hash")?;
                let hash: String = row.try_get("hash")?;
                if let Some(reason) = check_row(
                    layout,
                    (&mut walk, keys),
                    expected_id,
                    &prev,
                    (id, &values, key_id.as_deref()),
                    &prev_hash,
                    &hash,
                ) {
                    broken = Some(BrokenRow { id, reason });
                    break 'pages;
                }
                checked += 1;
                expected_id = id + 1;
                prev = hash;
            }
        }
        VerifyReport {
            table: layout.table,
            rows_checked: checked,
            unkeyed_rows: walk.unkeyed,
            broken,
        }
    }};
}

/// Why row `id` breaks the chain, or `None` when it holds.
fn check_row(
    layout: &Layout,
    (walk, keys): (&mut KeyWalk, Option<&AuditKeys>),
    expected_id: i64,
    prev: &str,
    (id, values, key_id): (i64, &[Value], Option<&str>),
    prev_hash: &str,
    hash: &str,
) -> Option<String> {
    if id != expected_id {
        return Some(format!(
            "row {expected_id}{} is missing: ids must follow each other",
            if id > expected_id + 1 {
                format!("..{}", id - 1)
            } else {
                String::new()
            }
        ));
    }
    if prev_hash != prev {
        return Some("prev_hash does not match the previous row's hash".to_owned());
    }
    walk.check(keys, key_id, prev, &layout.canonical(id, values), hash)
}

/// The newest row of a chain as this process last wrote or read it: its id and hash.
pub(crate) type ChainTail = Option<(i64, String)>;

/// The tail a successful append leaves: its last row.
fn tail_of(receipts: &[AuditReceipt]) -> ChainTail {
    receipts.last().map(|r| (r.id, r.hash.clone()))
}

impl Store {
    async fn append_rows(
        &self,
        layout: &Layout,
        rows: Vec<Vec<Value>>,
    ) -> Result<Vec<AuditReceipt>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut tail = self.chain_locks[layout.lock_index()].lock().await;
        let key = self.audit_keys.as_deref().map(AuditKeys::signing);
        let outbox = self.outbox && layout.table == AuditTable::Action;
        if !outbox
            && rows.len() <= INSERT_CHUNK
            && let Some(known) = tail.take()
        {
            match self.append_after(layout, known, &rows, key).await {
                Ok(receipts) => {
                    *tail = tail_of(&receipts);
                    return Ok(receipts);
                }
                // Another process or replica appended since: take the slow path, which
                // reads the real tail under the chain's lock.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
                // Whether it committed is unknown; the tail is read again next time.
                Err(e) => return Err(e.into()),
            }
        }
        let receipts = match self.pool() {
            Pool::Sqlite(pool) => {
                // IMMEDIATE takes the write lock up front, so reading the last hash and
                // inserting after it cannot interleave with another writer.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let receipts = append_on!(tx, layout, rows, sqlx::Sqlite, outbox, key);
                tx.commit().await?;
                receipts
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Other replicas append to the same chain: take the chain's lock for the
                // length of the transaction.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(layout.advisory_key())
                    .execute(&mut *tx)
                    .await?;
                let receipts = append_on!(tx, layout, rows, sqlx::Postgres, outbox, key);
                tx.commit().await?;
                receipts
            }
        };
        *tail = tail_of(&receipts);
        Ok(receipts)
    }

    /// The fast path of a group commit: `rows` chained after the tail this process knows, in
    /// one `INSERT` statement (atomic on its own) and one round trip instead of a
    /// transaction of four. Ids are the primary key and follow each other, so when anyone
    /// else has appended since, row `tail + 1` exists and the insert fails whole with a
    /// unique violation instead of forking the chain.
    async fn append_after(
        &self,
        layout: &Layout,
        (mut id, mut prev): (i64, String),
        rows: &[Vec<Value>],
        key: Option<&AuditKey>,
    ) -> std::result::Result<Vec<AuditReceipt>, sqlx::Error> {
        let mut receipts = Vec::with_capacity(rows.len());
        let chained = chain_after(layout, &mut id, &mut prev, rows, key, &mut receipts);
        match self.pool() {
            Pool::Sqlite(pool) => {
                insert_query!(layout, chained, sqlx::Sqlite)
                    .build()
                    .execute(pool)
                    .await?;
            }
            Pool::Postgres(pool) => {
                insert_query!(layout, chained, sqlx::Postgres)
                    .build()
                    .execute(pool)
                    .await?;
            }
        }
        Ok(receipts)
    }
}

impl AuditLog for Store {
    async fn append_policy_audit(&self, entries: &[NewPolicyAudit]) -> Result<Vec<AuditReceipt>> {
        self.append_rows(&POLICY, entries.iter().map(policy_values).collect())
            .await
    }

    async fn append_action_audit(&self, entries: &[NewActionAudit]) -> Result<Vec<AuditReceipt>> {
        self.append_rows(&ACTION, entries.iter().map(action_values).collect())
            .await
    }

    async fn verify_audit(&self, table: AuditTable) -> Result<VerifyReport> {
        let layout = Layout::of(table);
        let keys = self.audit_keys.as_deref();
        Ok(match self.pool() {
            Pool::Sqlite(pool) => verify_on!(pool, layout, keys),
            Pool::Postgres(pool) => verify_on!(pool, layout, keys),
        })
    }
}

/// How an exported audit column is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// Text, never null.
    Text,
    /// Text or null.
    OptText,
    /// A 64-bit integer.
    Int,
    /// A UTC time with microseconds.
    Time,
}

/// One value of an exported audit row.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditValue {
    /// Text.
    Text(String),
    /// Text or null.
    OptText(Option<String>),
    /// Integer.
    Int(i64),
    /// Time.
    Time(DateTime<Utc>),
}

/// One audit row with every hashed column, as exported and re-verified from archives.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Row id (position in the chain).
    pub id: i64,
    /// The hashed columns in [`audit_columns`] order.
    pub values: Vec<AuditValue>,
    /// The audit key that signed the row (`None`: a plain SHA-256 link).
    pub key_id: Option<String>,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// The hashed columns of `table` (besides `id`, `prev_hash`, `hash`), in hash order.
pub fn audit_columns(table: AuditTable) -> Vec<(&'static str, AuditKind)> {
    Layout::of(table)
        .columns
        .iter()
        .map(|(n, k)| {
            (
                *n,
                match k {
                    Kind::Text => AuditKind::Text,
                    Kind::OptText => AuditKind::OptText,
                    Kind::Int => AuditKind::Int,
                    Kind::Time => AuditKind::Time,
                },
            )
        })
        .collect()
}

fn to_value(v: &AuditValue) -> Value {
    match v {
        AuditValue::Text(s) => Value::Text(s.clone()),
        AuditValue::OptText(s) => Value::OptText(s.clone()),
        AuditValue::Int(i) => Value::Int(*i),
        AuditValue::Time(t) => Value::Time(*t),
    }
}

/// Checks a contiguous run of exported rows on its own: ids follow each other from the
/// first, each row links to the one before (the first to `prev_hash`), and every hash
/// recomputes from the row's values (under its key, for keyed rows). The first broken row,
/// if any.
pub fn verify_records(
    table: AuditTable,
    records: &[AuditRecord],
    prev_hash: &str,
    keys: Option<&AuditKeys>,
) -> Option<BrokenRow> {
    let layout = Layout::of(table);
    let mut walk = KeyWalk::default();
    let mut prev = prev_hash.to_owned();
    for (expected, r) in (records.first()?.id..).zip(records) {
        let values: Vec<Value> = r.values.iter().map(to_value).collect();
        if values.len() != layout.columns.len() {
            return Some(BrokenRow {
                id: r.id,
                reason: "the row has the wrong number of columns".into(),
            });
        }
        if let Some(reason) = check_row(
            layout,
            (&mut walk, keys),
            expected,
            &prev,
            (r.id, &values, r.key_id.as_deref()),
            &r.prev_hash,
            &r.hash,
        ) {
            return Some(BrokenRow { id: r.id, reason });
        }
        prev = r.hash.clone();
    }
    None
}

/// The link (`hash`) of `record` after `prev_hash`: under `key`, or plain SHA-256 without
/// one. For tools that rebuild or inspect a chain (and tests that play the attacker).
pub fn record_link(
    table: AuditTable,
    record: &AuditRecord,
    prev_hash: &str,
    key: Option<&AuditKey>,
) -> String {
    let values: Vec<Value> = record.values.iter().map(to_value).collect();
    link(
        key,
        prev_hash,
        &Layout::of(table).canonical(record.id, &values),
    )
}

/// Reads rows `first_id..=last_id` of `$layout` as records.
macro_rules! records_on {
    ($pool:expr, $layout:expr, $first:expr, $last:expr) => {{
        let layout: &Layout = $layout;
        let sql = format!(
            "SELECT * FROM {} WHERE id >= $1 AND id <= $2 ORDER BY id",
            layout.name()
        );
        let rows = sqlx::query(&sql)
            .bind($first)
            .bind($last)
            .fetch_all($pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(layout.columns.len());
            for (name, kind) in layout.columns {
                values.push(match kind {
                    Kind::Text => AuditValue::Text(row.try_get(*name)?),
                    Kind::OptText => AuditValue::OptText(row.try_get(*name)?),
                    Kind::Int => AuditValue::Int(row.try_get(*name)?),
                    Kind::Time => AuditValue::Time(row.try_get(*name)?),
                });
            }
            out.push(AuditRecord {
                id: row.try_get("id")?,
                values,
                key_id: row.try_get("key_id")?,
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            });
        }
        out
    }};
}

impl Store {
    /// The key id of a chain's newest row: `None` for an empty chain, `Some(None)` when the
    /// newest row is not keyed.
    pub async fn audit_tail_key(&self, table: AuditTable) -> Result<Option<Option<String>>> {
        let sql = format!(
            "SELECT key_id FROM {} ORDER BY id DESC LIMIT 1",
            table.table_name()
        );
        let tail: Option<Option<String>> =
            with_pool!(self, pool => sqlx::query_scalar(&sql).fetch_optional(pool).await?);
        Ok(tail)
    }

    /// Audit rows with ids in `first_id..=last_id`, oldest first.
    pub async fn audit_records(
        &self,
        table: AuditTable,
        first_id: i64,
        last_id: i64,
    ) -> Result<Vec<AuditRecord>> {
        let layout = Layout::of(table);
        Ok(match self.pool() {
            Pool::Sqlite(pool) => records_on!(pool, layout, first_id, last_id),
            Pool::Postgres(pool) => records_on!(pool, layout, first_id, last_id),
        })
    }

    /// The id range of rows created in `[since, until)`: the first id at or after `since`
    /// and the last before `until` (ids between are exported whole, so a file is always a
    /// contiguous piece of the chain). `None` when no row falls in the range.
    pub async fn audit_id_range(
        &self,
        table: AuditTable,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<(i64, i64)>> {
        let name = table.table_name();
        let first_sql = format!("SELECT MIN(id) FROM {name} WHERE created_at >= $1");
        let last_sql = format!("SELECT MAX(id) FROM {name} WHERE created_at < $1");
        let (first, last): (Option<i64>, Option<i64>) = with_pool!(self, pool => {
            let first: Option<i64> = sqlx::query_scalar(&first_sql).bind(since).fetch_one(pool).await?;
            let last: Option<i64> = sqlx::query_scalar(&last_sql).bind(until).fetch_one(pool).await?;
            (first, last)
        });
        Ok(match (first, last) {
            (Some(a), Some(b)) if a <= b => Some((a, b)),
            _ => None,
        })
    }
}

/// A verified archive file of an audit chain piece.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditArchive {
    /// `policy_audit_logs` or `action_audit_logs`.
    pub audit_table: String,
    /// First row id in the file.
    pub first_id: i64,
    /// Last row id in the file.
    pub last_id: i64,
    /// Chain head before the file.
    pub prev_hash: String,
    /// Hash of the last row.
    pub last_hash: String,
    /// Where the file is (URL and key).
    pub location: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// When it was read back and verified.
    pub verified_at: DateTime<Utc>,
    /// The audit key that signed this record, when keys are configured.
    pub key_id: Option<String>,
    /// HMAC-SHA256 of the record under that key: only a signed record lets retention
    /// delete rows and anchors `audit verify` once keys are configured.
    pub mac: Option<String>,
}

impl AuditArchive {
    /// The bytes the record's MAC covers: every field but the MAC and the time.
    fn canonical(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.str("table", "audit_archives")
            .str("audit_table", &self.audit_table)
            .i64("first_id", self.first_id)
            .i64("last_id", self.last_id)
            .str("prev_hash", &self.prev_hash)
            .str("last_hash", &self.last_hash)
            .str("location", &self.location)
            .str("sha256", &self.sha256);
        c.finish()
    }

    /// Signs the record with the signing key (no-op without keys).
    pub fn sign(&mut self, keys: Option<&AuditKeys>) {
        if let Some(keys) = keys {
            let key = keys.signing();
            self.key_id = Some(key.id().to_owned());
            self.mac = Some(key.mac(&self.canonical()));
        }
    }

    /// Whether the record may be trusted: always without keys; with keys, only when a
    /// configured key signed it, or when it is unsigned because it predates the keys: it
    /// covers unkeyed rows only (`unkeyed_boundary`: the row at its end, or the first row
    /// after it, is unkeyed, so none before it is keyed) and `audit_keyed_only` is off.
    /// Anyone with database access can insert an unsigned record; only then does it cover
    /// nothing the keys protect.
    pub fn trusted(&self, keys: Option<&AuditKeys>, unkeyed_boundary: bool) -> bool {
        let Some(keys) = keys else { return true };
        match (&self.key_id, &self.mac) {
            (Some(id), Some(mac)) => keys
                .get(id)
                .is_some_and(|k| k.mac_matches(&self.canonical(), mac)),
            (None, None) => !keys.keyed_only && unkeyed_boundary,
            _ => false,
        }
    }
}

impl Store {
    /// Records a verified archive; from then on retention may delete its rows.
    pub async fn record_archive(&self, a: &AuditArchive) -> Result<()> {
        const SQL: &str = "INSERT INTO audit_archives (audit_table, first_id, last_id, prev_hash, last_hash, location, sha256, verified_at, key_id, mac) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        let mut a = a.clone();
        a.sign(self.audit_keys.as_deref());
        with_pool!(self, pool => sqlx::query(SQL).bind(&a.audit_table).bind(a.first_id).bind(a.last_id).bind(&a.prev_hash)
            .bind(&a.last_hash).bind(&a.location).bind(&a.sha256).bind(a.verified_at).bind(&a.key_id).bind(&a.mac)
            .execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Verified archives of `table`, by first id.
    pub async fn audit_archives(&self, table: AuditTable) -> Result<Vec<AuditArchive>> {
        const SQL: &str = "SELECT audit_table, first_id, last_id, prev_hash, last_hash, location, sha256, verified_at, key_id, mac \
            FROM audit_archives WHERE audit_table = $1 ORDER BY first_id, id";
        let rows: Vec<AuditArchive> = with_pool!(self, pool => sqlx::query_as(SQL).bind(table.table_name()).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Retention for an audit chain: deletes the oldest rows created before `cutoff`, but
    /// only as far as verified archives cover them without a gap, and only up to the end
    /// of an archive (whose last hash then anchors `audit verify`); the newest row is never
    /// deleted. Returns rows deleted.
    pub async fn prune_audit(&self, table: AuditTable, cutoff: DateTime<Utc>) -> Result<u64> {
        let name = table.table_name();
        let first: Option<i64> = with_pool!(self, pool =>
            sqlx::query_scalar(&format!("SELECT MIN(id) FROM {name}")).fetch_one(pool).await?);
        let Some(first) = first else { return Ok(0) };
        let young: Option<i64> = with_pool!(self, pool =>
            sqlx::query_scalar(&format!("SELECT MIN(id) FROM {name} WHERE created_at >= $1")).bind(cutoff).fetch_one(pool).await?);
        let newest: Option<i64> = with_pool!(self, pool =>
            sqlx::query_scalar(&format!("SELECT MAX(id) FROM {name}")).fetch_one(pool).await?);
        // Rows up to `limit` are all older than the cutoff; the newest row always stays, so
        // the next append links to it.
        let limit = young
            .map_or(i64::MAX, |y| y - 1)
            .min(newest.unwrap_or(first) - 1);
        let mut covered = first - 1;
        let mut boundary = None;
        let keys = self.audit_keys.as_deref();
        // With keys, an archive record nobody signed covers nothing: the database's own
        // trigger trusts any record, so retention must not.
        let archives = self.audit_archives(table).await?;
        let key_sql = format!("SELECT key_id FROM {name} WHERE id = $1");
        for a in archives {
            if keys.is_some() && a.mac.is_none() {
                let k: Option<Option<String>> = with_pool!(self, pool =>
                    sqlx::query_scalar(&key_sql).bind(a.last_id).fetch_optional(pool).await?);
                if !a.trusted(keys, matches!(k, Some(None))) {
                    continue;
                }
            } else if !a.trusted(keys, false) {
                continue;
            }
            if a.first_id > covered + 1 {
                break;
            }
            if a.last_id > covered {
                covered = a.last_id;
                if covered <= limit {
                    boundary = Some(covered);
                }
            }
        }
        let Some(upto) = boundary else { return Ok(0) };
        let deleted = with_pool!(self, pool =>
            sqlx::query(&format!("DELETE FROM {name} WHERE id <= $1")).bind(upto).execute(pool).await?.rows_affected());
        Ok(deleted)
    }

    /// Retention for prediction history: deletes rows created before `cutoff`.
    pub async fn prune_predictions(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let deleted = with_pool!(self, pool =>
            sqlx::query("DELETE FROM prediction_history WHERE created_at < $1").bind(cutoff).execute(pool).await?.rows_affected());
        Ok(deleted)
    }
}
