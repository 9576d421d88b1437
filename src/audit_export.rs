//! `aegis audit export` and `aegis audit verify-archive`: the audit chains as Parquet
//! files, one contiguous piece of a chain per file, partitioned by day, each with a
//! manifest naming the chain head before it and after it, so an archive verifies on its own.
//!
//! Layout under the target (a folder or `s3://bucket/prefix`):
//! `audit/TABLE/day=YYYY-MM-DD/FIRSTID-LASTID.parquet` and `….parquet.manifest.json`.
//! Arrow schema: `id` Int64, the table's hashed columns in hash order (text as Utf8,
//! nullable where the table allows null; integers Int64; times Timestamp(µs, UTC)), then
//! `prev_hash` and `hash` (Utf8). A file starts a new day when a row's UTC day is later than
//! every row before it, so rows stay in id order and files never split the chain oddly.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use aegis_store::objects::Objects;
use aegis_store::{
    AuditKeys, AuditKind, AuditRecord, AuditTable, AuditValue, audit_columns, verify_records,
};
use anyhow::{Context, bail};
use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::cli::open_store;
use crate::config::Config;

/// Rows read from the database per query.
const PAGE: i64 = 10_000;

/// What `….manifest.json` records about one file.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchiveManifest {
    format: String,
    table: String,
    day: String,
    first_id: i64,
    last_id: i64,
    rows: usize,
    /// The chain head before the first row (the previous row's hash, or the genesis hash).
    prev_hash: String,
    /// The hash of the last row: the chain head after this file.
    last_hash: String,
    sha256: String,
    exported_at: String,
    /// The audit key that signed the manifest (with `audit_key` configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    /// HMAC-SHA256 under that key of the manifest without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

impl ArchiveManifest {
    /// The bytes the MAC covers: the manifest as JSON without its MAC.
    fn signed_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut unsigned = serde_json::to_value(self)?;
        if let Some(o) = unsigned.as_object_mut() {
            o.remove("mac");
        }
        Ok(serde_json::to_vec(&unsigned)?)
    }

    /// Signs with the signing key (no-op without keys).
    fn sign(&mut self, keys: Option<&AuditKeys>) -> anyhow::Result<()> {
        if let Some(keys) = keys {
            let key = keys.signing();
            self.key_id = Some(key.id().to_owned());
            self.mac = None;
            self.mac = Some(key.mac(&self.signed_bytes()?));
        }
        Ok(())
    }

    /// Checks the signature: with keys, a manifest must be signed by a configured key
    /// (an unsigned one passes only while `audit_keyed_only` is off: it predates the keys).
    fn check_signature(&self, keys: Option<&AuditKeys>) -> anyhow::Result<()> {
        let Some(keys) = keys else { return Ok(()) };
        match (&self.key_id, &self.mac) {
            (Some(id), Some(mac)) => {
                let key = keys.get(id).with_context(|| {
                    format!("the manifest is signed with audit key `{id}`, which is not configured")
                })?;
                if !key.mac_matches(&self.signed_bytes()?, mac) {
                    bail!("the manifest's signature does not match: it was changed");
                }
                Ok(())
            }
            (None, None) if !keys.keyed_only => Ok(()),
            (None, None) => bail!("the manifest is not signed, and audit_keyed_only requires it"),
            _ => bail!("the manifest's signature is incomplete"),
        }
    }
}

/// Parses `2026-11-30` (midnight UTC) or an RFC 3339 time.
pub fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).context("midnight")?.and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("`{s}` is neither a date (2026-11-30) nor an RFC 3339 time"))
}

fn schema(table: AuditTable) -> Arc<Schema> {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    for (name, kind) in audit_columns(table) {
        fields.push(match kind {
            AuditKind::Text => Field::new(name, DataType::Utf8, false),
            AuditKind::OptText => Field::new(name, DataType::Utf8, true),
            AuditKind::Int => Field::new(name, DataType::Int64, false),
            AuditKind::Time => Field::new(
                name,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        });
    }
    fields.push(Field::new("key_id", DataType::Utf8, true));
    fields.push(Field::new("prev_hash", DataType::Utf8, false));
    fields.push(Field::new("hash", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

fn to_batch(table: AuditTable, records: &[AuditRecord]) -> anyhow::Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        records.iter().map(|r| r.id),
    ))];
    for (i, (_, kind)) in audit_columns(table).into_iter().enumerate() {
        let array: ArrayRef = match kind {
            AuditKind::Text | AuditKind::OptText => Arc::new(StringArray::from_iter(
                records.iter().map(|r| match &r.values[i] {
                    AuditValue::Text(s) => Some(s.clone()),
                    AuditValue::OptText(s) => s.clone(),
                    _ => None,
                }),
            )),
            AuditKind::Int => Arc::new(Int64Array::from_iter(records.iter().map(
                |r| match &r.values[i] {
                    AuditValue::Int(v) => Some(*v),
                    _ => None,
                },
            ))),
            AuditKind::Time => Arc::new(
                TimestampMicrosecondArray::from_iter(records.iter().map(|r| match &r.values[i] {
                    AuditValue::Time(t) => Some(t.timestamp_micros()),
                    _ => None,
                }))
                .with_timezone("UTC"),
            ),
        };
        columns.push(array);
    }
    columns.push(Arc::new(StringArray::from_iter(
        records.iter().map(|r| r.key_id.as_deref()),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        records.iter().map(|r| r.prev_hash.as_str()),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        records.iter().map(|r| r.hash.as_str()),
    )));
    Ok(RecordBatch::try_new(schema(table), columns)?)
}

fn from_batches(table: AuditTable, batches: &[RecordBatch]) -> anyhow::Result<Vec<AuditRecord>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    let kinds = audit_columns(table);
    let mut out = Vec::new();
    for b in batches {
        // Files written before the keyed chain have no `key_id` column.
        let keyed = b.schema().index_of("key_id").is_ok();
        let extra = if keyed { 4 } else { 3 };
        if b.num_columns() != kinds.len() + extra {
            bail!(
                "the file has {} columns, {} has {}",
                b.num_columns(),
                table.table_name(),
                kinds.len() + extra
            );
        }
        let ids = b
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .context("`id` is not Int64")?;
        let key_ids = if keyed {
            Some(
                b.column(kinds.len() + 1)
                    .as_string_opt::<i32>()
                    .context("`key_id` is not text")?,
            )
        } else {
            None
        };
        let prev = b
            .column(kinds.len() + extra - 2)
            .as_string_opt::<i32>()
            .context("`prev_hash` is not text")?;
        let hash = b
            .column(kinds.len() + extra - 1)
            .as_string_opt::<i32>()
            .context("`hash` is not text")?;
        for r in 0..b.num_rows() {
            let mut values = Vec::with_capacity(kinds.len());
            for (i, (name, kind)) in kinds.iter().enumerate() {
                let col = b.column(i + 1);
                let missing = || {
                    anyhow::anyhow!(
                        "row {}: `{name}` has the wrong type or is null",
                        ids.value(r)
                    )
                };
                values.push(match kind {
                    AuditKind::Text => AuditValue::Text(
                        col.as_string_opt::<i32>()
                            .filter(|c| c.is_valid(r))
                            .ok_or_else(missing)?
                            .value(r)
                            .to_string(),
                    ),
                    AuditKind::OptText => {
                        let c = col.as_string_opt::<i32>().ok_or_else(missing)?;
                        AuditValue::OptText(c.is_valid(r).then(|| c.value(r).to_string()))
                    }
                    AuditKind::Int => AuditValue::Int(
                        col.as_primitive_opt::<Int64Type>()
                            .filter(|c| c.is_valid(r))
                            .ok_or_else(missing)?
                            .value(r),
                    ),
                    AuditKind::Time => {
                        let micros = col
                            .as_primitive_opt::<TimestampMicrosecondType>()
                            .filter(|c| c.is_valid(r))
                            .ok_or_else(missing)?
                            .value(r);
                        AuditValue::Time(
                            DateTime::from_timestamp_micros(micros).ok_or_else(missing)?,
                        )
                    }
                });
            }
            out.push(AuditRecord {
                id: ids.value(r),
                values,
                key_id: key_ids
                    .filter(|k| k.is_valid(r))
                    .map(|k| k.value(r).to_string()),
                prev_hash: prev.value(r).to_string(),
                hash: hash.value(r).to_string(),
            });
        }
    }
    Ok(out)
}

fn created_day(r: &AuditRecord) -> NaiveDate {
    match r.values.first() {
        Some(AuditValue::Time(t)) => t.date_naive(),
        _ => NaiveDate::MIN,
    }
}

fn table_of(name: &str) -> Option<AuditTable> {
    AuditTable::ALL.into_iter().find(|t| t.table_name() == name)
}

/// Writes one file and its manifest (the rows must verify first), reads the file back and
/// verifies it, and records it in `audit_archives`, which lets retention delete its rows.
async fn write_file(
    store: &aegis_store::Store,
    objects: &Objects,
    table: AuditTable,
    day: NaiveDate,
    records: &[AuditRecord],
) -> anyhow::Result<String> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        bail!("nothing to write");
    };
    let keys = store.audit_keys();
    if let Some(broken) = verify_records(table, records, &first.prev_hash, keys) {
        bail!(
            "{}: row {} does not verify ({}); nothing exported for it",
            table.table_name(),
            broken.id,
            broken.reason
        );
    }
    let batch = to_batch(table, records)?;
    let mut bytes = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    let key = format!(
        "audit/{}/day={day}/{:012}-{:012}.parquet",
        table.table_name(),
        first.id,
        last.id
    );
    let mut manifest = ArchiveManifest {
        format: "aegis-audit-archive/1".into(),
        table: table.table_name().into(),
        day: day.to_string(),
        first_id: first.id,
        last_id: last.id,
        rows: records.len(),
        prev_hash: first.prev_hash.clone(),
        last_hash: last.hash.clone(),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        exported_at: Utc::now().to_rfc3339(),
        key_id: None,
        mac: None,
    };
    manifest.sign(keys)?;
    objects.put(&key, bytes).await.map_err(anyhow::Error::msg)?;
    objects
        .put(
            &format!("{key}.manifest.json"),
            serde_json::to_vec_pretty(&manifest)?,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    // Read back what the store now holds: only a file that verifies counts as archived.
    verify_file(objects, &key, keys)
        .await
        .with_context(|| format!("{key}: the written file does not verify"))?;
    store
        .record_archive(&aegis_store::AuditArchive {
            audit_table: table.table_name().into(),
            first_id: manifest.first_id,
            last_id: manifest.last_id,
            prev_hash: manifest.prev_hash.clone(),
            last_hash: manifest.last_hash.clone(),
            location: format!("{}/{key}", objects.url().trim_end_matches('/')),
            sha256: manifest.sha256.clone(),
            verified_at: Utc::now(),
            key_id: None,
            mac: None,
        })
        .await?;
    Ok(key)
}

/// `aegis audit export --since T --until T --to URL`.
pub async fn export(
    config: &Config,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    to: &str,
) -> anyhow::Result<ExitCode> {
    if since >= until {
        bail!("--since must be before --until");
    }
    let objects = Objects::open(to).map_err(anyhow::Error::msg)?;
    let store = open_store(config).await?;
    let mut files = 0;
    for table in AuditTable::ALL {
        let Some((first, last)) = store.audit_id_range(table, since, until).await? else {
            println!("{}: no rows in the range", table.table_name());
            continue;
        };
        for key in export_ids(&store, &objects, table, first, last).await? {
            println!("{key}");
            files += 1;
        }
    }
    store.close().await;
    println!("exported {files} files to {to}");
    Ok(ExitCode::SUCCESS)
}

/// The scheduled export: every row of both chains not yet in a verified archive and
/// created before `until`. Returns the files written.
pub async fn export_pending(
    store: &aegis_store::Store,
    objects: &Objects,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    for table in AuditTable::ALL {
        let done = store
            .audit_archives(table)
            .await?
            .iter()
            .map(|a| a.last_id)
            .max()
            .unwrap_or(0);
        let Some((_, last)) = store
            .audit_id_range(table, DateTime::<Utc>::UNIX_EPOCH, until)
            .await?
        else {
            continue;
        };
        if last > done {
            keys.extend(export_ids(store, objects, table, done + 1, last).await?);
        }
    }
    Ok(keys)
}

/// Exports rows `first..=last` of `table`, one file per (monotone) UTC day.
async fn export_ids(
    store: &aegis_store::Store,
    objects: &Objects,
    table: AuditTable,
    first: i64,
    last: i64,
) -> anyhow::Result<Vec<String>> {
    // The row before the range must be what the first exported row links to.
    let before = if first > 1 {
        store
            .audit_records(table, first - 1, first - 1)
            .await?
            .pop()
    } else {
        None
    };
    let mut head = match before {
        Some(r) => r.hash,
        None if first <= 1 => aegis_core::GENESIS_HASH.to_owned(),
        // Pruned: the archive ending just before anchors the range.
        None => store
            .audit_archives(table)
            .await?
            .into_iter()
            .find(|a| a.last_id == first - 1)
            .map(|a| a.last_hash)
            .context("the row before the range is gone and no verified archive ends there")?,
    };
    let mut keys = Vec::new();
    let mut day: Option<NaiveDate> = None;
    let mut pending: Vec<AuditRecord> = Vec::new();
    let mut next = first;
    loop {
        let page = if next <= last {
            store
                .audit_records(table, next, (next + PAGE - 1).min(last))
                .await?
        } else {
            Vec::new()
        };
        let done = page.is_empty();
        next = page.last().map_or(last, |r| r.id) + 1;
        for r in page {
            let d = created_day(&r).max(day.unwrap_or(NaiveDate::MIN));
            if let Some(current) = day
                && d > current
                && !pending.is_empty()
            {
                keys.push(flush(store, objects, table, current, &mut pending, &mut head).await?);
            }
            day = Some(d);
            pending.push(r);
        }
        if done {
            break;
        }
    }
    if let (Some(current), false) = (day, pending.is_empty()) {
        keys.push(flush(store, objects, table, current, &mut pending, &mut head).await?);
    }
    Ok(keys)
}

async fn flush(
    store: &aegis_store::Store,
    objects: &Objects,
    table: AuditTable,
    day: NaiveDate,
    pending: &mut Vec<AuditRecord>,
    head: &mut String,
) -> anyhow::Result<String> {
    if pending.first().map(|r| r.prev_hash.as_str()) != Some(head.as_str()) {
        bail!(
            "{}: row {} does not link to the row before it",
            table.table_name(),
            pending.first().map_or(0, |r| r.id)
        );
    }
    let key = write_file(store, objects, table, day, pending).await?;
    if let Some(r) = pending.last() {
        *head = r.hash.clone();
    }
    let line = format!("{key}: {} rows", pending.len());
    pending.clear();
    Ok(line)
}

/// One archive file against its manifest and its rows' hashes.
async fn verify_file(
    objects: &Objects,
    key: &str,
    keys: Option<&AuditKeys>,
) -> anyhow::Result<ArchiveManifest> {
    let manifest: ArchiveManifest = serde_json::from_slice(
        &objects
            .get(&format!("{key}.manifest.json"))
            .await
            .map_err(anyhow::Error::msg)?
            .context("no manifest")?,
    )?;
    manifest.check_signature(keys)?;
    let table = table_of(&manifest.table).context("unknown table")?;
    let bytes = objects
        .get(key)
        .await
        .map_err(anyhow::Error::msg)?
        .context("missing")?;
    if hex::encode(sha2::Sha256::digest(&bytes)) != manifest.sha256 {
        bail!("checksum differs from the manifest");
    }
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )?
    .build()?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    let records = from_batches(table, &batches)?;
    if records.len() != manifest.rows
        || records.first().map(|r| r.id) != Some(manifest.first_id)
        || records.last().map(|r| r.id) != Some(manifest.last_id)
    {
        bail!("rows or ids differ from the manifest");
    }
    if let Some(broken) = verify_records(table, &records, &manifest.prev_hash, keys) {
        bail!("row {}: {}", broken.id, broken.reason);
    }
    if records.last().map(|r| r.hash.as_str()) != Some(manifest.last_hash.as_str()) {
        bail!("the last hash differs from the manifest");
    }
    Ok(manifest)
}

/// `aegis audit verify-archive --from URL`: every file against its manifest, its rows'
/// hashes, and the files of a table against each other where they meet.
pub async fn verify_archive(
    from: &str,
    audit_keys: Option<&AuditKeys>,
) -> anyhow::Result<ExitCode> {
    let objects = Objects::open(from).map_err(anyhow::Error::msg)?;
    let keys = objects.list("audit").await.map_err(anyhow::Error::msg)?;
    let mut by_table: BTreeMap<String, Vec<ArchiveManifest>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut rows = 0usize;
    for key in keys.iter().filter(|k| k.ends_with(".parquet")) {
        let result = verify_file(&objects, key, audit_keys).await;
        match result {
            Ok(m) => {
                rows += m.rows;
                by_table.entry(m.table.clone()).or_default().push(m);
            }
            Err(e) => failures.push(format!("{key}: {e:#}")),
        }
    }
    for (table, files) in &mut by_table {
        files.sort_by_key(|m| m.first_id);
        for pair in files.windows(2) {
            if pair[1].first_id == pair[0].last_id + 1 && pair[1].prev_hash != pair[0].last_hash {
                failures.push(format!(
                    "{table}: the file starting at row {} does not continue the one ending at row {}",
                    pair[1].first_id, pair[0].last_id
                ));
            }
        }
    }
    let files: usize = by_table.values().map(Vec::len).sum();
    if failures.is_empty() {
        println!("{from}: {files} files, {rows} rows, every chain piece intact");
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            println!("BROKEN {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}
