//! The one typed configuration of `aegis`: a TOML file (`--config`) under `AEGIS_*`
//! environment variables, which win.
//!
//! Defaults live in [`Config::default`], the environment is read in [`env`], and
//! [`Config::validate`] checks every value at start-up with a message that names the key
//! the way the user set it (`AEGIS_LISTEN`, or `listen` in the file).
//!
//! Long because every setting is declared once here with its default, its check and its
//! documentation, which the configuration reference test reads.

mod env;
mod sections;
mod types;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use aegis_core::ExecutorMode;
use serde::{Deserialize, Serialize};

pub use types::{ListenAddr, LogFormat, Secret};

/// Where a key's value came from, for error messages (no entry means the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file at this path.
    File(PathBuf),
    /// An `AEGIS_*` environment variable.
    Env,
}

/// A configuration value that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file `{path}`: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is invalid.
    #[error("invalid value for {key}: {message}")]
    Invalid {
        /// The key as the user wrote it: `AEGIS_LISTEN`, or `listen` in FILE.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// Every setting of an `aegis` process. Each field is also an environment variable: the
/// field name in upper case with an `AEGIS_` prefix (`listen` → `AEGIS_LISTEN`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port of the one HTTP listener.
    pub listen: ListenAddr,
    /// `sqlite://PATH` (embedded, the default) or `postgres://USER@HOST:PORT/DB`.
    pub database_url: String,
    /// Most database connections in the pool.
    pub database_max_connections: u32,
    /// HMAC key for JWT access tokens (at least 32 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// Former JWT secrets that still verify (not sign) tokens, so a key rotates without
    /// logging everyone out (comma-separated in the environment).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_previous_secrets: Vec<Secret>,
    /// The key of the keyed audit chain, `ID:SECRET` (a bare secret is key `k1`; at least
    /// 32 bytes): new audit rows and archive records are HMAC-signed with it, so rewriting
    /// them needs the key, which never enters the database. `aegis audit verify` needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_key: Option<Secret>,
    /// Former audit keys (`ID:SECRET`, comma-separated in the environment) that still
    /// verify the rows they signed: rotate by putting the new key in `audit_key` and the
    /// old one here for as long as its rows are kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit_previous_keys: Vec<Secret>,
    /// Every audit row must be keyed (chains keyed from their first row, or once the rows
    /// written before `audit_key` are archived and pruned): an unkeyed row anywhere is then
    /// a rewrite, even one of the whole chain.
    pub audit_keyed_only: bool,
    /// Where policy decisions the database cannot take before the shutdown deadline are
    /// spooled, and read back from at the next start (default: `audit-spool` beside the
    /// SQLite database, or in the working folder with PostgreSQL). Put it on a persistent
    /// volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_spool_dir: Option<PathBuf>,
    /// `iss` of issued tokens, required on presented ones.
    pub jwt_issuer: String,
    /// `aud` of issued tokens, required on presented ones.
    pub jwt_audience: String,
    /// Requests per minute per caller (user, service token or client IP) and route.
    pub rate_limit_per_minute: u32,
    /// Login attempts per minute per account.
    pub login_limit_per_account_per_minute: u32,
    /// Login attempts per minute per client IP.
    pub login_limit_per_ip_per_minute: u32,
    /// Origins allowed by CORS (`https://ui.example.com`; `*` for any); none when empty.
    pub cors_allowed_origins: Vec<String>,
    /// Redis for shared rate limits across replicas (`redis://HOST:PORT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Prometheus to pull from when it cannot push (`http://HOST:9090`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// PromQL queries polled from `prometheus_url` (pull mode; comma-separated in the
    /// environment, so a query with commas belongs in the file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prometheus_queries: Vec<String>,
    /// LogQL queries polled from `loki_url` (pull mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loki_queries: Vec<String>,
    /// Seconds between pull-mode polls (and the Prometheus query step).
    pub pull_interval_secs: u64,
    /// Loki to pull logs from and push audit rows to (`http://HOST:3100`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loki_url: Option<String>,
    /// Stream-detector score at or above which a point is anomalous, in (0, 1): what the
    /// live loop acts on (`aegis backtest --threshold` is the same scale; 0.45 is a tail
    /// of about 3e-5 against the series' own score history).
    pub anomaly_threshold: f64,
    /// Where models (and archives) are kept: a folder (also `file:///abs/path`) or an
    /// S3-compatible bucket (`s3://bucket/prefix`, credentials and endpoint from the usual
    /// `AWS_*` variables). Unset: the folder `objects` beside an SQLite database; with
    /// PostgreSQL none (the `models` table, shared by replicas, is enough).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store_url: Option<String>,
    /// Days of prediction history kept (0 keeps everything).
    pub retention_predictions_days: u32,
    /// Days of audit rows (decisions and actions) kept in the database (0 keeps
    /// everything). Older rows are deleted only once a verified archive holds them.
    pub retention_audit_days: u32,
    /// Scheduled audit export: every hour, rows created before today (UTC) that no verified
    /// archive holds yet go to this folder or `s3://` URL as Parquet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_export_url: Option<String>,
    /// Kubeconfig for `executor_mode = "kubernetes"`; in-cluster service account when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<PathBuf>,
    /// Namespaces the executor may act in (exact names; comma-separated in the environment).
    pub allowed_namespaces: Vec<String>,
    /// Whether `/executor/execute` requires an `X-Aegis-Signature`.
    pub require_action_signature: bool,
    /// Accept unsigned executor requests in `kubernetes` mode (with
    /// `require_action_signature = false`): anonymous callers can then restart, scale and
    /// roll back workloads in the allowed namespaces, so it must be said explicitly, and a
    /// warning is logged at every start.
    pub allow_unsigned_actions: bool,
    /// HMAC key for signed executor requests (at least 32 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_secret: Option<Secret>,
    /// `dry-run` (record what would be done) or `kubernetes` (do it).
    pub executor_mode: ExecutorMode,
    /// Fewest replicas `scale_deployment` may leave.
    pub executor_min_replicas: i32,
    /// Most replicas `scale_deployment` may ask for.
    pub executor_max_replicas: i32,
    /// Largest replica change in one action.
    pub executor_max_scale_step: i32,
    /// Seconds before the same target may be acted on again.
    pub executor_cooldown_secs: u64,
    /// Most actions per namespace within `executor_blast_window_secs`.
    pub executor_blast_radius: u32,
    /// The blast-radius window, in seconds.
    pub executor_blast_window_secs: u64,
    /// How long an action held for approval (`require_approval` on the deciding policy)
    /// waits; past it, it counts as rejected.
    pub approval_timeout_secs: u64,
    /// Four-eyes approvals: the caller whose action was held for approval cannot approve it.
    pub approval_four_eyes: bool,
    /// Actions per minute per action and namespace.
    pub executor_rate_limit_per_minute: u32,
    /// Metric names (`__name__`) the engine turns into features, in order; the first five
    /// are read as CPU, memory, p99 latency (ms), error rate and restarts by the failure
    /// classifier.
    pub engine_metrics: Vec<String>,
    /// Milliseconds between engine ticks.
    pub engine_tick_ms: u64,
    /// Slot width of the engine's short windows, in seconds.
    pub engine_resolution_secs: u64,
    /// Span of the short windows, in seconds.
    pub engine_window_secs: u64,
    /// Span of the baselines (z-scores), in seconds.
    pub engine_baseline_secs: u64,
    /// Seconds of data a workload needs before it is scored.
    pub engine_warmup_secs: u64,
    /// Points each workload metric is watched before it is scored, and rows a metric's
    /// pooled forest needs before it is first fitted (the stream detector's warm-up).
    pub engine_warmup_rows: usize,
    /// Most workloads the engine holds (samples of further ones are counted and dropped).
    pub engine_max_entities: usize,
    /// Ticks in a row at or above the threshold that open an incident (an alert's `for:`).
    pub engine_open_ticks: u32,
    /// Calm ticks that close an incident (a flapping signal acts once).
    pub engine_calm_ticks: u32,
    /// Replicas a scale-up adds.
    pub engine_scale_step: i32,
    /// Seconds after an action when its target's signal is read again (effective or not).
    pub engine_verify_after_secs: u64,
    /// Ineffective actions in a row on one target that open its circuit breaker.
    pub engine_breaker_threshold: u32,
    /// Kafka bootstrap servers (`host:port`, comma-separated in the environment).
    pub kafka_brokers: Vec<String>,
    /// Kafka topics to consume (comma-separated in the environment).
    pub kafka_topics: Vec<String>,
    /// Kafka consumer group.
    pub kafka_group: String,
    /// Accept ingest (remote write, Loki push) without any token: only for a trusted network.
    pub ingest_open: bool,
    /// Anyone who can reach the API may create a `user` account (`POST /api/v1/auth/signup`);
    /// `false` leaves account creation to admins.
    pub signup_enabled: bool,
    /// A static bearer token accepted on the ingest endpoints besides service tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_token: Option<Secret>,
    /// A folder of YAML/JSON policy files, reloaded when they change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<PathBuf>,
    /// A candidate policy folder evaluated in shadow next to the live set on every
    /// decision: its answers are recorded (`GET /api/v1/policy/shadow`), never acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_policy_dir: Option<PathBuf>,
    /// E-mail of the admin created on first start (with `admin_password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_email: Option<String>,
    /// Password of the admin created on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<Secret>,
    /// `text` (readable) or `json` (one object per line) logs.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `info,aegis_store=debug`.
    pub log_level: String,
    /// OpenTelemetry collector to send traces to over OTLP/HTTP (`http://HOST:4318`):
    /// a span per request and per engine tick. Unset: no traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Oldest sample or log line ingest takes, in seconds before now (Loki's
    /// `reject_old_samples_max_age`); older ones are refused and counted `too_old`.
    pub max_sample_age_secs: u64,
    /// Newest sample or log line ingest takes, in seconds after now (Loki's
    /// `creation_grace_period`); newer ones are refused and counted `too_new`.
    pub future_grace_secs: u64,
    /// Longest log line ingest takes, in bytes (Loki's `max_line_size`); longer ones are
    /// refused and counted `too_long`.
    pub max_log_line_bytes: usize,
    /// Series and log streams nothing arrived for in this many seconds are forgotten (their
    /// labels, caches and per-series state): a burst of cardinality is not kept for ever.
    pub series_idle_secs: u64,
    /// Memory one SQL query (`POST /api/v1/query`) may take, in MiB: sorts, joins and
    /// aggregates that need more are refused (400), nothing spills to disk.
    pub query_memory_mib: usize,
    /// Memory all SQL queries running at once may take, in MiB (each gets at most this
    /// over the four that may run at once).
    pub query_memory_total_mib: usize,
    /// How long shutdown waits for in-flight requests, in seconds.
    pub shutdown_timeout_secs: u64,
    /// How long a client may take to send a request's headers (or to start the next request
    /// on a kept-alive connection), in seconds; then the connection is closed.
    pub header_read_timeout_secs: u64,
    /// How long a client may take to send a request body once its headers are in, in
    /// seconds; then the answer is 408 and the connection is closed.
    pub body_read_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenAddr(SocketAddr::from((Ipv4Addr::LOCALHOST, 3000))),
            database_url: "sqlite://./aegis-data/aegis.db".to_owned(),
            database_max_connections: 10,
            jwt_secret: None,
            jwt_previous_secrets: Vec::new(),
            audit_key: None,
            audit_previous_keys: Vec::new(),
            audit_keyed_only: false,
            audit_spool_dir: None,
            jwt_issuer: "aegis".to_owned(),
            jwt_audience: "aegis-api".to_owned(),
            rate_limit_per_minute: 600,
            login_limit_per_account_per_minute: 10,
            login_limit_per_ip_per_minute: 60,
            cors_allowed_origins: Vec::new(),
            redis_url: None,
            prometheus_url: None,
            loki_url: None,
            prometheus_queries: Vec::new(),
            loki_queries: Vec::new(),
            pull_interval_secs: 15,
            anomaly_threshold: aegis_engine::StreamConfig::default().threshold,
            object_store_url: None,
            retention_predictions_days: 30,
            retention_audit_days: 0,
            audit_export_url: None,
            kubeconfig_path: None,
            allowed_namespaces: vec!["default".to_owned(), "production".to_owned()],
            require_action_signature: true,
            allow_unsigned_actions: false,
            action_secret: None,
            executor_mode: ExecutorMode::DryRun,
            executor_min_replicas: 1,
            executor_max_replicas: 50,
            executor_max_scale_step: 10,
            executor_cooldown_secs: 300,
            executor_blast_radius: 5,
            executor_blast_window_secs: 600,
            approval_timeout_secs: 900,
            approval_four_eyes: true,
            executor_rate_limit_per_minute: 10,
            engine_metrics: aegis_engine::DEFAULT_METRICS
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            engine_tick_ms: 1_000,
            engine_resolution_secs: 15,
            engine_window_secs: 300,
            engine_baseline_secs: 3_600,
            engine_warmup_secs: 600,
            engine_warmup_rows: aegis_engine::StreamConfig::default().warmup_points,
            engine_max_entities: 100_000,
            engine_open_ticks: 1,
            engine_calm_ticks: 30,
            engine_scale_step: 1,
            engine_verify_after_secs: 300,
            engine_breaker_threshold: 3,
            kafka_brokers: Vec::new(),
            kafka_topics: Vec::new(),
            kafka_group: "aegis".to_owned(),
            ingest_open: false,
            signup_enabled: true,
            ingest_token: None,
            policy_dir: None,
            shadow_policy_dir: None,
            admin_email: None,
            admin_password: None,
            log_format: LogFormat::Text,
            log_level: "info,sqlx=warn".to_owned(),
            otlp_endpoint: None,
            max_body_bytes: 4 << 20,
            max_sample_age_secs: 7 * 24 * 3600,
            future_grace_secs: 600,
            max_log_line_bytes: 256 * 1024,
            series_idle_secs: 3_600,
            query_memory_mib: 256,
            query_memory_total_mib: 1024,
            shutdown_timeout_secs: 25,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
        }
    }
}

/// The configuration together with where each key came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Keys set by the file or the environment (absent means default).
    pub origins: BTreeMap<&'static str, Origin>,
    /// `AEGIS_*` variables that name no setting (probably typos), for a warning.
    pub unknown_env: Vec<String>,
}

impl Loaded {
    /// How to name `key` to the user: the variable or the file key that set it.
    pub fn key_name(&self, key: &str) -> String {
        match self.origins.get(key) {
            Some(Origin::Env) => format!("`{}`", env::var_name(key)),
            Some(Origin::File(path)) => format!("`{key}` in {}", path.display()),
            _ => format!("`{key}` ({})", env::var_name(key)),
        }
    }
}

impl Config {
    /// The audit keys (`audit_key` first, then `audit_previous_keys`), when configured.
    pub fn audit_keys(&self) -> Result<Option<aegis_store::AuditKeys>, aegis_store::Error> {
        let Some(signing) = &self.audit_key else {
            return Ok(None);
        };
        let mut keys = vec![aegis_store::AuditKey::parse(signing.expose())?];
        for k in &self.audit_previous_keys {
            keys.push(aegis_store::AuditKey::parse(k.expose())?);
        }
        aegis_store::AuditKeys::new(keys, self.audit_keyed_only).map(Some)
    }

    /// Reads the file (when given), applies the process environment and validates.
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let mut origins = BTreeMap::new();
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let file_error = |message: String| ConfigError::File {
                    path: path.to_owned(),
                    message: message.trim_end().to_owned(),
                };
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
                let sectioned = table
                    .keys()
                    .any(|k| sections::SECTIONS.contains(&k.as_str()));
                // A flat file is read from its text, so an error names its line; a file in
                // sections is read once its keys are flat again.
                let (config, table): (Config, toml::Table) = if sectioned {
                    let flat = sections::flatten(table).map_err(file_error)?;
                    let config = toml::Value::Table(flat.clone())
                        .try_into()
                        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
                    (config, flat)
                } else {
                    let config = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
                    (config, table)
                };
                for key in env::KEYS {
                    if table.contains_key(*key) {
                        origins.insert(*key, Origin::File(path.to_owned()));
                    }
                }
                config
            }
            None => Config::default(),
        };
        let unknown_env = env::apply(&mut config, vars, &mut origins)?;
        let loaded = Loaded {
            config,
            origins,
            unknown_env,
        };
        loaded.config.validate(&loaded)?;
        Ok(loaded)
    }

    /// Checks every value; the error names the key as the user set it.
    pub fn validate(&self, loaded: &Loaded) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: loaded.key_name(key),
            message,
        };

        let db = self.database_url.as_str();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                format!(
                    "`{}` must start with `sqlite://` or `postgres://`",
                    aegis_store::redact_url(db)
                ),
            ));
        }
        if self.database_max_connections == 0 {
            return Err(invalid(
                "database_max_connections",
                "must be at least 1".into(),
            ));
        }
        check_url(&self.redis_url, &["redis", "rediss"]).map_err(|m| invalid("redis_url", m))?;
        check_url(&self.prometheus_url, &["http", "https"])
            .map_err(|m| invalid("prometheus_url", m))?;
        check_url(&self.loki_url, &["http", "https"]).map_err(|m| invalid("loki_url", m))?;
        // Plain HTTP only: the exporter is built without TLS; the collector runs beside
        // Aegis (a sidecar, a node agent or the compose stack's).
        check_url(&self.otlp_endpoint, &["http"]).map_err(|m| invalid("otlp_endpoint", m))?;
        if let Some(url) = &self.object_store_url
            && (url.is_empty()
                || (url.contains("://")
                    && !["file://", "s3://", "memory://"]
                        .iter()
                        .any(|p| url.starts_with(p))))
        {
            return Err(invalid(
                "object_store_url",
                format!("`{url}` is neither a folder nor a file://, s3:// or memory:// url"),
            ));
        }
        if !(self.anomaly_threshold > 0.0 && self.anomaly_threshold < 1.0) {
            return Err(invalid(
                "anomaly_threshold",
                format!(
                    "`{}` must be between 0 and 1 (exclusive)",
                    self.anomaly_threshold
                ),
            ));
        }
        if self.engine_metrics.is_empty() {
            return Err(invalid(
                "engine_metrics",
                "must name at least one metric".into(),
            ));
        }
        if !(10..=60_000).contains(&self.engine_tick_ms) {
            return Err(invalid(
                "engine_tick_ms",
                format!("`{}` must be between 10 and 60000", self.engine_tick_ms),
            ));
        }
        if self.engine_resolution_secs == 0
            || self.engine_window_secs < self.engine_resolution_secs
            || self.engine_baseline_secs < self.engine_window_secs
        {
            return Err(invalid(
                "engine_window_secs",
                "need 0 < engine_resolution_secs <= engine_window_secs <= engine_baseline_secs"
                    .into(),
            ));
        }
        if self.engine_window_secs / self.engine_resolution_secs > 10_000 {
            return Err(invalid(
                "engine_window_secs",
                "more than 10,000 slots per window: raise engine_resolution_secs".into(),
            ));
        }
        if !(1..=100).contains(&self.engine_open_ticks) {
            return Err(invalid("engine_open_ticks", "must be 1 to 100".into()));
        }
        if self.engine_max_entities == 0 {
            return Err(invalid("engine_max_entities", "must be at least 1".into()));
        }
        if !(1..=86_400).contains(&self.engine_verify_after_secs) {
            return Err(invalid(
                "engine_verify_after_secs",
                "must be 1 to 86400".into(),
            ));
        }
        if !(1..=100).contains(&self.engine_breaker_threshold) {
            return Err(invalid(
                "engine_breaker_threshold",
                "must be 1 to 100".into(),
            ));
        }
        if !(1..=10).contains(&self.engine_scale_step) {
            return Err(invalid("engine_scale_step", "must be 1 to 10".into()));
        }
        if self.allowed_namespaces.is_empty() {
            return Err(invalid(
                "allowed_namespaces",
                "must name at least one namespace".into(),
            ));
        }
        for ns in &self.allowed_namespaces {
            if !is_dns_label(ns) {
                return Err(invalid(
                    "allowed_namespaces",
                    format!(
                        "`{ns}` is not a Kubernetes namespace name (lowercase letters, digits and `-`, at most 63)"
                    ),
                ));
            }
        }
        for (key, secret) in [
            ("jwt_secret", &self.jwt_secret),
            ("action_secret", &self.action_secret),
        ] {
            if secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
                return Err(invalid(key, "must be at least 32 bytes long".into()));
            }
        }
        if self
            .jwt_previous_secrets
            .iter()
            .any(|s| s.expose().len() < 32)
        {
            return Err(invalid(
                "jwt_previous_secrets",
                "every secret must be at least 32 bytes long".into(),
            ));
        }
        if let Err(e) = self.audit_keys() {
            return Err(invalid("audit_key", e.to_string()));
        }
        if self.audit_key.is_none()
            && (!self.audit_previous_keys.is_empty() || self.audit_keyed_only)
        {
            return Err(invalid(
                "audit_key",
                "audit_previous_keys and audit_keyed_only need audit_key (the key that signs)"
                    .into(),
            ));
        }
        if !self.jwt_previous_secrets.is_empty() && self.jwt_secret.is_none() {
            return Err(invalid(
                "jwt_previous_secrets",
                "needs jwt_secret (the key that signs)".into(),
            ));
        }
        for (key, value) in [
            ("jwt_issuer", &self.jwt_issuer),
            ("jwt_audience", &self.jwt_audience),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        for (key, value) in [
            ("rate_limit_per_minute", self.rate_limit_per_minute),
            (
                "login_limit_per_account_per_minute",
                self.login_limit_per_account_per_minute,
            ),
            (
                "login_limit_per_ip_per_minute",
                self.login_limit_per_ip_per_minute,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        for origin in &self.cors_allowed_origins {
            if origin != "*" && url::Url::parse(origin).is_err() {
                return Err(invalid(
                    "cors_allowed_origins",
                    format!("`{origin}` is not an origin such as `https://ui.example.com`"),
                ));
            }
        }
        if self.executor_mode == ExecutorMode::Kubernetes
            && self.require_action_signature
            && self.action_secret.is_none()
        {
            return Err(invalid(
                "action_secret",
                "must be set when executor_mode is `kubernetes` and require_action_signature is true".into(),
            ));
        }
        if self.executor_mode == ExecutorMode::Kubernetes
            && !self.require_action_signature
            && !self.allow_unsigned_actions
        {
            return Err(invalid(
                "allow_unsigned_actions",
                "require_action_signature = false with executor_mode `kubernetes` lets anonymous callers restart, scale and roll back workloads; set allow_unsigned_actions = true to accept that, or keep signatures required".into(),
            ));
        }
        if self.executor_min_replicas < 0 || self.executor_max_replicas < self.executor_min_replicas
        {
            return Err(invalid(
                "executor_max_replicas",
                format!(
                    "must be at least executor_min_replicas ({}), which must not be negative",
                    self.executor_min_replicas
                ),
            ));
        }
        if self.executor_max_scale_step < 1 {
            return Err(invalid(
                "executor_max_scale_step",
                "must be at least 1".into(),
            ));
        }
        if self.executor_blast_radius < 1 || self.executor_rate_limit_per_minute < 1 {
            return Err(invalid(
                if self.executor_blast_radius < 1 {
                    "executor_blast_radius"
                } else {
                    "executor_rate_limit_per_minute"
                },
                "must be at least 1".into(),
            ));
        }
        if !self.prometheus_queries.is_empty() && self.prometheus_url.is_none() {
            return Err(invalid("prometheus_queries", "need prometheus_url".into()));
        }
        if !self.loki_queries.is_empty() && self.loki_url.is_none() {
            return Err(invalid("loki_queries", "need loki_url".into()));
        }
        if self.pull_interval_secs == 0 {
            return Err(invalid("pull_interval_secs", "must be at least 1".into()));
        }
        if !self.kafka_topics.is_empty() && self.kafka_brokers.is_empty() {
            return Err(invalid(
                "kafka_brokers",
                "must be set when kafka_topics is set".into(),
            ));
        }
        if self.kafka_group.trim().is_empty() {
            return Err(invalid("kafka_group", "must not be empty".into()));
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(email), Some(_)) if !email.contains('@') => {
                return Err(invalid(
                    "admin_email",
                    format!("`{email}` is not an e-mail address"),
                ));
            }
            (Some(_), None) => {
                return Err(invalid(
                    "admin_password",
                    "must be set together with admin_email".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "admin_email",
                    "must be set together with admin_password".into(),
                ));
            }
            _ => {}
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid("log_level", format!("`{}`: {e}", self.log_level)));
        }
        if self.max_sample_age_secs == 0 {
            return Err(invalid("max_sample_age_secs", "must be at least 1".into()));
        }
        if self.query_memory_mib < 4 || self.query_memory_total_mib < 4 {
            return Err(invalid(
                "query_memory_mib",
                "query_memory_mib and query_memory_total_mib must be at least 4".into(),
            ));
        }
        if self.series_idle_secs < 60 {
            return Err(invalid("series_idle_secs", "must be at least 60".into()));
        }
        if self.max_log_line_bytes < 1024 {
            return Err(invalid(
                "max_log_line_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024".into()));
        }
        for (key, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(invalid(key, "must be 1 to 3600".into()));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets and URL passwords redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = aegis_store::redact_url(&shown.database_url);
        shown.redis_url = shown.redis_url.as_deref().map(aegis_store::redact_url);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

fn check_url(value: &Option<String>, schemes: &[&str]) -> Result<(), String> {
    let Some(value) = value else { return Ok(()) };
    let shown = aegis_store::redact_url(value);
    let parsed = url::Url::parse(value).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!(
            "`{shown}` must use {}",
            schemes
                .iter()
                .map(|s| format!("`{s}://`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(())
}

/// An RFC 1123 label, which is what Kubernetes accepts as a namespace name.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests;
