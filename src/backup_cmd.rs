//! `aegis backup` and `aegis restore`: consistent, verified copies of the database.
//!
//! SQLite: `VACUUM INTO` writes a consistent copy while `serve` keeps reading and writing;
//! the copy is opened, checked (`PRAGMA integrity_check`, both audit hash chains) and
//! counted before it is renamed into place. PostgreSQL: `pg_dump --format=custom` inside
//! a snapshot exported by Aegis, so the row counts in the manifest are exactly the dump's;
//! restored with `pg_restore` into an empty database, then checked the same way. Every
//! backup gets `FILE.manifest.json` (backend, schema version, SHA-256, row counts), which
//! `restore` compares against what it restored.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use aegis_store::{AuditLog, AuditTable, Backend, Store, StoreOptions, TableCounts};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::cli::open_store;
use crate::config::Config;

/// What `FILE.manifest.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    created_at: String,
    backend: String,
    schema_version: i64,
    file: String,
    bytes: u64,
    sha256: String,
    counts: std::collections::BTreeMap<String, i64>,
}

fn manifest_path(backup: &Path) -> PathBuf {
    PathBuf::from(format!("{}.manifest.json", backup.display()))
}

fn sha256_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// Walks both audit chains; an error names the first broken row.
async fn verify_chains(store: &Store) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for table in AuditTable::ALL {
        let report = store.verify_audit(table).await?;
        if let Some(broken) = report.broken {
            bail!(
                "{}: BROKEN at row id {}: {}",
                table.table_name(),
                broken.id,
                broken.reason
            );
        }
        lines.push(format!(
            "{} {} rows intact",
            table.table_name(),
            report.rows_checked
        ));
    }
    Ok(lines)
}

/// Opens an SQLite file, checks integrity and chains, counts rows, closes it.
async fn check_sqlite(path: &Path) -> anyhow::Result<(TableCounts, Vec<String>, i64)> {
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let integrity = store.integrity_check().await?;
    if integrity != "ok" {
        bail!("{}: integrity check failed: {integrity}", path.display());
    }
    let chains = verify_chains(&store).await?;
    let counts = store.table_counts().await?;
    let schema = store.schema_version().await?;
    store.close().await;
    Ok((counts, chains, schema))
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (is it installed and on PATH?)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn counts_text(counts: &TableCounts) -> String {
    counts
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `target` names object storage rather than a local file.
fn is_url(target: &str) -> bool {
    target.starts_with("s3://") || target.starts_with("file://") || target.starts_with("memory://")
}

/// Splits `s3://bucket/dir/name` into the store URL (`s3://bucket/dir`) and the key (`name`).
fn split_url(target: &str) -> anyhow::Result<(String, String)> {
    let (scheme, rest) = target.split_once("://").context("not a URL")?;
    let (dir, name) = rest.rsplit_once('/').context("the URL names no file")?;
    if name.is_empty() || dir.is_empty() {
        bail!("`{target}` must name a file inside a bucket or folder");
    }
    Ok((format!("{scheme}://{dir}"), name.to_string()))
}

/// `aegis backup --to PATH_OR_URL`: to object storage, the backup is written and verified
/// locally first, then uploaded with its manifest.
pub async fn backup_to(config: &Config, to: &str, force: bool) -> anyhow::Result<ExitCode> {
    if !is_url(to) {
        return backup(config, Path::new(to), force).await;
    }
    let (store_url, name) = split_url(to)?;
    let objects = aegis_store::objects::Objects::open(&store_url).map_err(anyhow::Error::msg)?;
    if !force
        && objects
            .get(&name)
            .await
            .map_err(anyhow::Error::msg)?
            .is_some()
    {
        bail!("{to} exists; pass --force to replace it");
    }
    let dir = tempfile::tempdir()?;
    let local = dir.path().join(&name);
    let code = backup(config, &local, false).await?;
    objects
        .put(&name, std::fs::read(&local)?)
        .await
        .map_err(anyhow::Error::msg)?;
    objects
        .put(
            &format!("{name}.manifest.json"),
            std::fs::read(manifest_path(&local))?,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    println!("uploaded to {to}");
    Ok(code)
}

/// `aegis restore --from PATH_OR_URL`: from object storage, the backup and its manifest
/// are downloaded first.
pub async fn restore_from(config: &Config, from: &str, force: bool) -> anyhow::Result<ExitCode> {
    if !is_url(from) {
        return restore(config, Path::new(from), force).await;
    }
    let (store_url, name) = split_url(from)?;
    let objects = aegis_store::objects::Objects::open(&store_url).map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let local = dir.path().join(&name);
    let body = objects
        .get(&name)
        .await
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("{from} does not exist"))?;
    std::fs::write(&local, body)?;
    if let Some(m) = objects
        .get(&format!("{name}.manifest.json"))
        .await
        .map_err(anyhow::Error::msg)?
    {
        std::fs::write(manifest_path(&local), m)?;
    }
    restore(config, &local, force).await
}

/// `aegis backup --to PATH`.
pub async fn backup(config: &Config, to: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if to.exists() && !force {
        bail!("{} exists; pass --force to replace it", to.display());
    }
    // A dated backup into a folder of its own is the usual shape (`backups/aegis-DATE.db`):
    // the folder is made, as restore makes the database's.
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    let _ = std::fs::remove_file(&partial);
    let store = open_store(config).await?;
    let backend = store.backend();
    let (counts, chains, schema) = match backend {
        Backend::Sqlite => {
            store
                .sqlite_backup_into(&partial)
                .await
                .context("writing the copy (VACUUM INTO)")?;
            store.close().await;
            check_sqlite(&partial).await.context("verifying the copy")?
        }
        Backend::Postgres => {
            let schema = store.schema_version().await?;
            let mut snapshot = store.pg_snapshot().await?;
            let counts = snapshot.counts().await?;
            // The password goes through the environment, not the command line (`ps`).
            let (url, password) = aegis_store::split_password(&config.database_url);
            let mut dump = Command::new("pg_dump");
            dump.args([
                "--format=custom",
                "--no-owner",
                "--snapshot",
                &snapshot.id,
                "--file",
            ])
            .arg(&partial)
            .arg(&url);
            if let Some(p) = password {
                dump.env("PGPASSWORD", p);
            }
            let dumped = run(&mut dump, "pg_dump");
            snapshot.finish().await?;
            store.close().await;
            dumped?;
            // The archive must list the data of both audit tables.
            let listing = run(
                Command::new("pg_restore").arg("--list").arg(&partial),
                "pg_restore --list",
            )?;
            let listing = String::from_utf8_lossy(&listing.stdout);
            for table in AuditTable::ALL {
                let name = format!(" {} ", table.table_name());
                if !listing
                    .lines()
                    .any(|l| l.contains("TABLE DATA") && l.contains(&name))
                {
                    bail!("the dump has no data section for {}", table.table_name());
                }
            }
            (
                counts,
                vec!["audit chains are checked when restored (pg_restore --list ok)".into()],
                schema,
            )
        }
    };
    std::fs::rename(&partial, to)
        .with_context(|| format!("moving the copy to {}", to.display()))?;
    let (bytes, sha256) = sha256_file(to)?;
    let manifest = Manifest {
        format: "aegis-backup/1".into(),
        created_at: chrono::Utc::now().to_rfc3339(),
        backend: match backend {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres => "postgres".into(),
        },
        schema_version: schema,
        file: to
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        sha256: sha256.clone(),
        counts: counts.iter().cloned().collect(),
    };
    std::fs::write(manifest_path(to), serde_json::to_vec_pretty(&manifest)?)?;
    println!(
        "backup written: {} ({bytes} bytes, sha256 {sha256})",
        to.display()
    );
    for line in chains {
        println!("  {line}");
    }
    println!("  rows: {}", counts_text(&counts));
    println!("  manifest: {}", manifest_path(to).display());
    Ok(ExitCode::SUCCESS)
}

/// `aegis restore --from PATH`.
pub async fn restore(config: &Config, from: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let manifest: Option<Manifest> = match std::fs::read(manifest_path(from)) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).context("reading the backup manifest")?),
        Err(_) => {
            eprintln!(
                "warning: no {} beside the backup; row counts cannot be compared",
                manifest_path(from).display()
            );
            None
        }
    };
    if let Some(m) = &manifest {
        let (_, sha) = sha256_file(from)?;
        if sha != m.sha256 {
            bail!(
                "{}: checksum differs from its manifest (damaged or replaced)",
                from.display()
            );
        }
    }
    let url = &config.database_url;
    let (counts, chains) = if url.starts_with("sqlite:") {
        let target = aegis_store::sqlite_path(url)?;
        if target.exists() {
            if !force {
                bail!(
                    "{} exists; stop aegis and pass --force to move it aside before restoring",
                    target.display()
                );
            }
            let aside = PathBuf::from(format!(
                "{}.pre-restore-{}",
                target.display(),
                chrono::Utc::now().timestamp()
            ));
            std::fs::rename(&target, &aside)?;
            for ext in ["-wal", "-shm"] {
                let side = PathBuf::from(format!("{}{ext}", target.display()));
                if side.exists() {
                    std::fs::rename(&side, format!("{}{ext}", aside.display()))?;
                }
            }
            println!("moved the existing database aside: {}", aside.display());
        }
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let partial = PathBuf::from(format!("{}.restoring", target.display()));
        std::fs::copy(from, &partial).with_context(|| format!("copying {}", from.display()))?;
        let (counts, chains, _) = check_sqlite(&partial)
            .await
            .context("verifying the restored copy")?;
        std::fs::rename(&partial, &target)?;
        (counts, chains)
    } else {
        if aegis_store::postgres_has_aegis_tables(url).await? {
            bail!(
                "the target PostgreSQL database already holds Aegis tables; restore into an empty database"
            );
        }
        let (plain, password) = aegis_store::split_password(url);
        let mut restore = Command::new("pg_restore");
        restore
            .args(["--no-owner", "--exit-on-error", "--dbname", &plain])
            .arg(from);
        if let Some(p) = password {
            restore.env("PGPASSWORD", p);
        }
        run(&mut restore, "pg_restore")?;
        let store = open_store(config).await?;
        let chains = verify_chains(&store).await?;
        let counts = store.table_counts().await?;
        store.close().await;
        (counts, chains)
    };
    if let Some(m) = &manifest {
        let restored: std::collections::BTreeMap<String, i64> = counts.iter().cloned().collect();
        if restored != m.counts {
            bail!(
                "restored row counts differ from the manifest: {restored:?} vs {:?}",
                m.counts
            );
        }
    }
    println!(
        "restored {} into {}",
        from.display(),
        aegis_store::redact_url(url)
    );
    for line in chains {
        println!("  {line}");
    }
    println!("  rows: {}", counts_text(&counts));
    if manifest.is_some() {
        println!("  row counts match the backup manifest");
    }
    Ok(ExitCode::SUCCESS)
}
