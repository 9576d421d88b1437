//! The command line (clap) and the small commands that need no server.
//!
//! Long because clap's command tree is declared here in full, so `aegis --help` and this file
//! say the same; the commands themselves live in their own modules.

use std::path::PathBuf;
use std::process::ExitCode;

use aegis_store::{AuditLog, AuditTable, Store, StoreOptions};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Loaded};
use crate::{
    audit_export, backtest_cmd, backup_cmd, demo, logging, model_cmd, policy_cmd, replay,
    retention, serve,
};

/// Policy-driven self-healing for Kubernetes: ingest, detect, decide, remediate, audit.
#[derive(Debug, Parser)]
#[command(name = "aegis", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command that reads the configuration takes.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file; `AEGIS_*` environment variables override it.
    #[arg(long, short = 'c', env = "AEGIS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: every endpoint on one listener (default 127.0.0.1:3000).
    Serve(ConfigArgs),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Validate and test policy files (YAML or JSON, a file or a folder).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print the OpenAPI document of the HTTP API (JSON).
    Openapi,
    /// Write a verified, consistent backup of the database while `serve` runs.
    Backup {
        #[command(flatten)]
        config: ConfigArgs,
        /// The backup file (SQLite: a database file; PostgreSQL: a `pg_dump` custom-format
        /// archive), or an object-store URL (`s3://bucket/dir/file`); a
        /// `….manifest.json` with row counts and a checksum goes beside it.
        #[arg(long, value_name = "PATH_OR_URL")]
        to: String,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Restore a backup into the configured database (stop `serve` first).
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        /// The backup written by `aegis backup` (a file or an object-store URL).
        #[arg(long, value_name = "PATH_OR_URL")]
        from: String,
        /// SQLite: move an existing database aside (`.pre-restore-UNIXTIME`) instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Run retention (and the scheduled audit export, when configured) once.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Run the streaming detector over recorded series (CSV `timestamp,value` or
    /// `timestamp,series,value`; a file or a folder) in event time; writes
    /// `timestamp,value,anomaly_score,is_anomaly` per input row, in order. With `--labels`
    /// (NAB's `combined_windows.json`), prints NAB scores. `aegis backtest score` scores a
    /// results folder.
    #[command(args_conflicts_with_subcommands = true)]
    Backtest {
        #[command(subcommand)]
        command: Option<BacktestCommand>,
        /// The recorded series: a CSV file, or a folder (every `*.csv` below it).
        #[arg(long, value_name = "FILE_OR_DIR")]
        input: Option<PathBuf>,
        /// Where to write the scores: a file (`-` for standard output), or a folder for a
        /// folder input (results mirror the input's layout).
        #[arg(long, value_name = "FILE_OR_DIR")]
        output: Option<PathBuf>,
        /// Labelled windows (NAB `combined_windows.json`, keys relative to the input
        /// folder): print each profile's optimised and default-threshold scores.
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
        /// Scoring profiles (NAB `profiles.json`); NAB v1.1's three by default.
        #[arg(long, value_name = "FILE")]
        profiles: Option<PathBuf>,
        /// Points before the first model (as live).
        #[arg(long, default_value_t = aegis_engine::StreamConfig::default().warmup_points)]
        warmup_points: usize,
        /// Points between refits on recent normal points.
        #[arg(long, default_value_t = aegis_engine::StreamConfig::default().retrain_every)]
        retrain_every: usize,
        /// Score at or above which a point is anomalous.
        #[arg(long, default_value_t = aegis_engine::StreamConfig::default().threshold)]
        threshold: f64,
    },
    /// Replay recorded telemetry (JSON Lines of samples and log lines) through the whole
    /// pipeline in event time — windows, detectors, policies, the dry-run executor, the
    /// audit trails — and write what it detected, decided and would have done (JSON).
    Replay {
        /// The recorded telemetry.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Where to write the report (`-` for standard output).
        #[arg(long, value_name = "FILE", default_value = "-")]
        output: PathBuf,
        /// Refuse input spanning more event time than this (exit 2 naming the first sample
        /// beyond it): a sample stamped years off is a clock or an export gone wrong.
        #[arg(long, value_name = "DAYS", default_value_t = replay::DEFAULT_MAX_SPAN_DAYS)]
        max_span_days: u32,
    },
    /// A self-contained demonstration: generated metrics and logs with a CPU spike, a crash
    /// loop and a memory leak at peak hours, replayed through the real pipeline against the
    /// dry-run executor, with a readable report.
    Demo {
        /// One scenario (`cpu_spike`, `crash_loop`, `peak_hours`, `kube_system`) instead of
        /// all of them.
        #[arg(long, default_value = "demo")]
        scenario: String,
        /// Write the generated telemetry (JSON Lines for `aegis replay`) instead of running.
        #[arg(long, value_name = "FILE")]
        write_telemetry: Option<PathBuf>,
    },
    /// Fit and apply detector models offline.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Decide actions held for approval, against a running server (token in `AEGIS_TOKEN`).
    Approvals {
        /// The server (`AEGIS_URL`).
        #[arg(
            long,
            env = "AEGIS_URL",
            default_value = "http://127.0.0.1:3000",
            global = true
        )]
        url: String,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// See what the log template miner makes of a log file.
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// List approvals with what each would do (pending ones by default).
    List {
        /// `pending`, `approved`, `rejected`, `expired` or `all`.
        #[arg(long, default_value = "pending")]
        status: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve: the action goes through every guard again and is carried out.
    Approve {
        /// The approval id (from `list`, or the notification).
        id: String,
        /// Why (recorded with the decision).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject: nothing is done.
    Reject {
        /// The approval id.
        id: String,
        /// Why (recorded with the decision).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum LogsCommand {
    /// Run the Drain miner the engine runs on Loki streams over a log file (one line per
    /// entry); print the templates with their counts, most frequent first (CSV, or JSON
    /// with `--json`).
    Templates {
        /// The log file.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Also write each line's template id: CSV `line,template_id`, or JSON (`lines` and
        /// `templates`) when the name ends in `.json`.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print the templates as JSON instead of CSV.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Export what is due, then delete prediction history and archived audit rows past
    /// their retention (`retention_predictions_days`, `retention_audit_days`).
    Run(ConfigArgs),
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Fit a model on CSV (header row, numeric columns), Parquet or Arrow IPC data and write the model file.
    Fit {
        /// Model kind; `isolation-forest` is the one offline kind.
        #[arg(long, default_value = "isolation-forest")]
        kind: String,
        /// The training data.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Where to write the model (JSON).
        #[arg(long, value_name = "MODEL")]
        output: PathBuf,
        /// Trees.
        #[arg(long, default_value_t = 100)]
        trees: usize,
        /// Subsample size ψ.
        #[arg(long, default_value_t = 256)]
        sample_size: usize,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Extended forest with this extension level (0 ≤ level < columns).
        #[arg(long)]
        extension_level: Option<usize>,
        /// Columns to leave out (labels, ids); repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        /// Score threshold stored with the model (default 0.6, the batch forests' threshold).
        #[arg(long, default_value_t = 0.6, conflicts_with = "contamination")]
        threshold: f64,
        /// Instead of a threshold: the share of the training rows expected to be anomalous
        /// (0 < c ≤ 0.5); the threshold becomes the score that flags that share.
        #[arg(long)]
        contamination: Option<f64>,
    },
    /// Score every row of a CSV, Parquet or Arrow IPC file; writes one `score` per input row, in order (CSV).
    Score {
        /// The model file.
        #[arg(long, value_name = "MODEL")]
        model: PathBuf,
        /// The data; its columns must include the model's feature schema.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Where to write the scores (CSV with a `score` column; `-` for standard output).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// `aegis backtest` commands.
#[derive(Debug, Subcommand)]
enum BacktestCommand {
    /// Score a results folder in NAB's layout against labelled windows, by NAB's rules.
    Score {
        /// The data folder the results were computed from (`<category>/<name>.csv`).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The results folder: `<category>/<name>.csv` (or NAB's `<detector>_<name>.csv`)
        /// with `timestamp` and `anomaly_score` columns.
        #[arg(long, value_name = "DIR")]
        results: PathBuf,
        /// Labelled windows (NAB `combined_windows.json`).
        #[arg(long, value_name = "FILE")]
        labels: PathBuf,
        /// Scoring profiles (NAB `profiles.json`); NAB v1.1's three by default.
        #[arg(long, value_name = "FILE")]
        profiles: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (file + environment) as TOML, secrets redacted.
    Print(ConfigArgs),
    /// Print the configuration reference (every key, its section, environment variable,
    /// default and meaning) as Markdown, generated from the code's documentation.
    Reference {
        /// Rewrite the generated part of this Markdown file (between its markers) instead.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate policy files; exit 1 with file:line and a message on error.
    Check {
        /// A policy file or a folder of them.
        path: PathBuf,
    },
    /// Run policy test cases (`*_test.yaml`); prints `N passed, M failed`, exit 1 on failure.
    Test {
        /// A folder with policies and test files, or one test file.
        path: PathBuf,
        /// Where the policies are, when not beside the tests.
        #[arg(long, value_name = "PATH")]
        policies: Option<PathBuf>,
        /// Print passing cases too.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Evaluate a candidate policy set against the decisions recorded in the audit log and
    /// print every one it would have decided differently from the live set.
    Replay {
        #[command(flatten)]
        config: ConfigArgs,
        /// The candidate policies (a file or a folder).
        #[arg(long, value_name = "PATH")]
        policies: PathBuf,
        /// How far back: `7d`, `24h`, `90m`, a date (`2026-11-24`) or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Which decisions: `self_healing` (the engine's and the executor's) or `api_access`.
        #[arg(long = "type", default_value = "self_healing")]
        policy_type: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user (the first admin, for instance); the password comes from standard input
    /// with `--password-stdin`, or from a prompt.
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// The account's email.
        #[arg(long)]
        email: String,
        /// `admin`, `user`, `auditor` or `service` (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the audit hash chains; exit 1 naming the first broken row.
    Verify(ConfigArgs),
    /// Export audit rows created in [since, until) as Parquet files partitioned by day,
    /// each with a manifest of its chain head, to a folder or `s3://bucket/prefix`.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// First day or time (`2026-11-30` or RFC 3339).
        #[arg(long)]
        since: String,
        /// End, exclusive (default now).
        #[arg(long)]
        until: Option<String>,
        /// Folder or object-store URL of the archive.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Verify an exported archive on its own (no database needed); exit 1 naming the
    /// first broken file and row.
    VerifyArchive {
        /// Folder or object-store URL of the archive.
        #[arg(long, value_name = "URL")]
        from: String,
    },
}

/// Loads the configuration or explains why not (exit 2).
fn load(args: &ConfigArgs) -> Result<Loaded, ExitCode> {
    Config::load(args.config.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// `aegis config reference`: the generated reference on stdout, or spliced into a file.
fn config_reference(write: Option<&std::path::Path>) -> ExitCode {
    use crate::config::reference;
    let Some(path) = write else {
        print!("{}", reference::markdown());
        return ExitCode::SUCCESS;
    };
    let document = match std::fs::read_to_string(path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let Some(updated) = reference::splice(&document) else {
        eprintln!(
            "error: `{}` has no generated section: add the lines\n{}\n{}",
            path.display(),
            reference::BEGIN,
            reference::END
        );
        return ExitCode::FAILURE;
    };
    if let Err(e) = std::fs::write(path, updated) {
        eprintln!("error: cannot write `{}`: {e}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> ExitCode {
    let args = match &cli.command {
        // Policy files need neither configuration nor a runtime.
        Command::Policy { command } => match command {
            PolicyCommand::Check { path } => return policy_cmd::check(path),
            PolicyCommand::Test {
                path,
                policies,
                verbose,
            } => return policy_cmd::test(path, policies.as_deref(), *verbose),
            // History is in the database: this one needs the configuration.
            PolicyCommand::Replay { config, .. } => config,
        },
        Command::Openapi => {
            println!("{}", aegis_api::openapi_json());
            return ExitCode::SUCCESS;
        }
        Command::Config {
            command: ConfigCommand::Reference { write },
        } => return config_reference(write.as_deref()),
        Command::Audit {
            command: AuditCommand::VerifyArchive { from },
        } => {
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            // The archive may be checked away from the server: the keys come from the
            // environment (AEGIS_AUDIT_KEY, AEGIS_AUDIT_PREVIOUS_KEYS) when set.
            let keys = match Config::load(None).map(|l| l.config.audit_keys()) {
                Ok(Ok(keys)) => keys,
                Ok(Err(e)) => {
                    eprintln!("error: audit_key: {e}");
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            return match runtime.block_on(audit_export::verify_archive(from, keys.as_ref())) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Backtest {
            command:
                Some(BacktestCommand::Score {
                    data,
                    results,
                    labels,
                    profiles,
                }),
            ..
        } => {
            return backtest_cmd::score(data, results, labels, profiles.as_deref());
        }
        Command::Backtest {
            command: None,
            input,
            output,
            labels,
            profiles,
            warmup_points,
            retrain_every,
            threshold,
        } => {
            let (Some(input), Some(output)) = (input, output) else {
                eprintln!(
                    "error: `aegis backtest` needs --input and --output (or the `score` command)"
                );
                return ExitCode::from(2);
            };
            let config = aegis_engine::StreamConfig {
                warmup_points: *warmup_points,
                retrain_every: *retrain_every,
                threshold: *threshold,
                ..Default::default()
            };
            return backtest_cmd::run(backtest_cmd::Request {
                input,
                output,
                labels: labels.as_deref(),
                profiles: profiles.as_deref(),
                config,
            });
        }
        Command::Demo {
            scenario,
            write_telemetry,
        } => {
            return in_runtime(demo::run(scenario, write_telemetry.as_deref()));
        }
        Command::Replay {
            input,
            output,
            max_span_days,
        } => {
            return in_runtime(replay::run(input, output, *max_span_days));
        }
        Command::Approvals { url, command } => {
            use crate::approvals_cmd::{ApprovalsAction, run};
            let action = match command {
                ApprovalsCommand::List { status, json } => ApprovalsAction::List {
                    status: status.clone(),
                    json: *json,
                },
                ApprovalsCommand::Approve { id, reason } => ApprovalsAction::Approve {
                    id: id.clone(),
                    reason: reason.clone(),
                },
                ApprovalsCommand::Reject { id, reason } => ApprovalsAction::Reject {
                    id: id.clone(),
                    reason: reason.clone(),
                },
            };
            // The token is read here, not as a flag: it would show in `ps` and shell history.
            let token = std::env::var("AEGIS_TOKEN").ok();
            return in_runtime(run(url, token, action));
        }
        Command::Logs {
            command:
                LogsCommand::Templates {
                    input,
                    output,
                    json,
                },
        } => {
            return match crate::logs_cmd::templates(input, output.as_deref(), *json) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Model { command } => {
            return match command {
                ModelCommand::Fit {
                    kind,
                    input,
                    output,
                    trees,
                    sample_size,
                    seed,
                    extension_level,
                    exclude,
                    threshold,
                    contamination,
                } => model_cmd::fit(model_cmd::FitArgs {
                    kind,
                    input,
                    output,
                    params: aegis_detectors::IsolationForestParams {
                        trees: *trees,
                        sample_size: *sample_size,
                        seed: *seed,
                        extension_level: *extension_level,
                    },
                    exclude,
                    threshold: *threshold,
                    contamination: *contamination,
                }),
                ModelCommand::Score {
                    model,
                    input,
                    output,
                } => model_cmd::score(model, input, output),
            };
        }
        Command::Serve(args)
        | Command::User {
            command: UserCommand::Create { config: args, .. },
        }
        | Command::Config {
            command: ConfigCommand::Print(args),
        }
        | Command::Audit {
            command: AuditCommand::Verify(args),
        }
        | Command::Audit {
            command: AuditCommand::Export { config: args, .. },
        }
        | Command::Retention {
            command: RetentionCommand::Run(args),
        }
        | Command::Backup { config: args, .. }
        | Command::Restore { config: args, .. } => args,
    };
    let loaded = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Command::Config {
        command: ConfigCommand::Print(_),
    } = cli.command
    {
        print!("{}", loaded.config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let telemetry = match logging::init(&loaded.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    for name in &loaded.unknown_env {
        tracing::warn!(variable = %name, "environment variable names no Aegis setting; ignored");
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => serve::run(loaded.config).await.map(|()| ExitCode::SUCCESS),
            Command::Audit {
                command: AuditCommand::Verify(_),
            } => audit_verify(&loaded.config).await,
            Command::Audit {
                command:
                    AuditCommand::Export {
                        since, until, to, ..
                    },
            } => {
                let since = audit_export::parse_time(&since)?;
                let until = until
                    .as_deref()
                    .map(audit_export::parse_time)
                    .transpose()?
                    .unwrap_or_else(chrono::Utc::now);
                audit_export::export(&loaded.config, since, until, &to).await
            }
            Command::Audit {
                command: AuditCommand::VerifyArchive { .. },
            } => Ok(ExitCode::SUCCESS),
            Command::Retention { .. } => {
                let store = open_store(&loaded.config).await?;
                let summary = retention::run_once(&loaded.config, &store).await;
                store.close().await;
                let summary = summary?;
                for f in &summary.exported_files {
                    println!("exported {f}");
                }
                println!("prediction rows deleted: {}", summary.predictions_deleted);
                for (table, n) in &summary.audit_deleted {
                    println!("{table} rows deleted: {n}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Backup { to, force, .. } => {
                backup_cmd::backup_to(&loaded.config, &to, force).await
            }
            Command::Restore { from, force, .. } => {
                backup_cmd::restore_from(&loaded.config, &from, force).await
            }
            Command::User {
                command:
                    UserCommand::Create {
                        email,
                        roles,
                        name,
                        password_stdin,
                        ..
                    },
            } => user_create(&loaded.config, &email, roles, name, password_stdin).await,
            Command::Policy {
                command:
                    PolicyCommand::Replay {
                        policies,
                        since,
                        policy_type,
                        ..
                    },
            } => policy_cmd::replay(&loaded.config, &policies, &since, &policy_type).await,
            Command::Config { .. }
            | Command::Policy { .. }
            | Command::Openapi
            | Command::Model { .. }
            | Command::Backtest { .. }
            | Command::Replay { .. }
            | Command::Logs { .. }
            | Command::Approvals { .. }
            | Command::Demo { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "aegis stopped with an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Outside the runtime: the exporter's flush blocks.
    drop(runtime);
    telemetry.shutdown();
    code
}

/// Opens the database named by the configuration.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let options = StoreOptions {
        max_connections: config.database_max_connections,
        ..Default::default()
    };
    let store = Store::connect(&config.database_url, &options)
        .await
        .with_context(|| {
            format!(
                "opening the database (AEGIS_DATABASE_URL={})",
                aegis_store::redact_url(&config.database_url)
            )
        })?;
    // Validated with the configuration; an error here is a bug, not the user's input.
    Ok(match config.audit_keys().map_err(anyhow::Error::msg)? {
        Some(keys) => store.with_audit_keys(keys),
        None => store,
    })
}

/// `aegis audit verify`: walks every chain, prints one line per chain.
async fn audit_verify(config: &Config) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    let mut intact = true;
    for table in AuditTable::ALL {
        let report = store
            .verify_audit(table)
            .await
            .with_context(|| format!("reading {}", table.table_name()))?;
        match report.broken {
            None => println!(
                "{}: {} rows, chain intact{}",
                table.table_name(),
                report.rows_checked,
                match (store.audit_keys().is_some(), report.unkeyed_rows) {
                    (_, 0) => String::new(),
                    (true, n) => format!(
                        " ({n} rows from before audit_key verified by plain SHA-256; archive and prune them, then set audit_keyed_only)"
                    ),
                    (false, n) =>
                        format!(" ({n} rows by plain SHA-256: set audit_key to key the chain)"),
                }
            ),
            Some(broken) => {
                intact = false;
                println!(
                    "{}: BROKEN at row id {}: {} ({} rows before it verified)",
                    table.table_name(),
                    broken.id,
                    broken.reason,
                    report.rows_checked
                );
            }
        }
    }
    store.close().await;
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `aegis user create`: validates like signup, hashes at OWASP cost, stores the user.
async fn user_create(
    config: &Config,
    email: &str,
    roles: Vec<String>,
    name: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<ExitCode> {
    use aegis_store::UserStore;
    let email = match aegis_api::auth::normalise_email(email) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: --email: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(bad) = roles
        .iter()
        .find(|r| !aegis_store::ROLES.contains(&r.as_str()))
    {
        eprintln!(
            "error: --role: unknown role `{bad}`; roles are {}",
            aegis_store::ROLES.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password(format!("password for {email}: "))
            .context("reading the password")?
    };
    if let Err(e) = aegis_api::auth::check_password_rules(&password, &email) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let store = open_store(config).await?;
    let hasher = aegis_api::auth::PasswordHasher::owasp();
    let password_hash = tokio::task::spawn_blocking(move || hasher.hash(&password))
        .await?
        .map_err(anyhow::Error::msg)?;
    let result = store
        .create_user(
            &aegis_store::NewUser {
                email: email.clone(),
                name,
                password_hash,
                roles,
            },
            Some("cli"),
        )
        .await;
    store.close().await;
    match result {
        Ok(user) => {
            println!(
                "created {} ({}) with roles {}",
                user.email,
                user.id,
                user.roles.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(aegis_store::Error::Conflict(message)) => {
            eprintln!("error: {message}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The one async runtime every command runs on: multi-threaded, I/O and timers on; a
/// failure to start it is printed and exits 1.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Runs `fut` on [`runtime`]; errors print and exit 1.
fn in_runtime(fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
